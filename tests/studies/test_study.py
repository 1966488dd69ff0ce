"""Studies end to end: study files, the store, skip and resume, concurrent writers."""

import sqlite3
import subprocess
from pathlib import Path

import pytest

import cnnlab
from cnnlab.errors import SpecError
from cnnlab.studies.layout import STORE_FILE
from cnnlab.studies.runner import run_study
from cnnlab.studies.store import Store
from cnnlab.studies.study import load_study, parse_study
from helpers import TINY_NET, cli_command, run_cli


def study_doc(name: str = "tiny", **train: object) -> dict:
    return {
        "name": name,
        "description": "two small nets, two seeds",
        "seeds": [0, 1],
        "train": {"epochs": 2, "train_limit": 1000, "val_size": 300, "test_limit": 500,
                  **train},
        "architectures": [
            "conv5-medium",
            {"label": "linear <b>", "spec": TINY_NET, "train": {"lr": 0.003}},
        ],
    }  # fmt: skip


def write_study(folder: Path, doc: dict) -> Path:
    import yaml

    path = folder / f"{doc['name']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_parse_study_resolves_labels_overrides_and_files(tmp_path: Path) -> None:
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "mine.yaml").write_text(
        "name: mine\nlayers: [Flatten, {Dense: {units: 10, activation: softmax}}]\n"
    )
    doc = study_doc()
    doc["architectures"].append("nets/mine.yaml")
    study = load_study(write_study(tmp_path, doc))
    assert [a.label for a in study.archs] == ["conv5-medium", "linear <b>", "mine"]
    assert study.archs[1].config.lr == 0.003 and study.archs[0].config.lr is None
    assert all(a.config.epochs == 2 for a in study.archs)
    trials = study.trials()
    assert [(t.label, t.seed) for t in trials[:3]] == [
        ("conv5-medium", 0), ("linear <b>", 0), ("mine", 0)]  # fmt: skip
    assert trials[0].run_dir(Path("s")) == Path("s/runs/conv5-medium-s0")
    assert trials[1].run_dir(Path("s")) == Path("s/runs/linear-b-s0")


@pytest.mark.parametrize(
    "change,phrases",
    [
        ({"seeds": [0, 0]}, ["seeds", "duplicates"]),
        ({"seeds": "one"}, ["seeds", "integers >= 0"]),
        ({"trian": {}}, ["unknown key 'trian'", "Did you mean 'train'"]),
        ({"train": {"epochs": 0}}, ["train", "epochs must be a positive integer"]),
        ({"train": {"seed": 3}}, ["train", "unknown key 'seed'"]),
        ({"architectures": []}, ["architectures", "non-empty list"]),
        ({"architectures": ["conv5-medium", "conv5-medium"]}, ["labels must be unique"]),
        ({"architectures": [{"preset": "conv5-medium", "file": "x.yaml"}]},
         ["architectures[0]", "exactly one of preset, file or spec"]),
        ({"architectures": ["conv9-huge"]}, ["unknown preset 'conv9-huge'"]),
        ({"name": "a b/c"}, ["name", "simple name"]),
    ],
    ids=["dup-seeds", "bad-seeds", "unknown-key", "zero-epochs", "seed-in-train",
         "no-archs", "dup-labels", "two-sources", "unknown-preset", "bad-name"],
)  # fmt: skip
def test_bad_study_documents(change: dict, phrases: list[str]) -> None:
    doc = study_doc() | change
    with pytest.raises(SpecError) as err:
        parse_study(doc, source="s.yaml")
    for phrase in phrases:
        assert phrase in str(err.value)


def test_builtin_studies_parse() -> None:
    quick = load_study("quickstart")
    assert len(quick.seeds) >= 2 and all(
        a.config.train_limit is None for a in quick.archs
    )
    seed = load_study("seed")
    assert len(seed.archs) == 9
    assert {a.config.validation for a in seed.archs} == {"test"}
    assert {a.config.epochs for a in seed.archs} == {12}


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("study")
    path = write_study(folder, study_doc())
    result = run_cli("study", str(path), "--out", "out", cwd=folder, check=True)
    return folder, result.out


@pytest.mark.slow
def test_study_runs_every_trial_into_the_store(
    finished_study: tuple[Path, str],
) -> None:
    folder, stdout = finished_study
    with Store(folder / "out" / "cnnlab.sqlite") as store:
        trials = store.trials("tiny")
        assert len(trials) == 4
        assert {t.status for t in trials} == {"completed"}
        assert all(len(t.history) == 2 for t in trials)
        assert all(
            t.test_acc is not None and t.train_clean_acc is not None for t in trials
        )
        medium = [t for t in trials if t.label == "conv5-medium"]
        assert medium[0].params == 118_258 and medium[0].test_acc > 0.5
        assert medium[0].test_acc != medium[1].test_acc  # seeds differ
        assert store.study("tiny").config["seeds"] == [0, 1]
    assert "conv5-medium" in stdout and "Report:" in stdout and "Wall time" in stdout
    report = folder / "out" / "tiny" / "report"
    csv_lines = (report / "table.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[1].startswith("conv5-medium,2,")
    md = (report / "report.md").read_text()
    assert "## Diagnosis" in md and "linear <b>" in md and "(figures/" in md
    page = (report / "report.html").read_text()
    assert "linear &lt;b&gt;" in page and "linear <b>" not in page


@pytest.mark.slow
def test_rerun_skips_finished_trials(finished_study: tuple[Path, str]) -> None:
    folder, _ = finished_study
    before = (
        folder / "out" / "tiny" / "runs" / "conv5-medium-s0" / "weights.pt"
    ).stat()
    result = run_cli("study", "tiny.yaml", "--out", "out", cwd=folder, check=True)
    assert result.err.count("already complete: skipped") == 4
    after = (folder / "out" / "tiny" / "runs" / "conv5-medium-s0" / "weights.pt").stat()
    assert before.st_mtime_ns == after.st_mtime_ns


@pytest.mark.slow
def test_runs_lists_and_filters(finished_study: tuple[Path, str]) -> None:
    folder, _ = finished_study
    out = run_cli(
        "runs", "--out", "out", "--arch", "conv5-medium", cwd=folder, check=True
    ).out
    assert out.count("completed") == 2 and "linear" not in out


@pytest.mark.slow
def test_report_rebuilds_from_the_store(finished_study: tuple[Path, str]) -> None:
    folder, _ = finished_study
    html = folder / "out" / "tiny" / "report" / "report.html"
    html.unlink()
    result = run_cli("report", "tiny", "--out", "out", cwd=folder, check=True)
    assert html.is_file() and "conv5-medium" in result.out
    report = cnnlab.open_report("tiny", out=folder / "out")
    shown = repr(report)  # one line in a REPL: what, how big, the best, where
    head = "<StudyReport 'tiny': 2 labels, 4 trials, best on val_acc: "
    assert shown.startswith(head) and shown.endswith("/tiny/report/report.md>")
    assert shown[len(head) :].split(";")[0] in ("conv5-medium", "linear <b>")
    assert "\n" not in shown and len(shown) < 200
    missing = run_cli("report", "nope", "--out", "out", cwd=folder)
    assert missing.code == 2 and "no study named 'nope'" in missing.err


@pytest.mark.slow
def test_changed_settings_are_refused_not_mixed(
    finished_study: tuple[Path, str],
) -> None:
    folder, _ = finished_study
    result = run_cli("study", "tiny.yaml", "--out", "out", "--train-limit", "900",
                    cwd=folder)  # fmt: skip
    assert result.code == 2
    assert "run with other settings (train_limit)" in result.err


@pytest.mark.slow
def test_two_studies_write_one_store_at_once(tmp_path: Path) -> None:
    paths = [
        write_study(tmp_path, study_doc(name, epochs=1)) for name in ("one", "two")
    ]
    # One process per study, each training in itself: two writers of one store.
    procs = [subprocess.Popen(cli_command("study", str(p), "--out", "shared",
                                          "--workers", "1"),
                              cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for p in paths]  # fmt: skip
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    db = sqlite3.connect(tmp_path / "shared" / "cnnlab.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    counts = dict(db.execute("SELECT study, COUNT(*) FROM trials WHERE status="
                             "'completed' GROUP BY study").fetchall())  # fmt: skip
    assert counts == {"one": 4, "two": 4}
    epochs = db.execute("SELECT COUNT(*) FROM epochs").fetchone()[0]
    assert epochs == 8


def test_a_nets_own_train_block_is_used_under_the_entrys(tmp_path: Path) -> None:
    """An architecture file with a `train:` block (a search's best.yaml) listed in a
    study trains with it, as `cnnlab train FILE` would; the entry's train: and the
    command's overrides go on top."""
    (tmp_path / "net.yaml").write_text(
        "name: mynet\ninput_shape: [28, 28, 1]\nlayers:\n  - Flatten: {}\n"
        "  - Dense: {units: 10, activation: softmax}\n"
        "train: {lr: 0.5, optimizer: sgd, epochs: 3}\n"
    )
    (tmp_path / "st.yaml").write_text(
        "name: st\nseeds: [0]\ntrain: {epochs: 1, train_limit: 300, val_size: 100}\n"
        "architectures: [net.yaml, {file: net.yaml, label: two, train: {lr: 0.1}}, "
        "conv5-tiny, fast]\n"
    )
    study = cnnlab.load_study(tmp_path / "st.yaml", epochs=2)
    configs = {a.label: a.config for a in study.archs}
    assert (configs["mynet"].optimizer, configs["mynet"].lr) == ("sgd", 0.5)
    assert (configs["two"].optimizer, configs["two"].lr) == ("sgd", 0.1)
    assert (configs["conv5-tiny"].optimizer, configs["conv5-tiny"].lr) == ("adam", None)
    assert configs["fast"].schedule == cnnlab.train_config("fast").schedule
    assert {c.epochs for c in configs.values()} == {2}  # the flag over everything
    assert {c.train_limit for c in configs.values()} == {300}  # the study's


def grey_digits_folder(root: Path, size: int = 28) -> Path:
    """root/train/<d>/*.png and root/test/<d>/*.png: ten classes of size x size
    greyscale squares, one brightness per class."""
    from PIL import Image

    for split, count in (("train", 3), ("test", 1)):
        for digit in range(10):
            folder = root / split / str(digit)
            folder.mkdir(parents=True)
            for i in range(count):
                image = Image.new("L", (size, size), 20 * digit + i)
                image.save(folder / f"{i}.png")
    return root


FIXED_NET = {"input_shape": [28, 28, 1], **TINY_NET}


def cross_doc(folder: Path, archs: list) -> dict:
    return {
        "name": "cross",
        "seeds": [0],
        "data": ["mnist", str(folder)],
        "train": {"epochs": 1, "train_limit": 20, "val_size": 5, "test_limit": 10},
        "architectures": archs,
    }


@pytest.mark.slow
def test_mnist_against_own_folder_when_the_shapes_agree(tmp_path: Path) -> None:
    folder = grey_digits_folder(tmp_path / "digits")
    archs = [{"label": "fixed", "spec": FIXED_NET}, "conv5-tiny"]
    study = parse_study(cross_doc(folder, archs), base_dir=tmp_path)
    outcomes = run_study(study, tmp_path / "out")
    assert [o.trial.label for o in outcomes] == [
        "fixed@mnist",
        "conv5-tiny@mnist",
        "fixed@digits",
        "conv5-tiny@digits",
    ]
    with Store(tmp_path / "out" / STORE_FILE) as store:
        trials = store.trials("cross")
    assert {t.status for t in trials} == {"completed"}
    # 28x28x1 and ten classes on both: the same nets, the same parameters
    assert sorted((t.label, t.params) for t in trials) == [
        ("conv5-tiny@digits", 412),
        ("conv5-tiny@mnist", 412),
        ("fixed@digits", 7850),
        ("fixed@mnist", 7850),
    ]


def test_mnist_against_own_folder_of_another_shape_is_one_error(
    tmp_path: Path,
) -> None:
    """In process; the command's one line is the bad-input case
    images-cross-study-shapes (tests/cli/test_bad_input.py)."""
    folder = grey_digits_folder(tmp_path / "digits", size=32)
    doc = cross_doc(folder, [{"label": "fixed", "spec": FIXED_NET}])
    study = parse_study(doc, source="cross.yaml", base_dir=tmp_path)
    with pytest.raises(SpecError) as caught:
        run_study(study, tmp_path / "out")
    assert str(caught.value) == (
        "cross.yaml: architectures[0].spec: input_shape is [28, 28, 1], but the "
        "images of digits are 32x32 with 1 channel. Set input_shape: [32, 32, 1] "
        "or train on data of that shape."
    )
    assert not (tmp_path / "out").exists()
