"""Jupyter as a front end: examples/notebook-study.ipynb executed in a real kernel,
cnnlab.train, run_study and run_search each called in one, and the pieces that make
it work (inline curves, quiet progress outside a notebook)."""

import base64
import importlib.util
import io
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import cnnlab
from cnnlab.training import progress
from cnnlab.training.loop import History
from cnnlab.training.progress import (
    NotebookReporter,
    default_reporter,
    default_study_progress,
    in_notebook,
)
from helpers import ROOT, TINY_NET_YAML

NOTEBOOK = ROOT / "examples" / "notebook-study.ipynb"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_plot_history_returns_a_path_that_shows_inline(tmp_path: Path) -> None:
    history = History([{"epoch": 1, "loss": 0.9, "acc": 0.7, "val_loss": 0.6}])
    target = tmp_path / "curves.png"
    curves = cnnlab.plot_history(history, target)
    assert Path(curves) == target and str(curves) == str(target)
    with open(curves, "rb") as fh:
        assert fh.read() == curves._repr_png_()
    assert curves._repr_png_().startswith(PNG_SIGNATURE)


def test_no_progress_outside_a_notebook_and_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a pipe: not a terminal
    assert not in_notebook()
    assert default_reporter("Run folder: runs/x") is None
    assert default_study_progress() is None


def test_notebook_reporter_redraws_one_line_and_prints_epochs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("IPython", reason="IPython comes with the test extra")
    shown: list[dict[str, str]] = []

    class Handle:
        def update(self, data: dict[str, str], raw: bool) -> None:
            shown.append(data)

    def display(data: dict[str, str], raw: bool, display_id: bool) -> Handle:
        shown.append(data)
        return Handle()

    monkeypatch.setattr("IPython.display.display", display)
    clock = iter([0.0, 1.0, 2.0, 2.5])  # epoch start, then each report
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=clock.__next__))
    reporter = NotebookReporter("Run folder: runs/x")
    reporter.epoch_start(1, 2, 3, 300)
    for step in (1, 2, 3):  # the loop decides when to report: each one is drawn
        reporter.step(step, 100 * step, 0.5, 0.8)
    reporter.epoch_end({"epoch": 1, "seconds": 2.6, "loss": 0.5, "acc": 0.8})
    assert [d["text/plain"].split(" [")[0] for d in shown] == ["Epoch 1/2"] * 4
    assert "1/3" in shown[1]["text/plain"] and "eta 0m02s" in shown[1]["text/plain"]
    assert "3/3" in shown[-1]["text/plain"] and "<progress" in shown[-1]["text/html"]
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        "Run folder: runs/x",
        "Epoch 1/2 - 2.6s - loss: 0.5000 - acc: 0.8000",
    ]


# The notebook, executed headless -------------------------------------------------


def code_cell(notebook: Any, text: str, whole: bool = False) -> Any:
    """The one code cell whose source contains `text` (or is `text`, if whole)."""
    found = [
        c
        for c in notebook.cells
        if c.cell_type == "code" and (c.source == text if whole else text in c.source)
    ]
    assert len(found) == 1, f"{len(found)} cells contain {text!r}"
    return found[0]


def streamed(cell: Any) -> str:
    """The cell's printed text (stdout and stderr)."""
    return "".join(o.text for o in cell.outputs if o.output_type == "stream")


def shown(cell: Any, mime: str) -> list[str]:
    """The `mime` data of the cell's displays and results."""
    kinds = ("display_data", "execute_result")
    return [
        o.data[mime] for o in cell.outputs if o.output_type in kinds and mime in o.data
    ]


def execute(folder: Path) -> Any:
    """The example notebook run top to bottom in a python3 kernel working in folder."""
    import nbclient
    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
    )
    return client.execute()


@pytest.fixture(scope="module")
def kernel_run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One python3 kernel (its start and imports cost seconds) working in a folder
    of its own: the example notebook top to bottom, then, in the folder's `api`
    subfolder, the cells of the API notebook below (when optuna, the search extra,
    is there). Each notebook's executed cells, and its folder."""
    for module in ("nbformat", "nbclient", "ipykernel"):
        pytest.importorskip(
            module, reason="comes with the test extra: pip install -e '.[test]'"
        )
    import nbclient
    import nbformat

    folder = tmp_path_factory.mktemp("notebook")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    ends = len(notebook.cells)  # where the example's cells end
    api = folder / API_FOLDER
    with_api = importlib.util.find_spec("optuna") is not None
    if with_api:
        api.mkdir()
        (api / "net.yaml").write_text(TINY_NET_YAML)
        (api / "study.yaml").write_text(STUDY_FILE)
        (api / "search.yaml").write_text(SEARCH_FILE)
        cells = [CHDIR_CELL, CLOCK_CELL, *API_CELLS.values(), "study"]
        notebook.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
    )
    executed = client.execute()
    nbformat.write(executed, folder / "executed.ipynb")  # to read when a test fails
    api_cells = nbformat.v4.new_notebook(cells=executed.cells[ends:])
    return SimpleNamespace(
        example=nbformat.v4.new_notebook(cells=executed.cells[:ends]),
        folder=folder,
        api=api_cells if with_api else None,
        api_folder=api,
    )


@pytest.fixture(scope="module")
def executed(kernel_run: SimpleNamespace) -> tuple[Any, Path]:
    """The executed example notebook and the folder its runs and study were
    written to."""
    return kernel_run.example, kernel_run.folder


@pytest.mark.slow
def test_training_shows_progress_and_epoch_lines(executed: tuple[Any, Path]) -> None:
    notebook, folder = executed
    cell = code_cell(notebook, "cnnlab.train(")
    text = streamed(cell)
    assert "Run folder: runs/conv3-small" in text
    assert "Epoch 1/2 - " in text and "Epoch 2/2 - " in text and "val_acc: " in text
    lines = shown(cell, "text/plain")
    assert lines and all(line.startswith("Epoch ") for line in lines)
    assert any("<progress" in line for line in shown(cell, "text/html"))
    assert (folder / "runs" / "conv3-small" / "curves.png").is_file()


@pytest.mark.slow
def test_results_render_as_html_and_curves_as_png(executed: tuple[Any, Path]) -> None:
    notebook, _ = executed
    (table,) = shown(code_cell(notebook, "result", whole=True), "text/html")
    assert "<table" in table and "test accuracy" in table
    (png,) = shown(code_cell(notebook, "cnnlab.plot_history("), "image/png")
    assert base64.b64decode(png).startswith(PNG_SIGNATURE)


@pytest.mark.slow
def test_study_report_renders_and_is_written(executed: tuple[Any, Path]) -> None:
    notebook, folder = executed
    (page,) = shown(code_cell(notebook, "report", whole=True), "text/html")
    assert "<table" in page and "conv5-medium" in page and "data:image/png" in page
    reports = list(folder.glob("studies/**/report.html"))
    assert len(reports) == 1 and (reports[0].parent / "report.md").is_file()
    assert "report.html" in streamed(code_cell(notebook, "cnnlab.open_report("))


@pytest.mark.slow
def test_study_shows_each_trial_and_its_epochs(executed: tuple[Any, Path]) -> None:
    notebook, _ = executed
    cell = code_cell(notebook, "cnnlab.run_study(")
    text = streamed(cell)
    assert "Study quickstart: 6 trials" in text
    assert "Trial 1/6: conv5-tiny, seed 0" in text and "Trial 6/6:" in text
    assert text.count("Epoch 1/1 - ") == 6
    assert any(line.startswith("Trial ") for line in shown(cell, "text/plain"))


# train, run_study and run_search in a kernel, on a few MNIST images -------------

# The kernel's clock, injected: every reading of time.monotonic by the training loop
# and the displays is a quarter second after the last, so what is drawn (reports,
# rates, ETAs) does not depend on the machine's speed or load.
CLOCK_CELL = """\
import itertools, time, types
from cnnlab.training import loop, progress
readings = itertools.count(0.0, 0.25)
clock = types.SimpleNamespace(monotonic=lambda: next(readings),
                              perf_counter=time.perf_counter)
loop.time = progress.time = clock
import cnnlab"""
# After the example, in the same kernel: the API cells work in a folder of their own.
API_FOLDER = "api"
CHDIR_CELL = f"import os\nos.chdir({API_FOLDER!r})"
TINY = "train_limit=400, val_size=100, test_limit=100"
API_CELLS = {
    "train": "result = cnnlab.train('net.yaml', cnnlab.TrainConfig(epochs=1, "
    + TINY
    + "), out='runs/net')",
    "run_study": "study = cnnlab.run_study(cnnlab.load_study('study.yaml'), 'studies')",
    "run_search": "found = cnnlab.run_search('search.yaml', 'studies')",
}
STUDY_FILE = """\
name: nb
seeds: [0, 1]
train: {epochs: 1, train_limit: 400, val_size: 100, test_limit: 100}
architectures: [{label: net, spec: {layers: [Flatten, {Dense: {units: 10}}]}}]
"""
SEARCH_FILE = """\
name: hunt
seeds: [0]
train: {epochs: 1, train_limit: 400, val_size: 100, test_limit: 100}
search:
  sampler: grid
  finalists: 1
  space: {units: {choice: [4, 8]}}
  architecture:
    layers: [Flatten, {Dense: {units: $units, activation: relu}},
             {Dense: {units: 10, activation: softmax}}]
"""


@pytest.fixture(scope="module")
def api_notebook(kernel_run: SimpleNamespace) -> tuple[Any, Path]:
    """The cells calling cnnlab.train, run_study and run_search (with the injected
    clock), executed after the example in its kernel, and their folder."""
    if kernel_run.api is None:
        pytest.skip("needs optuna: comes with the search extra")
    return kernel_run.api, kernel_run.api_folder


# The progress line as the kernel last drew it: "Epoch e/E [bar] steps - rate - ..."
EPOCH_LINE = (
    r"Epoch 1/1 \[=+\] (?P<steps>\d+)/(?P=steps) - [\d,]+ samples/s - \d+\.\ds - "
    r"loss \d\.\d{4} - acc \d\.\d{4}"
)


@pytest.mark.slow
def test_train_in_a_kernel_draws_its_epoch_and_prints_its_line(
    api_notebook: tuple[Any, Path],
) -> None:
    notebook, folder = api_notebook
    cell = code_cell(notebook, API_CELLS["train"], whole=True)
    printed = streamed(cell).splitlines()
    assert printed[0] == "Run folder: runs/net"
    assert re.fullmatch(
        r"Epoch 1/1 - \d+\.\ds - loss: \d\.\d{4} - acc: \d\.\d{4} - "
        r"val_loss: \d\.\d{4} - val_acc: \d\.\d{4}",
        printed[1],
    ), printed
    (line,) = shown(cell, "text/plain")  # one line, redrawn in place
    assert re.fullmatch(EPOCH_LINE, line), line
    assert (folder / "runs" / "net" / "run.json").is_file()


@pytest.mark.slow
def test_run_study_in_a_kernel_shows_each_trial(
    api_notebook: tuple[Any, Path],
) -> None:
    notebook, _ = api_notebook
    cell = code_cell(notebook, API_CELLS["run_study"], whole=True)
    printed = streamed(cell).splitlines()
    trials = [line for line in printed if line.startswith("Trial ")]
    assert trials == ["Trial 1/2: net, seed 0", "Trial 2/2: net, seed 1"]
    assert "Study nb: 2 trials" in printed
    assert sum(line.startswith("Epoch 1/1 - ") for line in printed) == 2
    lines = shown(cell, "text/plain")
    assert len(lines) == 2, lines  # one progress line per trial
    for k, line in enumerate(lines, start=1):
        prefix = rf"Trial {k}/2 - (study eta ~\d+m\d\ds - )?"
        assert re.fullmatch(prefix + EPOCH_LINE, line), line
    (table,) = shown(code_cell(notebook, "study", whole=True), "text/html")
    assert "<table" in table and "net" in table


@pytest.mark.slow
def test_run_search_in_a_kernel_shows_candidates_then_finalists(
    api_notebook: tuple[Any, Path],
) -> None:
    notebook, folder = api_notebook
    cell = code_cell(notebook, API_CELLS["run_search"], whole=True)
    printed = streamed(cell).splitlines()
    candidates = [line for line in printed if line.startswith("Candidate ")]
    assert [line.split()[1] for line in candidates] == ["1/2", "2/2"], printed
    assert all(": val_loss " in line and "| best " in line for line in candidates)
    # Candidates are quiet (the search says which one runs): no study header or
    # trial line of their own; the final stage is an ordinary study.
    final = printed.index("Final stage: 1 net(s) x 1 seeds")
    assert not any(line.startswith(("Study ", "Trial ")) for line in printed[:final])
    assert "Study hunt-final: 1 trials" in printed[final:]
    assert any(line.startswith("Trial 1/1: ") for line in printed[final:])
    epochs = [line for line in printed if line.startswith("Epoch 1/1 - ")]
    assert len(epochs) == 3  # two candidates, one finalist
    for line in shown(cell, "text/plain"):
        assert re.fullmatch(
            r"(Trial 1/1 - (study eta ~\d+m\d\ds - )?)?" + EPOCH_LINE, line
        )
    assert (folder / "studies" / "hunt" / "best.yaml").is_file()
    assert (folder / "studies" / "hunt" / "report" / "report.md").is_file()


if __name__ == "__main__":
    # python3 tests/cli/test_notebook.py: re-execute the example and save its outputs
    # (in a temporary folder, so the saved outputs show relative paths only).
    import tempfile

    import nbformat

    with tempfile.TemporaryDirectory() as tmp:
        nbformat.write(execute(Path(tmp)), NOTEBOOK)
    print(f"wrote {NOTEBOOK}")
