"""Where a study output folder (`--out`) keeps everything, said once:

    <out>/cnnlab.sqlite                  the store: every study of the folder
    <out>/<study>/runs/<label>-s<seed>/  a trial's run folder
    <out>/<study>/report/                report.md, report.html, figures/
    <out>/<search>/search/               what a running search locks

A study's name names a folder, so it is checked (`check_study_name`) before it
becomes one, and the folder is kept under `<out>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.util.fsio import check_inside
from cnnlab.util.text import MAX_SLUG, show_value, slug

DEFAULT_OUT = Path("studies")  # where studies and searches go without --out
STORE_FILE = "cnnlab.sqlite"
RUNS_FOLDER = "runs"


def check_study_name(name: object, where: str = "") -> str:
    """A study name names a folder, so it must be its own slug; also for names read
    back from a store or given to `cnnlab report`, which are untrusted too."""
    if not isinstance(name, str) or not slug(name) or slug(name, None) != name:
        raise CnnlabError(
            f"{where}study name {show_value(name)} is not a simple name (letters, "
            f"digits, '-', '_', '.', at most {MAX_SLUG}): it names a folder. Give "
            "the study's own name (see `cnnlab runs`)."
        )
    return name


@dataclass(frozen=True)
class StudyLayout:
    """The folders and files of the study output folder `out`."""

    out: Path

    def __init__(self, out: str | Path = DEFAULT_OUT) -> None:
        object.__setattr__(self, "out", Path(out))

    @property
    def store(self) -> Path:
        return self.out / STORE_FILE

    def study(self, name: str) -> Path:
        """`<out>/<name>`, for a checked name, kept under `out`."""
        return check_inside(self.out / check_study_name(name), self.out)

    def runs(self, name: str) -> Path:
        return self.study(name) / RUNS_FOLDER

    def report(self, name: str) -> Path:
        return self.study(name) / "report"

    def search(self, name: str) -> Path:
        """The folder a running search `name` locks."""
        return self.study(name) / "search"
