"""The `cnnlab` command: parse flags, call the library, print. No logic of its own."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.markup import escape

from cnnlab import api
from cnnlab.data.augment import AUGMENTS, SHIFT_LIMIT, TEST_AUGMENTS
from cnnlab.data.folders import COLORS
from cnnlab.errors import CnnlabError
from cnnlab.nn.presets import load_preset, preset_names, recipe_names
from cnnlab.nn.shapes import infer
from cnnlab.nn.summary import format_flops
from cnnlab.reporting.report import print_summary
from cnnlab.studies.runner import EXECUTORS
from cnnlab.training.config import (
    DEVICES,
    OPTIMIZER_DEFAULTS,
    RESUMABLE,
    VALIDATIONS,
    TrainConfig,
    recipe_config,
)
from cnnlab.training.progress import RichReporter, StudyProgress
from cnnlab.training.runs import default_run_path
from cnnlab.training.schedule import SCHEDULES
from cnnlab.training.status import Status
from cnnlab.util.interrupts import (
    EXIT_SIGINT,
    EXIT_SIGTERM,
    exit_code,
    signal_name,
    signals_as_interrupts,
)
from cnnlab.util.terminal import PipeSafe, print_table, shown

EXIT_USAGE = 2  # bad input of any kind: flags, files, data
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT (SIGTERM: 143)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and close-match hints for unknown flags."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message}{self._hint(message)}. "
                  f"See '{self.prog} --help'.\n")  # fmt: skip

    def _hint(self, message: str) -> str:
        """' (did you mean X?)' for a mistyped flag or command, else ''."""
        match = re.search(r"unrecognized arguments: (\S+)", message)
        if match:
            word = match.group(1).split("=")[0]
            names = [s for a in self._actions for s in a.option_strings]
        else:
            match = re.search(r"argument (\S+): invalid choice: '([^']*)'", message)
            if match is None:
                return ""
            arg, word = match.groups()
            names = [
                str(c)
                for a in self._actions
                if arg in (*a.option_strings, a.metavar)
                for c in (a.choices or ())
            ]
        close = difflib.get_close_matches(word, names, n=1)
        return f" (did you mean {close[0]}?)" if close else ""


def _number(
    kind: type, accept: Callable[[Any], bool], expected: str
) -> Callable[[str], Any]:
    """An argparse type: `kind(text)` that `accept` approves, else a clear error."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {expected}, got '{text}'"
            ) from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return parse


_positive_int = _number(int, lambda v: v > 0, "a positive integer")
_non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _number(float, lambda v: 0 < v < float("inf"), "a positive number")


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 0,1,2, got '{text}'"
        ) from None
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"expected integers >= 0, got '{text}'")
    return seeds


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    g = p.add_argument_group("training (defaults: the notebook's protocol)")
    g.add_argument(
        "--epochs", type=_positive_int, help=f"epochs to train (default {d.epochs})"
    )
    g.add_argument(
        "--batch-size",
        type=_positive_int,
        help=f"samples per step (default {d.batch_size})",
    )
    g.add_argument(
        "--optimizer",
        choices=tuple(OPTIMIZER_DEFAULTS),
        help=f"optimizer with Keras's defaults (default {d.optimizer})",
    )
    g.add_argument(
        "--lr",
        type=_positive_float,
        help="learning rate (default: the optimizer's Keras default)",
    )
    g.add_argument(
        "--seed",
        type=_non_negative_int,
        help=f"weights, data order, dropout (default {d.seed})",
    )
    g.add_argument(
        "--schedule",
        choices=SCHEDULES,
        help=f"learning rate per step: constant, or onecycle (warm-up to --lr, then "
        f"anneal) (default {d.schedule})",
    )
    g.add_argument(
        "--augment",
        choices=AUGMENTS,
        help=f"shift: random translations of up to --max-shift pixels; flip: "
        f"mirror half the images left-right; crop: pad 4 and crop back at random; "
        f"crop+flip (default {d.augment})",
    )
    g.add_argument(
        "--max-shift",
        type=_positive_int,
        help=f"largest shift in pixels for --augment shift, 1 to {SHIFT_LIMIT} "
        f"(default {d.max_shift}; the fast recipe uses 1)",
    )
    g.add_argument(
        "--label-smoothing",
        type=float,
        help=f"from 0 up to 1 (default {d.label_smoothing:g})",
    )
    g.add_argument(
        "--test-augment",
        choices=TEST_AUGMENTS,
        help="shift: score every image (validation, test, predict) as the mean "
        "class probabilities of itself and its four 1-pixel moves; 5x the "
        f"scoring work (default {d.test_augment}; the fast recipe uses shift)",
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        help="mnist (embedded, default), fashion-mnist (Debian's "
        "dataset-fashion-mnist), a folder of IDX files, CIFAR binary files or "
        "class folders of images, or an .npz archive (docs/data.md)",
    )
    g.add_argument(
        "--data-dir", help="a folder holding the four IDX files (same as --data DIR)"
    )
    g.add_argument(
        "--validation",
        choices=VALIDATIONS,
        help="holdout: a seeded 10,000-image hold-out of the training set (default); "
        "test: validate on the test set each epoch, as the notebook does; none",
    )
    g.add_argument(
        "--val-size", type=_positive_int, help=f"hold-out size (default {d.val_size:,})"
    )
    g.add_argument(
        "--train-limit",
        type=_positive_int,
        help="train on only the first N training images",
    )
    g.add_argument(
        "--test-limit", type=_positive_int, help="test on only the first N test images"
    )
    g.add_argument(
        "--image-size",
        type=_positive_int,
        nargs=2,
        metavar=("H", "W"),
        help="image folders: resize every image to H x W (bilinear filter)",
    )
    g.add_argument(
        "--color",
        choices=COLORS,
        help="image folders: convert every image to rgb or grayscale",
    )
    g.add_argument(
        "--skip-bad-images",
        action="store_true",
        default=None,
        help="image folders: skip (and count) unreadable image files",
    )
    g.add_argument(
        "--test-fraction",
        type=float,
        help=f"a folder of class folders only: the stratified share tested on "
        f"(default {d.test_fraction:g})",
    )
    g.add_argument(
        "--val-fraction",
        type=float,
        help=f"image folders, .npz, CIFAR without val/: the stratified hold-out "
        f"share (default {d.val_fraction:g}; --val-size N sets a count)",
    )
    g = p.add_argument_group("machine")
    g.add_argument(
        "--device", choices=DEVICES, help="auto: CUDA when present, else CPU"
    )
    g.add_argument(
        "--threads", type=_positive_int, help="CPU threads (default: all cores)"
    )


# The naming rule of nn.presets.names_file, for `train` and `summary`.
ARCH_HELP = (
    "a preset name or number (cnnlab presets), or an architecture file. Text with "
    "a / or a .yaml, .yml or .json suffix is a file; a bare word is the preset of "
    "that name (an error if a file of that name is also in the current folder: "
    "write ./NAME for the file); any other bare word is the file of that name"
)


def build_parser() -> Parser:
    parser = Parser(
        prog="cnnlab",
        description="Design, train and compare convolutional networks on MNIST-family "
        "data. Architectures are YAML files in Keras's layer vocabulary, or the "
        "notebook's nine built-in presets.",
        epilog="Example: cnnlab train conv5-medium --epochs 2. "
        "Bad input exits with code 2, Ctrl-C with 130, SIGTERM with 143.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks on errors"
    )
    # --debug may also follow the command; SUPPRESS keeps a top-level one from reset.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    parser.commands = {}  # type: ignore[attr-defined]

    def add_command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        command = sub.add_parser(name, parents=[common], **kwargs)
        parser.commands[name] = command  # type: ignore[attr-defined]
        return command

    add_command("presets", help="list the built-in architectures")

    p = add_command("summary", help="print a Keras-style summary with FLOPs")
    p.add_argument("arch", metavar="NAME|FILE", help=ARCH_HELP)
    p.add_argument(
        "--classes",
        type=_positive_int,
        help="check that the output has this many classes",
    )

    p = add_command(
        "train",
        help="train a network into a run folder",
        description="Train a network, checkpointing after every epoch, and score "
        "it on the test set. The run folder holds the spec, config, history, curves "
        "and weights; Ctrl-C stops at the last finished epoch, --resume continues.",
    )
    p.add_argument(
        "arch",
        metavar="NAME|FILE",
        nargs="?",
        help=ARCH_HELP,
    )
    _add_train_flags(p)
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
    _add_log_flags(p)

    p = add_command(
        "study",
        help="train architectures x seeds and compare them in a report",
        description="Run a study (built-in: quickstart, seed; or a study YAML file): "
        "every architecture x seed, recorded in an SQLite store, then a comparison "
        "table, diagnosis, figures and Markdown + HTML reports. Re-running skips "
        "finished trials and resumes an interrupted one.",
    )
    p.add_argument("study", metavar="NAME|FILE", help="built-in study or a study file")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("studies"),
        help="output folder (default studies)",
    )
    p.add_argument("--seeds", type=_seed_list, help="override the seeds, e.g. 0,1,2")
    _add_overrides(p)
    p.add_argument(
        "--workers",
        type=_positive_int,
        help="trials run at once, each in its own process with --threads threads "
        "(default: cnnlab splits the CPUs and says how)",
    )
    p.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local: this machine, in this process or in --workers processes "
        "(default); ray: trials as Ray Tune trials on a local Ray instance or the "
        "cluster at --address (pip install 'cnnlab[ray]'; see docs/ray.md)",
    )
    p.add_argument(
        "--address",
        help="with --executor ray: an existing Ray cluster, e.g. ray://head:10001 or "
        "auto; without it a local instance is started for the study",
    )
    p.add_argument(
        "--cpus-per-trial",
        type=_positive_float,
        help="with --executor ray: CPUs each trial gets, fractions allowed; its "
        "torch threads are the whole CPUs of it, at least 1 (default 1)",
    )
    p.add_argument(
        "--early-stop",
        choices=("asha",),
        help="with --executor ray: stop weak trials early with ASHA (ranks them by "
        "validation loss at 1, 2, 4... epochs); the report marks them",
    )
    _add_log_flags(p)

    _add_search(add_command)

    p = add_command("runs", help="list the trials recorded in a study store")
    p.add_argument("--out", type=Path, default=Path("studies"), help="the study folder")
    p.add_argument("--study", help="only this study")
    p.add_argument("--arch", help="only this architecture label")
    p.add_argument(
        "--status",
        choices=[s.value for s in Status],
        help="only trials in this state",
    )

    p = add_command("report", help="rebuild a study's tables, figures and reports")
    p.add_argument("study", metavar="STUDY", help="the study's name")
    p.add_argument("--out", type=Path, default=Path("studies"), help="the study folder")

    p = add_command("evaluate", help="re-score a run's saved weights on the test set")
    p.add_argument("run", type=Path, metavar="RUN", help="a run folder")
    p.add_argument(
        "--data", help="score on another data set (mnist, fashion-mnist, folder)"
    )

    p = add_command(
        "data",
        help="show what a data set holds and write a grid of sample images",
        description="Read a data set as training would (checking every image) and "
        "print its classes, images per class per split, size, colour mode and pixel "
        "statistics; write a PNG grid of sample images per class.",
    )
    p.add_argument(
        "data",
        metavar="DATA",
        help="mnist, fashion-mnist, a folder or an .npz; or `get` to download NAME",
    )
    p.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help="after `get`: cifar10, cifar100, fashion-mnist or kmnist",
    )
    p.add_argument(
        "--grid",
        type=Path,
        default=Path("data-samples.png"),
        help="where to write the sample grid (default data-samples.png)",
    )
    p.add_argument("--no-grid", action="store_true", help="write no sample grid")
    p.add_argument("--image-size", type=_positive_int, nargs=2, metavar=("H", "W"))
    p.add_argument("--color", choices=COLORS)
    p.add_argument("--skip-bad-images", action="store_true", default=None)
    p.add_argument("--test-fraction", type=float)

    p = add_command("predict", help="classify image files with a trained run")
    p.add_argument("run", type=Path, metavar="RUN", help="a run folder")
    p.add_argument(
        "images", nargs="+", metavar="IMAGE", help="PNG/JPEG files, any size"
    )

    p = add_command(
        "import",
        help="import a Keras Sequential model (.keras, .h5, .json) or Keras code "
        "(.py, .ipynb)",
        description="Read Keras models without running any code: a .keras archive "
        "or legacy .h5 becomes a run folder (spec, run.json, weights) that evaluate "
        "and predict use; a .json config becomes a spec file; a .py file or Jupyter "
        "notebook gives one architecture file per Sequential model built in it and "
        "a study.yaml listing them (what cannot be translated is reported as "
        "file:line, or file:cell N:line M, and the other models still import).",
    )
    p.add_argument("source", type=Path, metavar="SOURCE", help="the file to import")
    p.add_argument(
        "--out",
        type=Path,
        help="run folder (default runs/<name>-imported-<time>), the spec file of "
        "an architecture without weights (default ./<name>.yaml), or for code the "
        "folder of its architecture files and study (default imported/<file>/)",
    )

    from cnnlab.interop.export import FORMATS

    p = add_command(
        "export",
        help="write a run's network as an ONNX, Keras or TorchScript file",
        description="Export a trained run for use without cnnlab. Every format takes "
        "(N, H, W, C) float32 images in [0, 1], (N, 28, 28, 1) for MNIST, channels "
        "last as in Keras (the graph transposes to NCHW inside), and gives class "
        "probabilities (N, classes), softmax applied; the batch size N is free.",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="a run folder")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="onnx",
        help="onnx (needs the interop extra), keras (the keras extra) or "
        "torchscript (default onnx)",
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="the file to write (default RUN/model.onnx, .keras or .pt)",
    )
    _add_export_study(add_command)
    return parser


# ------------------------------------------------------- MLflow and TensorBoard

LOG_URI_HELP = (
    "mlflow: the tracking URI (default $MLFLOW_TRACKING_URI, else "
    "sqlite:///mlflow.db in the current folder, MLflow's own default, artifacts in "
    "./mlruns); tensorboard: the log folder (default tb-logs)"
)


def _duration(text: str) -> float:
    """Seconds from '90', '90s', '30m' or '2h'."""
    scale = {"s": 1, "m": 60, "h": 3600}.get(text[-1:].lower(), 0)
    number = text[:-1] if scale else text
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 600, 90s, 30m or 2h, got '{text}'"
        )
    return seconds


def _add_search(add_command: Callable[..., argparse.ArgumentParser]) -> None:
    p = add_command(
        "search",
        help="search an architecture/training space with Optuna, then re-train "
        "the finalists over seeds",
        description="Search the space of a study file's `search:` block "
        "(docs/search.md): Optuna (TPE by default, random, grid; NSGA-II with two "
        "objectives) proposes points, each is shape-checked (an invalid point is "
        "recorded, not trained) and trained with one seed, ranked on validation "
        "only, weak ones pruned per epoch if the block asks. Then the top "
        "`finalists` are re-trained over the study's seeds (default 0-4) as the "
        "study <name>-final, the only trials that read the test set. Writes "
        "<out>/<name>/best.yaml (cnnlab train best.yaml trains the winner) and "
        "<out>/<name>/report/report.md and .html. Optuna's storage is "
        "<out>/optuna.sqlite: a killed search resumes where it stopped when run "
        "again, and `optuna-dashboard sqlite:///<out>/optuna.sqlite` shows it.",
    )
    p.add_argument("study", metavar="FILE", help="a study file with a search block")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("studies"),
        help="output folder (default studies)",
    )
    p.add_argument(
        "--trials",
        type=_positive_int,
        help="candidates to train, pruned ones included, invalid points not (default: "
        "the block's trials, or the whole grid)",
    )
    p.add_argument(
        "--time-budget",
        type=_duration,
        metavar="TIME",
        help="start no new candidate after this long, e.g. 600, 30m, 2h",
    )
    p.add_argument("--seeds", type=_seed_list, help="the finalists' seeds, e.g. 0,1,2")
    _add_overrides(p)
    p.add_argument(
        "--workers",
        type=_positive_int,
        help="candidates trained at once: in worker processes (local), or sent to "
        "Ray together (--executor ray, default 2)",
    )
    p.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local (default) or ray: candidates and finalists as Ray Tune trials "
        "(a pruner then means ASHA); see docs/search.md",
    )
    p.add_argument("--address", help="with --executor ray: an existing Ray cluster")
    p.add_argument(
        "--cpus-per-trial", type=_positive_float, help="with --executor ray: CPUs each"
    )


def _add_overrides(p: argparse.ArgumentParser) -> None:
    """The training settings `study` and `search` may override for every net."""
    for flag in (
        "--epochs",
        "--train-limit",
        "--test-limit",
        "--val-size",
        "--threads",
    ):
        p.add_argument(
            flag, type=_positive_int, help=f"override {flag[2:]} for every net"
        )
    p.add_argument(
        "--device", choices=DEVICES, help="auto: CUDA when present, else CPU"
    )


def cmd_search(args: argparse.Namespace) -> int:
    search = api.load_search(
        args.study, seeds=args.seeds, epochs=args.epochs, train_limit=args.train_limit,
        test_limit=args.test_limit, val_size=args.val_size, threads=args.threads,
        device=args.device,
    )  # fmt: skip
    started = time.perf_counter()
    try:
        with StudyProgress() as progress:
            report = api.run_search(
                search, args.out, trials=args.trials, time_budget=args.time_budget,
                executor=args.executor, workers=args.workers, address=args.address,
                cpus_per_trial=args.cpus_per_trial, progress=progress,
            )  # fmt: skip
    except KeyboardInterrupt:
        print(
            f"interrupted: finished candidates and the last epoch are saved in "
            f"{args.out}. Run the same command again to resume.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    for line in report.lines:
        print(line)
    if report.final is not None:
        _print_report(report.final)
    if report.best_file is not None:
        print(f"Winner: {report.best_file} (cnnlab train {report.best_file})")
    print(f"Search report: {report.markdown_path} and {report.html_path}")
    print(f"Wall time: {(time.perf_counter() - started) / 60:.1f} min")
    return 0


def _add_log_flags(p: argparse.ArgumentParser) -> None:
    """--log and --log-uri, for train and study."""
    from cnnlab.interop.loggers import LOG_KINDS

    g = p.add_argument_group("logging (pip install 'cnnlab[interop]')")
    g.add_argument(
        "--log",
        choices=LOG_KINDS,
        help="also copy each finished run to MLflow or TensorBoard (the run folders "
        "and store stay the record; a logging failure is a warning, not an error)",
    )
    g.add_argument("--log-uri", metavar="URI", help=LOG_URI_HELP)


def _add_export_study(add_command: Callable[..., argparse.ArgumentParser]) -> None:
    """The export-study command: a finished study to MLflow or TensorBoard."""
    from cnnlab.interop.loggers import LOG_KINDS

    p = add_command(
        "export-study",
        help="copy a finished study's trials to MLflow or TensorBoard",
        description="Log a study's finished trials from its store and run folders, "
        "without training: what --log does during a study, later. Trials logged "
        "before are not logged twice.",
    )
    p.add_argument("study", metavar="STUDY", help="the study's name")
    p.add_argument("--to", choices=LOG_KINDS, required=True, help="the backend")
    p.add_argument("--log-uri", metavar="URI", help=LOG_URI_HELP)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("studies"),
        help="the study folder (default studies)",
    )


def _logger_from_flags(args: argparse.Namespace) -> Any:
    """The logger --log [--log-uri] asks for, or None."""
    if args.log is None:
        if args.log_uri is not None:
            raise CnnlabError(
                "--log-uri needs --log; add --log mlflow or --log tensorboard."
            )
        return None
    return api.make_logger(args.log, args.log_uri)


def cmd_export_study(args: argparse.Namespace) -> int:
    from cnnlab.interop.loggers import log_location

    count = api.export_study(args.study, args.to, args.log_uri, args.out)
    where = log_location(args.to, args.log_uri)
    print(f"{count} finished trial(s) of study '{args.study}' logged to {where}")
    if args.to == "tensorboard":
        print(f"View with: tensorboard --logdir {where}")
    elif "://" not in where or where.startswith(("sqlite:", "file:")):
        print(f"View with: mlflow ui --backend-store-uri {where}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Built-in architectures (the notebook's nine networks)")
    for col, justify in (
        ("#", "right"),
        ("name", "left"),
        ("description", "left"),
        ("params", "right"),
        ("FLOPs/sample", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    recipes = recipe_names()
    plain = [name for name in preset_names() if name not in recipes]
    for number, name in enumerate(plain, start=1):
        info = infer(load_preset(name))
        table.add_row(
            str(number),
            name,
            info.arch.description,
            f"{info.total:,}",
            format_flops(info.flops),
        )
    console = Console()
    print_table(console, table)
    if recipes:
        print_table(console, _recipes_table(recipes))
    return 0


def _recipes_table(recipes: list[str]) -> Any:
    """Recipes: an architecture with its own training settings (`cnnlab train NAME`).

    A borderless table, so it reads apart from the notebook's nine above it.
    """
    from rich import box
    from rich.table import Table

    table = Table(
        title="Recipes (architecture + training settings: cnnlab train NAME)",
        box=box.SIMPLE,
    )
    for col in ("name", "description", "params", "FLOPs/sample", "training"):
        table.add_column(col)
    for name in recipes:
        info = infer(load_preset(name))
        config = recipe_config(name)
        table.add_row(
            name,
            info.arch.description,
            f"{info.total:,}",
            format_flops(info.flops),
            _recipe_text(config, config),
        )
    return table


def _recipe_text(base: TrainConfig, config: TrainConfig) -> str:
    """The settings a recipe changes from TrainConfig(), as used after the flags."""
    default = TrainConfig().to_dict()
    changed = [k for k, v in base.to_dict().items() if v != default[k]]
    return ", ".join(f"{k} {getattr(config, k)}" for k in changed)


def cmd_summary(args: argparse.Namespace) -> int:
    print(shown(api.summary(args.arch, args.classes)))  # names, descriptions: a file's
    return 0


def _config_from_flags(args: argparse.Namespace, base: TrainConfig) -> TrainConfig:
    if args.data and args.data_dir:
        raise CnnlabError("--data and --data-dir both given; use one of them.")
    validation = args.validation or base.validation
    if args.val_size is not None and validation != "holdout":
        raise CnnlabError(
            f"--val-size sets the hold-out, but --validation is {validation}: there "
            "is none. Drop --val-size, or use --validation holdout."
        )
    return base.replace(
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        seed=args.seed,
        schedule=args.schedule,
        augment=args.augment,
        label_smoothing=args.label_smoothing,
        max_shift=args.max_shift,
        test_augment=args.test_augment,
        data=args.data or args.data_dir,
        validation=args.validation,
        val_size=args.val_size,
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        device=args.device,
        threads=args.threads,
        image_size=args.image_size,
        color=args.color,
        skip_bad_images=args.skip_bad_images,
        test_fraction=args.test_fraction,
        val_fraction=args.val_fraction,
    )


# Flags of `train` that are not TrainConfig fields: none may come with --resume.
_RUN_FLAGS = ("arch", "data_dir", "out", "overwrite")


def _check_resume_flags(args: argparse.Namespace) -> None:
    """--resume keeps the run's settings: refuse every flag but RESUMABLE's."""
    fixed = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in RESUMABLE]
    given = [
        name
        for name in (*_RUN_FLAGS, *fixed)
        if (value := getattr(args, name, None)) is not None and value is not False
    ]
    if given:
        names = ", ".join(
            "NAME|FILE" if name == "arch" else "--" + name.replace("_", "-")
            for name in given
        )
        free = ", ".join("--" + name for name in RESUMABLE)
        raise CnnlabError(
            f"--resume continues a run with its own settings; drop {names} "
            f"(only {free} may change)."
        )


def cmd_train(args: argparse.Namespace) -> int:
    log = _logger_from_flags(args)
    if args.resume is not None:
        _check_resume_flags(args)
        out = args.resume
        changes = {"device": args.device, "threads": args.threads, "log": log}
        run = lambda rep: api.resume(args.resume, args.epochs, rep, **changes)  # noqa: E731
    else:
        if args.arch is None:
            raise CnnlabError(
                "give an architecture (a preset such as conv5-medium, or a YAML file), "
                "or --resume RUN. See 'cnnlab presets'."
            )
        arch = api.load(args.arch)
        base = recipe_config(args.arch)  # a recipe's settings, under the flags
        config = _config_from_flags(args, base)
        if base != TrainConfig():
            print(f"Recipe {args.arch}: {_recipe_text(base, config)}")
        out = args.out or default_run_path(arch.name)
        run = lambda rep: api.train(  # noqa: E731
            arch, config, out, args.overwrite, rep, log=log
        )
    try:
        with RichReporter(header=f"Run folder: {out}") as reporter:
            result = run(reporter)
    except KeyboardInterrupt as err:
        print(
            f"interrupted ({signal_name(err)}): the last finished epoch is saved in "
            f"{out}. Resume with: cnnlab train --resume {out}",
            file=sys.stderr,
        )
        return exit_code(err)
    print(f"Test loss: {result.test_loss:.4f}")
    print(f"Test accuracy: {result.test_acc:.4f} ({100 * result.test_acc:.2f}%)")
    print(f"Run folder: {result.path}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    scores = api.evaluate_run(args.run, args.data)
    print(f"Data: {scores['data']} ({scores['test_samples']:,} test images)")
    print(f"Test loss: {scores['test_loss']:.4f}")
    print(f"Test accuracy: {scores['test_acc']:.4f} ({100 * scores['test_acc']:.2f}%)")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    if args.data == "get":
        return _data_get(args.name)
    if args.name is not None:
        raise CnnlabError(
            f"cnnlab data takes one data set, got {args.data!r} and {args.name!r}; "
            "use `cnnlab data DATA`, or `cnnlab data get NAME` to download one"
        )
    config = TrainConfig().replace(
        image_size=args.image_size,
        color=args.color,
        skip_bad_images=args.skip_bad_images,
        test_fraction=args.test_fraction,
    )
    grid = None if args.no_grid else args.grid
    for line in api.describe_data(args.data, grid, config).lines():
        print(shown(line))
    return 0


def _data_get(name: str | None) -> int:
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from cnnlab.data import fetch

    if name is None:
        raise CnnlabError(
            f"cnnlab data get needs a NAME: one of {', '.join(fetch.SOURCES)}"
        )
    tasks: dict[str, Any] = {}
    columns = (*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, transient=True) as bar:

        def show(file: str, done: int, total: int | None) -> None:
            if file not in tasks:
                tasks[file] = bar.add_task(file, total=total)
            bar.update(tasks[file], completed=done)

        folder = api.get_data(name, show)
    print(f"{name}: {folder}")
    print(f"Train on it with --data {name} (or data: {name} in a study file)")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    for p in api.predict(args.run, args.images):
        note = f" [{p.converted}]" if p.converted else ""
        print(shown(f"{p.path}: {p.name} ({100 * p.probability:.1f}%){note}"))
    return 0


def _dims(shape: tuple[int | str, ...]) -> str:
    return f"({', '.join(map(str, shape))})"


_LOADERS = {
    "onnx": "onnxruntime.InferenceSession",
    "keras": "keras.saving.load_model",
    "torchscript": "torch.jit.load",
}


def cmd_export(args: argparse.Namespace) -> int:
    from cnnlab.interop.export import signature
    from cnnlab.training.runs import open_run

    path = api.export_run(args.run, args.format, args.out)
    sig = signature(open_run(args.run).architecture(), args.format)
    print(f"Wrote: {path}")
    print(f"Input: {sig.input_name or 'tensor'} {_dims(sig.input_shape)} float32 "
          "in [0, 1], channels last as in Keras")  # fmt: skip
    print(f"Output: {sig.output_name or 'tensor'} {_dims(sig.output_shape)} "
          "float32, class probabilities (softmax applied)")  # fmt: skip
    if sig.opset is not None:
        print(f"ONNX opset: {sig.opset}")
    print(f"Load with: {_LOADERS[args.format]}({str(path)!r})")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Keras models and Keras code, routed by suffix in api.import_model."""
    for line in api.import_model(args.source, args.out).lines():
        print(line)
    return 0


def _print_report(report: Any) -> None:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # a log file or pipe: no 80-column squeeze
        console = Console(width=160)
    print_summary(report, console)
    console.print(f"\nReport: {report.markdown_path} and {report.html_path}")


def cmd_study(args: argparse.Namespace) -> int:
    study = api.load_study(
        args.study,
        seeds=args.seeds,
        epochs=args.epochs,
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        val_size=args.val_size,
        threads=args.threads,
        device=args.device,
    )
    options = {
        "executor": args.executor,
        "workers": args.workers,
        "address": args.address,
        "early_stop": args.early_stop,
        "cpus_per_trial": args.cpus_per_trial,
        "log": _logger_from_flags(args),
    }
    started = time.perf_counter()
    try:
        with StudyProgress() as progress:
            report = api.run_study(study, args.out, progress=progress, **options)
    except KeyboardInterrupt as err:
        print(
            f"interrupted ({signal_name(err)}): finished trials and the last epoch "
            f"are saved in {args.out}. Run the same command again to resume.",
            file=sys.stderr,
        )
        return exit_code(err)
    minutes = (time.perf_counter() - started) / 60
    _print_report(report)
    print(f"Wall time: {minutes:.1f} min")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    rows = api.list_trials(args.out, args.study, args.arch, args.status)
    table = Table(title=f"Trials in {api.store_path(args.out)}")
    columns = ("study", "architecture", "seed", "status", "epochs", "test acc %")
    for col in (*columns, "run"):
        table.add_column(col)
    for r in rows:
        acc = "-" if r["test_acc"] is None else f"{100 * r['test_acc']:.2f}"
        cells = (r["study"], r["label"], str(r["seed"]), r["status"],
                 str(r["epochs"]), acc, r["run_path"])  # fmt: skip
        table.add_row(*(escape(shown(str(c))) for c in cells))  # a store's values
    print_table(Console(), table)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    _print_report(api.open_report(args.study, args.out))
    return 0


COMMANDS = {
    "presets": cmd_presets,
    "summary": cmd_summary,
    "train": cmd_train,
    "study": cmd_study,
    "search": cmd_search,
    "runs": cmd_runs,
    "report": cmd_report,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "data": cmd_data,
    "export": cmd_export,
    "import": cmd_import,
    "export-study": cmd_export_study,
}


# What an interrupt leaves, per command (train and study say it themselves).
_AFTER_INTERRUPT = {
    "evaluate": "evaluate writes nothing; the run folder is unchanged",
    "predict": "predict writes nothing; the run folder is unchanged",
    "data": "the sample grid is written whole or not at all",
    "report": "each report file is written whole or not at all. Rebuild the "
    "report by running the same command again",
    "export": "the export is written whole or not at all. Run the same command again",
    "import": "nothing half-written is kept. Run the same command again",
    "export-study": "trials already sent stay sent. Run the same command again "
    "to send the rest",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # report unknown flags against the command's own flags, with a hint
        parser.commands[args.command].error(  # type: ignore[attr-defined]
            f"unrecognized arguments: {' '.join(extra)}"
        )
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = PipeSafe(sys.stdout), PipeSafe(sys.stderr)
    code: int | None = None
    try:
        # As the console script (argv None) the process ends after this: a signal
        # after the command finished is then ignored, not a death by signal.
        with signals_as_interrupts(restore=argv is not None):
            code = _run(args)
    except KeyboardInterrupt as err:
        # The signal came outside `_run`'s own handling: while it printed an error,
        # or after the command returned but before the handlers were put back.
        if code is None:
            if args.debug:
                raise
            code = _interrupted(args, err)
    finally:
        sys.stdout, sys.stderr = streams
    assert code is not None  # set by `_run` or by the interrupt it missed
    if argv is None and code in (EXIT_SIGINT, EXIT_SIGTERM):
        # A KeyboardInterrupt that passed through C code (an import, say) can leave
        # CPython set to end the process by SIGINT after main returns, whatever the
        # code: the clean-up is done, so exit now with the code the line promised.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run(args: argparse.Namespace) -> int:
    """The command, with bad input and interrupts each ending in one line."""
    try:
        return COMMANDS[args.command](args)
    except CnnlabError as err:
        if args.debug:
            raise
        print(f"error: {shown(str(err))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as err:
        if args.debug:
            raise
        return _interrupted(args, err)
    except Exception as err:
        # Python wraps an interrupt raised in some places in another error (a
        # signal during a class's creation, as an import runs, becomes
        # "RuntimeError: Error calling __set_name__"): it is still the interrupt.
        cause = interrupt_in(err)
        if cause is None or args.debug:
            raise
        return _interrupted(args, cause)


def interrupt_in(err: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt (or SIGTERM's) that `err` was raised from, if any."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _interrupted(args: argparse.Namespace, err: KeyboardInterrupt) -> int:
    """Say what an interrupt left and how to go on; the exit code it ends with."""
    after = _AFTER_INTERRUPT.get(args.command, "nothing was written")
    print(f"interrupted ({signal_name(err)}): {after}.", file=sys.stderr)
    return exit_code(err)


if __name__ == "__main__":
    sys.exit(main())
