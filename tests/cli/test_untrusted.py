"""Untrusted files: hostile pickles and YAML tags run nothing, no string from a file
is evaluated, and a study's paths stay inside the folders it may read.

Every hostile payload would create a marker file; each test first shows the payload
is live (an unsafe loader runs it), then that cnnlab refuses the file with a clear
error and the marker never appears.
"""

from __future__ import annotations

import ast
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from cnnlab import api
from cnnlab.errors import RunError, SpecError
from cnnlab.nn.spec import load_architecture, parse_architecture
from cnnlab.studies.runner import run_study
from cnnlab.studies.study import load_study, parse_study
from cnnlab.training.config import TrainConfig
from cnnlab.training.runs import create_run
from helpers import ROOT, Result, run_cli, tiny_net_doc, write_tiny_net

SRC = ROOT / "src" / "cnnlab"
NET = tiny_net_doc("net")
CONFIG = TrainConfig(epochs=1, train_limit=200, val_size=50, test_limit=100)


class Exec:
    """Unpickling this runs Python code."""

    def __init__(self, marker: Path) -> None:
        self.code = f"import pathlib; pathlib.Path({str(marker)!r}).touch()"

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (self.code,))


class System:
    """Unpickling this runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.command = f"touch {shlex.quote(str(marker))}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


def assert_refused_cleanly(result: Result, *phrases: str) -> None:
    """Exit 2, one `error:` line saying why, no traceback."""
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    for phrase in phrases:
        assert phrase in lines[0]


# ------------------------------------------------------------- hostile pickles


def hostile_pickle(path: Path, payload: Any, as_checkpoint: bool) -> None:
    """A file shaped like a checkpoint (or a state dict) whose weights run code."""
    if as_checkpoint:
        obj = {"format": 1, "epoch": 1, "model": payload, "optimizer": {},
               "shuffle_rng": torch.zeros(1), "torch_rng": torch.zeros(1),
               "history": []}  # fmt: skip
    else:
        obj = {"0.weight": payload}
    torch.save(obj, path)


def assert_live(path: Path, marker: Path) -> None:
    """The payload works: loading the file with pickle runs it."""
    with open(path, "rb") as fh:
        try:
            torch.load(fh, weights_only=False)
        except Exception:  # the payload's return value is no tensor; it ran anyway
            pass
    assert marker.exists(), "the payload did not run: the test would prove nothing"
    marker.unlink()


@pytest.fixture
def run_folder(tmp_path: Path) -> Path:
    env = {"class_names": [str(i) for i in range(10)]}
    arch = parse_architecture(NET, source="net.yaml")
    return create_run(tmp_path / "run", arch, CONFIG, env).path


@pytest.mark.parametrize("payload", [Exec, System])
@pytest.mark.parametrize("name", ["checkpoint.pt", "weights.pt"])
def test_hostile_weights_are_refused_and_never_run(
    run_folder: Path, tmp_path: Path, name: str, payload: type
) -> None:
    marker = tmp_path / "pwned"
    hostile_pickle(run_folder / name, payload(marker), name == "checkpoint.pt")
    assert_live(run_folder / name, marker)

    with pytest.raises(RunError, match="cannot be read as a cnnlab checkpoint"):
        api.evaluate_run(run_folder)
    if name == "checkpoint.pt":
        with pytest.raises(RunError, match="cannot be read as a cnnlab checkpoint"):
            api.resume(run_folder)
    result = run_cli("evaluate", run_folder, cwd=tmp_path)
    assert_refused_cleanly(result, name, "cannot be read as a cnnlab checkpoint",
                           "could run code, so it is refused")  # fmt: skip
    assert not marker.exists()


def test_hostile_checkpoint_in_a_study_is_refused(tmp_path: Path) -> None:
    doc = {"name": "s", "seeds": [0], "architectures": [{"label": "net", "spec": NET}],
           "train": {"epochs": 1, "train_limit": 200, "val_size": 50,
                     "test_limit": 100}}  # fmt: skip
    study = parse_study(doc, source="s.yaml", base_dir=tmp_path)
    trial = study.trials()[0]
    run = create_run(trial.run_dir(tmp_path / "out" / "s"), trial.arch, trial.config,
                     {})  # fmt: skip
    marker = tmp_path / "pwned"
    hostile_pickle(run.path / "checkpoint.pt", Exec(marker), as_checkpoint=True)
    with pytest.raises(RunError, match="cannot be read as a cnnlab checkpoint"):
        run_study(study, tmp_path / "out")
    assert not marker.exists()


# ------------------------------------------------------------------ YAML tags

TAGS = {
    "apply-system": "!!python/object/apply:os.system [{shell}]",
    "apply-exec": "!!python/object/apply:builtins.exec [{code}]",
    "new-system": "!!python/object/new:os.system [{shell}]",
    "name": "!!python/name:os.system",
    "module": "!!python/module:os",
}


def tagged(tag: str, marker: Path) -> str:
    shell = json.dumps(f"touch {shlex.quote(str(marker))}")  # a YAML "string"
    code = json.dumps(f"import pathlib; pathlib.Path({str(marker)!r}).touch()")
    return TAGS[tag].format(shell=shell, code=code)


def assert_yaml_live(text: str, marker: Path, tag: str) -> None:
    """The document is hostile: PyYAML's unsafe loader runs (or imports) it."""
    yaml.unsafe_load(text)
    if tag.startswith(("apply", "new")):
        assert marker.exists(), "the payload did not run: the test would prove nothing"
        marker.unlink()


@pytest.mark.parametrize("tag", list(TAGS))
def test_yaml_tags_in_an_architecture_file_are_refused(
    tmp_path: Path, tag: str, cli: Any
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"name: {tagged(tag, marker)}\nlayers: [Flatten]\n")
    assert_yaml_live(path.read_text(), marker, tag)
    with pytest.raises(SpecError, match="invalid YAML"):
        load_architecture(path)
    assert_refused_cleanly(cli("summary", path), "invalid YAML")
    assert not marker.exists()


@pytest.mark.parametrize("tag", list(TAGS))
def test_yaml_tags_in_a_study_file_are_refused(
    tmp_path: Path, tag: str, cli: Any
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"name: evil\narchitectures:\n  - {tagged(tag, marker)}\n")
    assert_yaml_live(path.read_text(), marker, tag)
    with pytest.raises(SpecError, match=r"invalid YAML at line 3.*tags such as"):
        load_study(path)
    assert_refused_cleanly(cli("study", path, "--out", "out"), "invalid YAML")
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["study's net file", "run folder's spec.yaml"])
def test_yaml_tags_in_files_a_study_or_run_reads_are_refused(
    tmp_path: Path, run_folder: Path, where: str
) -> None:
    marker = tmp_path / "pwned"
    evil = f"name: {tagged('apply-system', marker)}\nlayers: [Flatten]\n"
    if where == "study's net file":
        (tmp_path / "net.yaml").write_text(evil)
        study = tmp_path / "s.yaml"
        study.write_text("name: s\narchitectures: [net.yaml]\n")
        with pytest.raises(SpecError, match="net.yaml: invalid YAML"):
            load_study(study)
    else:
        (run_folder / "spec.yaml").write_text(evil)
        with pytest.raises(SpecError, match="spec.yaml: invalid YAML"):
            api.evaluate_run(run_folder)
    assert not marker.exists()


# ------------------------------------------------------- no evaluated strings

# What turns data into code: none of it may appear in cnnlab's source.
FORBIDDEN_NAMES = {"eval", "exec", "compile", "__import__", "breakpoint"}
FORBIDDEN_CALLS = {"pickle.load", "pickle.loads", "pickle.Unpickler", "marshal.loads",
                   "yaml.load", "yaml.unsafe_load", "yaml.full_load",
                   "importlib.import_module", "os.system", "subprocess.run",
                   "subprocess.Popen"}  # fmt: skip


def _keyword(call: ast.Call, name: str) -> object:
    found = [k.value for k in call.keywords if k.arg == name]
    return getattr(found[0], "value", None) if found else None


def test_the_source_evaluates_no_strings_and_loads_safely() -> None:
    """No eval/exec/pickle/unsafe YAML; torch.load and np.load only safely."""
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.name}:{getattr(node, 'lineno', 0)}"
            if not isinstance(node, ast.Call):
                continue
            func = ast.unparse(node.func)
            if func in FORBIDDEN_NAMES or func in FORBIDDEN_CALLS:
                problems.append(f"{where}: {func}()")
            if func == "torch.load" and _keyword(node, "weights_only") is not True:
                problems.append(f"{where}: torch.load without weights_only=True")
            if func.endswith("np.load") and _keyword(node, "allow_pickle") is True:
                problems.append(f"{where}: np.load(allow_pickle=True)")
    assert not problems, problems


@pytest.mark.parametrize(
    "layer",
    [
        {"type": "__import__('os').system('touch pwned')"},
        {"Dense": {"units": 10, "activation": "__import__('os').system('touch pwned')"}},
        {"Conv2D": {"filters": "__import__('os').getpid()", "kernel_size": 3}},
        {"Dense": {"units": "lambda: 10"}},
    ],
)  # fmt: skip
def test_strings_that_look_like_code_are_names_not_code(
    layer: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError):
        parse_architecture({"layers": ["Flatten", layer]})
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------- paths in study files


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """home/study/ (the study's folder, with nets/), home/shared/, home/data/."""
    for folder in ("study/nets", "shared", "data"):
        (tmp_path / folder).mkdir(parents=True)
    for path in ("study/nets/in.yaml", "shared/out.yaml", "study/in.yaml"):
        write_tiny_net(tmp_path / path)
    return tmp_path


def study_at(tree: Path, text: str) -> Path:
    path = tree / "study" / "s.yaml"
    path.write_text("name: s\n" + text)
    return path


@pytest.mark.parametrize(
    "entry",
    ["nets/in.yaml", "./nets/../nets/in.yaml", "in.yaml", "{file: nets/in.yaml}",
     "'{study}/nets/in.yaml'"],
)  # fmt: skip
def test_paths_inside_the_study_folder_are_read(tree: Path, entry: str) -> None:
    entry = entry.replace("{study}", str(tree / "study"))
    study = load_study(study_at(tree, f"architectures: [{entry}]\n"))
    assert study.archs[0].arch.name == "net"


@pytest.mark.parametrize(
    "entry,shown",
    [
        ("../shared/out.yaml", "shared/out.yaml"),
        ("nets/../../shared/out.yaml", "shared/out.yaml"),
        ("'{home}/shared/out.yaml'", "shared/out.yaml"),
        ("{file: ../shared/out.yaml}", "shared/out.yaml"),
        ("{file: ../../../../../../etc/passwd}", "/etc/passwd"),
        ("/etc/passwd", "/etc/passwd"),
        ("nets/link.yaml", "shared/out.yaml"),
    ],
    ids=["dotdot", "dotdot-inside", "absolute", "file-key", "deep-dotdot",
         "absolute-system", "symlink"],
)  # fmt: skip
def test_paths_leaving_the_study_folder_are_refused(
    tree: Path, entry: str, shown: str, cli: Any
) -> None:
    (tree / "study" / "nets" / "link.yaml").symlink_to(tree / "shared" / "out.yaml")
    entry = entry.replace("{home}", str(tree))
    path = study_at(tree, f"architectures: [{entry}]\n")
    with pytest.raises(SpecError) as err:
        load_study(path)
    message = str(err.value)
    assert "architectures[0]" in message and shown in message
    assert f"outside the study's folder {tree / 'study'}" in message
    assert "allow_paths" in message  # the way to allow it
    assert_refused_cleanly(cli("study", path), "outside")  # cli runs in tree


def test_allow_paths_opens_named_folders_only(tree: Path) -> None:
    text = "allow_paths: [../shared]\narchitectures: [../shared/out.yaml]\n"
    assert load_study(study_at(tree, text)).archs[0].arch.name == "net"
    (tree / "elsewhere").mkdir()
    write_tiny_net(tree / "elsewhere" / "x.yaml")
    text = "allow_paths: [../shared]\narchitectures: [../elsewhere/x.yaml]\n"
    with pytest.raises(SpecError, match="or the allowed .*shared. A study reads"):
        load_study(study_at(tree, text))
    # A caller that trusts its input (a CLI flag) may allow folders too.
    text = "architectures: [../elsewhere/x.yaml]\n"
    study = load_study(study_at(tree, text), allow=[tree / "elsewhere"])
    assert study.archs[0].arch.name == "net"


def test_allow_paths_resolve_from_the_study_folder_not_the_cwd(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tree / "shared")
    text = "allow_paths: [../shared]\narchitectures: [../shared/out.yaml]\n"
    assert load_study(study_at(tree, text)).archs[0].arch.name == "net"


@pytest.mark.parametrize("value", ["[[a]]", "shared", "[1]", "['']"])
def test_bad_allow_paths(tree: Path, value: str) -> None:
    path = study_at(tree, f"allow_paths: {value}\narchitectures: [conv5-tiny]\n")
    with pytest.raises(SpecError, match="allow_paths: must be a list of folders"):
        load_study(path)


@pytest.mark.parametrize(
    "data,ok",
    [("data", True), ("./data/../data", True), ("../data", False),
     ("'{home}/data'", False), ("/", False), ("mnist", True)],
)  # fmt: skip
def test_data_folders_follow_the_same_rule(tree: Path, data: str, ok: bool) -> None:
    (tree / "study" / "data").mkdir()
    data = data.replace("{home}", str(tree))
    path = study_at(tree, f"data: {data}\narchitectures: [conv5-tiny]\n")
    if ok:
        resolved = load_study(path).archs[0].config.data
        assert resolved in ("mnist", str(tree / "study" / "data"))
    else:
        with pytest.raises(SpecError, match=r"data: .* outside the study's folder"):
            load_study(path)
    allowed = study_at(tree, f"allow_paths: [..]\ndata: {data}\narchitectures: [4]\n")
    if data != "/":
        assert load_study(allowed).archs[0].config.data != ""


@pytest.mark.parametrize(
    "entry",
    ["{preset: ../../../../../../etc/passwd}", "{preset: ../studies/seed}",
     "{preset: [conv5-tiny]}", "{preset: true}", "conv9-huge"],
)  # fmt: skip
def test_presets_are_names_never_paths(tree: Path, entry: str) -> None:
    with pytest.raises(SpecError, match="preset"):
        load_study(study_at(tree, f"architectures: [{entry}]\n"))


def test_unusable_paths_are_errors(tree: Path) -> None:
    with pytest.raises(SpecError, match="architectures.*not a usable path"):
        load_study(study_at(tree, 'architectures: ["a\\0b.yaml"]\n'))
    with pytest.raises(SpecError, match="File name too long"):
        load_study(study_at(tree, f"architectures: ['{'x' * 5000}.yaml']\n"))


# --------------------------------------------- oversized and hostile values


def laughs(levels: int, width: int = 10) -> str:
    """YAML aliases nesting shared lists: `levels` deep, width**levels leaves."""
    lines = ["a0: &a0 [lol]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines)


@pytest.mark.parametrize(
    "key", ["seeds", "name", "description", "architectures", "allow_paths", "data"]
)
def test_a_yaml_bomb_in_a_study_fails_fast_and_short(tmp_path: Path, key: str) -> None:
    bomb = yaml.safe_load(laughs(9))["a9"]  # 10**9 leaves if ever expanded
    doc = {"name": "s", "architectures": ["conv5-tiny"]} | {key: bomb}
    started = time.monotonic()
    with pytest.raises(SpecError) as err:
        parse_study(doc, source="s.yaml", base_dir=tmp_path)
    assert time.monotonic() - started < 5 and len(str(err.value)) < 500


@pytest.mark.parametrize(
    "text",
    ["name: 2001-02-30\narchitectures: [4]", "name: !!bool x\narchitectures: [4]",
     "name: !!timestamp x\narchitectures: [4]", "name: !!int x\narchitectures: [4]",
     "architectures: " + "[" * 3000 + "]" * 3000, "seeds: 1" + "0" * 5000],
    ids=["bad-date", "bad-bool", "bad-timestamp", "bad-int", "deep", "long-int"],
)  # fmt: skip
def test_yaml_the_loader_chokes_on_is_invalid_yaml(tmp_path: Path, text: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text + "\n")
    with pytest.raises(SpecError, match="invalid YAML"):
        load_study(path)


@pytest.mark.parametrize(
    "labels,phrase",
    [(["a b", "a-b"], "share the run folder name 'a-b'"),
     (["Net", "net"], "share the run folder name"),
     (["x" * 101, "y"], "too long for a folder name"),
     (["a\nb", "c"], "one line")],
)  # fmt: skip
def test_labels_must_name_distinct_folders(labels: list[str], phrase: str) -> None:
    doc = {"name": "s", "architectures": [{"preset": "4", "label": x} for x in labels]}
    with pytest.raises(SpecError, match=phrase):
        parse_study(doc, source="s.yaml")


# ------------------------------------ found here, in files other people own


def test_a_yaml_bomb_in_an_architecture_fails_fast(tmp_path: Path) -> None:
    anchors = ", ".join(line.split(": ", 1)[1] for line in laughs(9).splitlines())
    path = tmp_path / "bomb.yaml"  # units is checked first, use_bias holds the bomb
    path.write_text(f"layers: [{{Dense: {{use_bias: [{anchors}], units: *a9}}}}]\n")
    code = ("import sys; from cnnlab.nn.spec import load_architecture\n"
            "try: load_architecture(sys.argv[1])\n"
            "except Exception as err: print(type(err).__name__, len(str(err)))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code, str(path)],
                            capture_output=True, text=True, timeout=10)  # fmt: skip
    name, length = result.stdout.split()
    assert name == "SpecError" and int(length) < 500


def test_architecture_yaml_the_loader_chokes_on_is_invalid_yaml(
    tmp_path: Path,
) -> None:
    path = tmp_path / "net.yaml"
    path.write_text("name: 2001-02-30\nlayers: [Flatten]\n")
    with pytest.raises(SpecError, match="invalid YAML"):
        load_architecture(path)
