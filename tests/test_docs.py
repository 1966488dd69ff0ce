"""The README and docs/ against the real files and the real commands: every relative
link resolves, every page is reachable from the table of contents, the README is
short and starts with the two commands CI runs, the dev extra holds every extra the
suite uses, and every `cnnlab` command and flag the docs show exists."""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from pathlib import Path

import pytest

from helpers import main_in_process

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
TOC = DOCS / "README.md"
PAGES = sorted(DOCS.glob("*.md"))
DOCUMENTS = [README, *PAGES]

README_MAX_LINES = 250
INSTALL_AND_RUN = (
    "python3 -m pip install torch==2.13.0 -e . && python3 -m cnnlab study quickstart"
)
INSTALL_AND_TEST = (
    'python3 -m pip install torch==2.13.0 -e ".[dev]" && python3 -m pytest -n 2'
)
# Extras the suite does not use: peers for benchmarks/bench.py, and dev itself.
NOT_IN_DEV = {"bench", "dev"}

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^()\s]+)\)")
INLINE_CODE = re.compile(r"`([^`]+)`")
COMMAND = re.compile(r"(?:^|[\s$])(?:python3 -m )?cnnlab ((?:--)?[a-z][a-z-]*)(.*)")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")
# bad-input.md shows wrong commands on purpose (its own test runs each one).
WRONG_ON_PURPOSE = {"bad-input.md"}
# Flags a page names as removed ("cnnlab once had ..."), with the measurements why.
REMOVED = {("benchmarks.md", "study", "--batch-seeds")}
REMOVED_PATHS = {("benchmarks.md", "benchmarks/batched_seeds.py")}
# A file of the repository named in a page: src/cnnlab/..., tests/test_x.py, ...
REPO_PATH = re.compile(
    r"(?<![\w/.-])((?:src|tests|scripts|benchmarks|examples|docs|\.ci)/[\w./-]*\w)"
)


def split_fences(text: str) -> tuple[list[str], list[str]]:
    """(prose lines, lines inside fenced code blocks) of a Markdown text."""
    prose: list[str] = []
    code: list[str] = []
    inside = False
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
        elif inside:
            code.append(line)
        else:
            prose.append(line)
    return prose, code


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces -> -."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a Markdown file's headings (repeats get -1, -2, ...)."""
    prose, _ = split_fences(page.read_text(encoding="utf-8"))
    seen: Counter[str] = Counter()
    found = set()
    for line in prose:
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            base = slug(match.group(1))
            found.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
            seen[base] += 1
    return found


def relative_links(page: Path) -> list[str]:
    prose, _ = split_fences(page.read_text(encoding="utf-8"))
    links = [m.group(1) for line in prose for m in LINK.finditer(line)]
    return [link for link in links if not re.match(r"[a-z]+:", link)]


def test_the_documents_exist() -> None:
    assert README.is_file() and TOC.is_file()
    assert len(PAGES) > 5, PAGES


@pytest.mark.parametrize("page", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for link in relative_links(page):
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            broken.append(f"{link}: no file {path.relative_to(ROOT)}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{link}: no heading #{anchor} in {path.name}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_every_docs_page_is_in_the_table_of_contents() -> None:
    linked = {
        (TOC.parent / link.partition("#")[0]).resolve() for link in relative_links(TOC)
    }
    missing = [p.name for p in PAGES if p != TOC and p.resolve() not in linked]
    assert not missing, f"docs/README.md does not link {missing}"
    assert TOC.resolve() in {(ROOT / link).resolve() for link in relative_links(README)}


def test_the_readme_is_short_and_starts_with_the_two_commands() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < README_MAX_LINES, len(lines)
    assert lines[:4] == ["```bash", INSTALL_AND_RUN, INSTALL_AND_TEST, "```"]


def test_ci_runs_the_readme_test_command_as_written() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [line for line in ci.splitlines() if line and not line.startswith("#")]
    assert commands[-1] == INSTALL_AND_TEST
    installs = [line for line in commands if "pip install" in line]
    assert all('-e ".[dev]"' in line for line in installs), installs


def test_the_dev_extra_holds_every_extra_the_suite_uses() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extras = project["project"]["optional-dependencies"]
    (only,) = extras["dev"]
    match = re.fullmatch(r"cnnlab\[([a-z,]+)\]", only.replace(" ", ""))
    assert match, only
    assert set(match.group(1).split(",")) == set(extras) - NOT_IN_DEV


def help_flags(command: str, capsys: pytest.CaptureFixture) -> set[str] | None:
    """The flags `cnnlab COMMAND --help` lists, or None if there is no such command."""
    args = ["--help"] if command == "" else [command, "--help"]
    result = main_in_process(*args, capsys=capsys)
    if result.code != 0:
        return None
    return set(FLAG.findall(result.out))


def shown_commands(page: Path) -> list[tuple[str, str]]:
    """(command, the rest of the line) of every `cnnlab ...` in code on a page."""
    prose, code = split_fences(page.read_text(encoding="utf-8"))
    spans = [m.group(1) for line in prose for m in INLINE_CODE.finditer(line)]
    found = []
    for text in [*code, *spans]:
        match = COMMAND.search(text)
        if match:
            command, rest = match.groups()
            if command.startswith("--"):  # a global flag: cnnlab --debug ...
                command, rest = "", f"{command} {rest}"
            found.append((command, re.split(r"\s(?:#|&&|\|)\s", rest)[0]))
    return found


def test_every_command_and_flag_the_docs_show_exists(
    capsys: pytest.CaptureFixture,
) -> None:
    flags: dict[str, set[str] | None] = {}
    wrong = []
    shown = 0
    for page in DOCUMENTS:
        if page.name in WRONG_ON_PURPOSE:
            continue
        for command, rest in shown_commands(page):
            shown += 1
            if command not in flags:
                flags[command] = help_flags(command, capsys)
            known = flags[command]
            if known is None:
                wrong.append(f"{page.name}: no command `cnnlab {command}`")
                continue
            wrong += [
                f"{page.name}: `cnnlab {command}` has no {flag}"
                for flag in FLAG.findall(rest)
                if flag not in known and (page.name, command, flag) not in REMOVED
            ]
    assert shown > 30, shown  # the pages do show commands: the search finds them
    assert not wrong, "\n".join(wrong)


def test_the_training_flags_table_lists_exactly_the_train_flags(
    capsys: pytest.CaptureFixture,
) -> None:
    text = (DOCS / "training.md").read_text(encoding="utf-8")
    table = [line for line in text.splitlines() if line.startswith("| `--")]
    documented = {flag for row in table for flag in FLAG.findall(row.split("|")[1])}
    documented.add("--help")
    assert documented == help_flags("train", capsys)


@pytest.mark.parametrize("page", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_file_a_page_names_exists(page: Path) -> None:
    named = set(REPO_PATH.findall(page.read_text(encoding="utf-8")))
    missing = sorted(
        path
        for path in named
        if not (ROOT / path).exists() and (page.name, path) not in REMOVED_PATHS
    )
    assert not missing, f"{page.relative_to(ROOT)} names missing files: {missing}"


SETTINGS_START = "<!-- settings: generated from TrainConfig -->\n"
SETTINGS_END = "<!-- end of settings -->"


def test_the_settings_table_is_made_from_trainconfig(
    request: pytest.FixtureRequest,
) -> None:
    """docs/training.md's settings table is `flags_table()`: TrainConfig's fields
    with their help, as `--help` shows them (--update-golden rewrites it)."""
    from cnnlab.cli.parsing import flags_table

    page = DOCS / "training.md"
    text = page.read_text(encoding="utf-8")
    start = text.index(SETTINGS_START) + len(SETTINGS_START)
    end = text.index(SETTINGS_END)
    if request.config.getoption("--update-golden"):
        page.write_text(text[:start] + flags_table() + text[end:], encoding="utf-8")
        return
    assert text[start:end] == flags_table(), (
        "run pytest tests/test_docs.py --update-golden"
    )
