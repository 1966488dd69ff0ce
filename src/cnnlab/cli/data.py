"""`cnnlab data DATA` (what a data set holds, with a grid of samples) and
`cnnlab data get NAME` (download a named data set, only when asked)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cnnlab.cli.parsing import IMAGE_SETTINGS, Command, add_image_settings, fixed
from cnnlab.errors import CnnlabError
from cnnlab.util.terminal import shown


def _data_arguments(p: argparse.ArgumentParser) -> None:
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
    add_image_settings(p)


def _data(args: argparse.Namespace) -> int:
    from cnnlab import api
    from cnnlab.training.config import TrainConfig

    if args.data == "get":
        return _data_get(args.name)
    if args.name is not None:
        raise CnnlabError(
            f"cnnlab data takes one data set, got {args.data!r} and {args.name!r}; "
            "use `cnnlab data DATA`, or `cnnlab data get NAME` to download one"
        )
    config = TrainConfig().replace(**{k: getattr(args, k) for k in IMAGE_SETTINGS})
    grid = None if args.no_grid else args.grid
    for line in api.describe_data(args.data, grid, config).lines():
        print(shown(line))
    return 0


def _data_get(name: str | None) -> int:
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from cnnlab import api
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


DATA = Command(
    "data",
    help="show what a data set holds and write a grid of sample images",
    description="Read a data set as training would (checking every image) and "
    "print its classes, images per class per split, size, colour mode and pixel "
    "statistics; write a PNG grid of sample images per class. `cnnlab data get "
    "NAME` downloads cifar10, cifar100, fashion-mnist or kmnist (checksums pinned) "
    "into the cache folder that --data NAME reads.",
    arguments=_data_arguments,
    run=_data,
    after_interrupt=fixed("the sample grid is written whole or not at all."),
)
