"""What every command's arguments share: one-line errors, the value parsers, the
`Command` unit, and the flags made from TrainConfig's fields."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from cnnlab.errors import CnnlabError
from cnnlab.training.config import OVERRIDES, TrainConfig

EXIT_USAGE = 2  # bad input of any kind: flags, files, data


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and close-match hints for unknown flags."""

    def error(self, message: str) -> NoReturn:
        line = f"error: {message}{self._hint(message)}. See '{self.prog} --help'.\n"
        self.exit(EXIT_USAGE, line)

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


@dataclass(frozen=True)
class Command:
    """One command, whole: its arguments, its body, and what an interrupt leaves.

    `run` is a thin layer over the Python API: it turns flags into an API call and
    the result into lines. `after_interrupt` finishes the line
    'interrupted (SIGNAL): ...' from the command's arguments.
    """

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    after_interrupt: Callable[[argparse.Namespace], str] = lambda args: (
        "nothing was written."
    )
    description: str | None = None
    epilog: str | None = None

    def __call__(self, args: argparse.Namespace) -> int:
        return self.run(args)


def fixed(text: str) -> Callable[[argparse.Namespace], str]:
    """An `after_interrupt` that does not depend on the arguments."""
    return lambda args: text


# ------------------------------------------------------------------ value parsers


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


positive_int = _number(int, lambda v: v > 0, "a positive integer")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: 0 < v < float("inf"), "a positive number")

# TrainConfig's `kind` of a setting -> the flag's parser (training.config.setting)
_PARSERS: dict[str, Callable[[str], Any] | None] = {
    "count": positive_int,
    "seed": non_negative_int,
    "rate": positive_float,
    "number": float,
    "fraction": float,  # TrainConfig checks the range, naming the setting
    "size": positive_int,  # two of them: H W
    "switch": None,
    "choice": None,
    "text": None,
}


def seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 0,1,2, got '{text}'"
        ) from None
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"expected integers >= 0, got '{text}'")
    return seeds


def duration(text: str) -> float:
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


# ------------------------------------------------------- flags from TrainConfig


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def _settings(only: tuple[str, ...] | None = None) -> list[dataclasses.Field]:
    return [
        f
        for f in dataclasses.fields(TrainConfig)
        if f.metadata["flag"] and (only is None or f.name in only)
    ]


def setting_help(field: dataclasses.Field) -> str:
    """A setting's help with its default, as --help and docs/training.md show it."""
    text = field.metadata["help"]
    if (
        field.default is None
        or "(default" in text
        or field.metadata["kind"] == "switch"
    ):
        return text
    default = f"{field.default:,}" if isinstance(field.default, int) else field.default
    return f"{text} (default {default})"


def _add_setting(group: Any, field: dataclasses.Field, help: str) -> None:
    meta = field.metadata
    kwargs: dict[str, Any] = {"help": help.replace("%", "%%")}  # argparse formats it
    if meta["kind"] == "choice":
        kwargs["choices"] = meta["choices"]
    elif meta["kind"] == "switch":  # None when not given: the file's value stands
        kwargs |= {"action": "store_const", "const": True}
    else:
        kwargs["type"] = _PARSERS[meta["kind"]]
    if meta["kind"] == "size":
        kwargs |= {"nargs": 2, "metavar": ("H", "W")}
    group.add_argument(flag_of(field.name), **kwargs)


TRAIN_GROUPS = {
    "training": "training (defaults: the notebook's protocol)",
    "data": "data",
    "images": "image data: folders, .npz, CIFAR (docs/data.md)",
    "machine": "machine",
}


def add_train_flags(p: argparse.ArgumentParser) -> None:
    """A flag for every TrainConfig setting, grouped, with its help and default."""
    groups = {key: p.add_argument_group(title) for key, title in TRAIN_GROUPS.items()}
    for field in _settings():
        _add_setting(groups[field.metadata["group"]], field, setting_help(field))
        if field.name == "data":
            groups["data"].add_argument(
                "--data-dir", help="a folder holding the four IDX files (as --data DIR)"
            )


def add_image_settings(p: argparse.ArgumentParser) -> None:
    """How images are read (size, colour, bad files, splits): `cnnlab data`."""
    g = p.add_argument_group(TRAIN_GROUPS["images"])
    for field in _settings():
        if field.metadata["group"] == "images":
            _add_setting(g, field, setting_help(field))


IMAGE_SETTINGS = tuple(
    f.name for f in dataclasses.fields(TrainConfig) if f.metadata["group"] == "images"
)


def add_overrides(p: argparse.ArgumentParser) -> None:
    """The settings `study` and `search` may change for every net (OVERRIDES)."""
    g = p.add_argument_group("training settings for every net (override the file)")
    for field in _settings(OVERRIDES):
        _add_setting(g, field, setting_help(field))


def config_changes(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    """The settings among `names` that flags gave, by TrainConfig field name."""
    return {name: getattr(args, name, None) for name in names}


def train_changes(args: argparse.Namespace) -> dict[str, Any]:
    """Every TrainConfig setting the `train` flags gave (None: not given)."""
    if args.data and args.data_dir:
        raise CnnlabError("--data and --data-dir both given; use one of them.")
    changes = config_changes(args, tuple(f.name for f in _settings()))
    changes["data"] = args.data or args.data_dir
    return changes


def add_executor_flags(p: argparse.ArgumentParser, *, what: str) -> None:
    """--workers, --executor, --address and --cpus-per-trial, for study and search."""
    from cnnlab.studies.runner import EXECUTORS

    g = p.add_argument_group("where the trials run")
    g.add_argument(
        "--workers",
        type=positive_int,
        help=f"{what} run at once, each in its own process (local), or sent to Ray "
        "together (--executor ray) (default: cnnlab splits the CPUs and says how)",
    )
    g.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local: this machine, in this process or in --workers processes "
        f"(default); ray: {what} as Ray Tune trials on a local Ray instance or the "
        "cluster at --address (pip install 'cnnlab[ray]'; see docs/ray.md)",
    )
    g.add_argument(
        "--address",
        help="with --executor ray: an existing Ray cluster, e.g. ray://head:10001 or "
        "auto; without it a local instance is started",
    )
    g.add_argument(
        "--cpus-per-trial",
        type=positive_float,
        help="with --executor ray: CPUs each trial gets, fractions allowed; its "
        "torch threads are the whole CPUs of it, at least 1 (default 1)",
    )


def executor_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "executor": args.executor,
        "workers": args.workers,
        "address": args.address,
        "cpus_per_trial": args.cpus_per_trial,
    }


LOG_URI_HELP = (
    "mlflow: the tracking URI (default $MLFLOW_TRACKING_URI, else "
    "sqlite:///mlflow.db in the current folder, MLflow's own default, artifacts in "
    "./mlruns); tensorboard: the log folder (default tb-logs)"
)


def add_log_flags(p: argparse.ArgumentParser) -> None:
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


def logger_from_flags(args: argparse.Namespace) -> Any:
    """The logger --log [--log-uri] asks for, or None."""
    from cnnlab import api

    if args.log is None:
        if args.log_uri is not None:
            raise CnnlabError(
                "--log-uri needs --log; add --log mlflow or --log tensorboard."
            )
        return None
    return api.make_logger(args.log, args.log_uri)


def flags_table() -> str:
    """The `train` settings as a Markdown table (docs/training.md holds it, checked
    by tests/test_docs.py), made from TrainConfig like `--help`."""
    lines = ["| flag | setting | meaning |", "|---|---|---|"]
    for field in _settings():
        help = setting_help(field).replace("|", "\\|")
        if field.metadata["kind"] == "choice":
            help += f"; one of {', '.join(field.metadata['choices'])}"
        key = f"`{field.name}`" + (" (override)" if field.metadata["override"] else "")
        lines.append(f"| `{flag_of(field.name)}` | {key} | {help} |")
    return "\n".join(lines) + "\n"
