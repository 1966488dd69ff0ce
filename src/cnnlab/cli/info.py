"""`cnnlab presets` and `cnnlab summary`: what the built-in networks are."""

from __future__ import annotations

import argparse

from cnnlab.cli.parsing import Command, positive_int
from cnnlab.util.terminal import shown

# The naming rule of nn.presets.names_file, for `train` and `summary`.
ARCH_HELP = (
    "a preset name or number (cnnlab presets), or an architecture file. Text with "
    "a / or a .yaml, .yml or .json suffix is a file; a bare word is the preset of "
    "that name (an error if a file of that name is also in the current folder: "
    "write ./NAME for the file); any other bare word is the file of that name"
)


def _presets(args: argparse.Namespace) -> int:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from cnnlab import api
    from cnnlab.nn.summary import format_flops
    from cnnlab.util.terminal import print_table

    facts = api.presets()
    nets = Table(title="Built-in architectures (the notebook's nine networks)")
    for col in ("#", "name", "description", "params", "FLOPs/sample"):
        nets.add_column(col, justify="right" if col in ("#", "params") else "left")
    # Recipes: an architecture with its own training settings, borderless so the
    # table reads apart from the notebook's nine above it.
    recipes = Table(
        title="Recipes (architecture + training settings: cnnlab train NAME)",
        box=box.SIMPLE,
    )
    for col in ("name", "description", "params", "FLOPs/sample", "training"):
        recipes.add_column(col)
    for f in facts:
        cells = [f.name, f.description, f"{f.params:,}", format_flops(f.flops)]
        if f.number is not None:
            nets.add_row(str(f.number), *cells)
        else:
            training = ", ".join(f"{k} {v}" for k, v in f.training.items())
            recipes.add_row(*cells, training)
    console = Console()
    print_table(console, nets)
    if recipes.rows:
        print_table(console, recipes)
    return 0


PRESETS = Command(
    "presets",
    help="list the built-in architectures",
    arguments=lambda p: None,
    run=_presets,
)


def _summary_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("arch", metavar="NAME|FILE", help=ARCH_HELP)
    p.add_argument(
        "--classes",
        type=positive_int,
        help="check that the output has this many classes",
    )


def _summary(args: argparse.Namespace) -> int:
    from cnnlab import api

    print(shown(api.summary(args.arch, args.classes)))  # names, descriptions: a file's
    return 0


SUMMARY = Command(
    "summary",
    help="print a Keras-style summary with FLOPs",
    arguments=_summary_arguments,
    run=_summary,
)

COMMANDS = (PRESETS, SUMMARY)
