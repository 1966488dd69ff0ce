"""`cnnlab train`, `evaluate` and `predict`: one run folder at a time."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from cnnlab.cli.info import ARCH_HELP
from cnnlab.cli.parsing import (
    Command,
    add_log_flags,
    add_train_flags,
    fixed,
    flag_of,
    logger_from_flags,
    train_changes,
)
from cnnlab.data.standardize import DESCRIPTION as STANDARDIZED
from cnnlab.data.standardize import KEY as STANDARDIZE_KEY
from cnnlab.errors import CnnlabError
from cnnlab.training.config import RESUMABLE, TrainConfig
from cnnlab.util.terminal import shown


def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("arch", metavar="NAME|FILE", nargs="?", help=ARCH_HELP)
    add_train_flags(p)
    g = p.add_argument_group("run folder")
    g.add_argument("--out", type=Path, help="run folder (default runs/<name>-<time>)")
    g.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out folder"
    )
    g.add_argument(
        "--resume",
        type=Path,
        metavar="RUN",
        help="continue an interrupted run from its checkpoint",
    )
    add_log_flags(p)


# Flags of `train` that are not TrainConfig fields: none may come with --resume.
_RUN_FLAGS = ("arch", "data_dir", "out", "overwrite")


def _check_resume_flags(args: argparse.Namespace) -> None:
    """--resume keeps the run's settings: refuse every flag but RESUMABLE's."""
    fixed_names = [
        f.name for f in dataclasses.fields(TrainConfig) if f.name not in RESUMABLE
    ]
    given = [
        name
        for name in (*_RUN_FLAGS, *fixed_names)
        if (value := getattr(args, name, None)) is not None and value is not False
    ]
    if given:
        names = ", ".join("NAME|FILE" if n == "arch" else flag_of(n) for n in given)
        free = ", ".join("--" + name for name in RESUMABLE)
        raise CnnlabError(
            f"--resume continues a run with its own settings; drop {names} "
            f"(only {free} may change)."
        )


def _train(args: argparse.Namespace) -> int:
    from cnnlab import api
    from cnnlab.training.progress import RichReporter
    from cnnlab.training.runs import default_run_path

    log = logger_from_flags(args)
    if args.resume is not None:
        _check_resume_flags(args)
        out = args.resume

        def run(reporter: RichReporter) -> api.RunResult:
            return api.resume(
                args.resume,
                args.epochs,
                reporter,
                device=args.device,
                threads=args.threads,
                log=log,
            )
    else:
        if args.arch is None:
            raise CnnlabError(
                "give an architecture (a preset such as conv5-medium, or a YAML file), "
                "or --resume RUN. See 'cnnlab presets'."
            )
        arch = api.load(args.arch)
        config = api.train_config(args.arch, **train_changes(args))
        recipe = api.recipe_changes(args.arch, config)
        if recipe:
            settings = ", ".join(f"{k} {v}" for k, v in recipe.items())
            print(f"Recipe {args.arch}: {settings}")
        out = args.out or default_run_path(arch.name)

        def run(reporter: RichReporter) -> api.RunResult:
            return api.train(arch, config, out, args.overwrite, reporter, log=log)

    args.training_into = out  # what an interrupt from here on names
    with RichReporter(header=f"Run folder: {out}") as reporter:
        result = run(reporter)
    print(f"Test loss: {result.test_loss:.4f}")
    print(f"Test accuracy: {result.test_acc:.4f} ({100 * result.test_acc:.2f}%)")
    if (used := result.meta["config"].get("precision", "fp32")) != "fp32":
        print(f"Precision: {used} (mixed: float32 weights)")
    if result.meta.get(STANDARDIZE_KEY) is not None:
        print(f"Inputs: {STANDARDIZED}")
    print(f"Run folder: {result.path}")
    return 0


def _after_train(args: argparse.Namespace) -> str:
    out = getattr(args, "training_into", None)
    if out is None:  # stopped before training started
        return "nothing was written."
    return (
        f"the last finished epoch is saved in {out}. "
        f"Resume with: cnnlab train --resume {out}"
    )


TRAIN = Command(
    "train",
    help="train a network into a run folder",
    description="Train a network, checkpointing after every epoch, and score it on "
    "the test set. The run folder holds the spec, config, history, curves and "
    "weights; Ctrl-C stops at the last finished epoch, --resume continues.",
    arguments=_train_arguments,
    run=_train,
    after_interrupt=_after_train,
)


def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, metavar="RUN", help="a run folder")
    p.add_argument(
        "--data", help="score on another data set (mnist, fashion-mnist, folder)"
    )


def _evaluate(args: argparse.Namespace) -> int:
    from cnnlab import api

    scores = api.evaluate_run(args.run, args.data)
    print(f"Data: {scores['data']} ({scores['test_samples']:,} test images)")
    print(f"Test loss: {scores['test_loss']:.4f}")
    print(f"Test accuracy: {scores['test_acc']:.4f} ({100 * scores['test_acc']:.2f}%)")
    return 0


EVALUATE = Command(
    "evaluate",
    help="re-score a run's saved weights on the test set",
    arguments=_evaluate_arguments,
    run=_evaluate,
    after_interrupt=fixed("evaluate writes nothing; the run folder is unchanged."),
)


def _predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, metavar="RUN", help="a run folder")
    p.add_argument(
        "images", nargs="+", metavar="IMAGE", help="PNG/JPEG files, any size"
    )


def _predict(args: argparse.Namespace) -> int:
    from cnnlab import api

    for p in api.predict(args.run, args.images):
        note = f" [{p.converted}]" if p.converted else ""
        line = f"{p.path}: {p.name} ({100 * p.probability:.1f}%){note}"
        print(shown(line, one_line=True))
    return 0


PREDICT = Command(
    "predict",
    help="classify image files with a trained run",
    arguments=_predict_arguments,
    run=_predict,
    after_interrupt=fixed("predict writes nothing; the run folder is unchanged."),
)

COMMANDS = (TRAIN, EVALUATE, PREDICT)
