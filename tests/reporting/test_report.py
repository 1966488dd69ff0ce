"""Reports built from a store (no training), checked as files and in real Chromium."""

import base64
import io
import re
from pathlib import Path

import pytest
from PIL import Image

from cnnlab.reporting.report import build_report
from cnnlab.studies.results import StudyInfo
from cnnlab.studies.store import Store
from helpers import run_chromium

HOSTILE = "<script>alert(1)</script>"


def fill_store(path: Path) -> None:
    """A study of 3 labels x 2 seeds with histories of known shape."""
    with Store(path) as store:
        store.save_study(StudyInfo("demo", "a <demo> study", {"seeds": [0, 1]},
                                   {"device": "cpu"}), "2026-11-24T00:00:00")  # fmt: skip
        shapes = {  # label -> (train losses, val losses, test acc)
            "good": ([0.3, 0.1, 0.06, 0.04], [0.12, 0.07, 0.05, 0.04], 0.990),
            "overfit": ([0.2, 0.05, 0.02, 0.005], [0.06, 0.05, 0.07, 0.09], 0.985),
            HOSTILE: ([1.9, 1.2, 1.0, 0.9], [1.5, 1.1, 0.9, 0.85], 0.80),
        }
        for label, (train, val, acc) in shapes.items():
            for seed in (0, 1):
                jitter = 0.002 * seed
                trial_id = store.save_trial("demo", label, seed, {
                    "arch_name": label, "optimizer": "adam", "params": 1000 * len(label),
                    "flops": 10_000 * len(label), "spec": {}, "config": {},
                    "run_path": f"runs/{seed}", "status": "completed",
                    "updated": "2026-11-24T00:00:00", "test_acc": acc + jitter,
                    "test_loss": val[-1], "train_clean_acc": acc + 0.005,
                    "train_clean_loss": train[-1] * 0.8,
                })  # fmt: skip
                store.save_epochs(trial_id, [
                    {"epoch": i + 1, "loss": t + jitter, "acc": 1 - t / 2,
                     "val_loss": v + jitter, "val_acc": 1 - v / 2, "seconds": 1.0}
                    for i, (t, v) in enumerate(zip(train, val, strict=True))
                ])  # fmt: skip


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    fill_store(folder / "cnnlab.sqlite")
    with Store(folder / "cnnlab.sqlite") as store:
        build_report(store, "demo", folder / "report")
    return folder / "report"


def test_report_files_and_contents(report_dir: Path) -> None:
    md = (report_dir / "report.md").read_text()
    assert "| good | 2 |" in md and "## The notebook's conclusion table" in md
    assert "**overfit: overfitting.**" in md
    assert "Welch" in md
    figures = sorted(p.name for p in (report_dir / "figures").iterdir())
    assert "acc_vs_params.png" in figures and "val_loss.png" in figures
    for name in figures:
        assert f"(figures/{name})" in md
    csv = (report_dir / "table.csv").read_text().splitlines()
    assert len(csv) == 4


def test_html_escapes_user_strings_and_embeds_images(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text()
    assert HOSTILE not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a &lt;demo&gt; study" in page
    assert 'src="figures/' not in page  # nothing to fetch: all embedded
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(list((report_dir / "figures").iterdir()))
    for data in images:
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.verify()


def test_report_renders_in_chromium(report_dir: Path, tmp_path: Path) -> None:
    page = report_dir / "report.html"
    dom = run_chromium(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    html = dom.stdout
    rows = re.findall(r"<tr>", html.split('class="comparison"')[1].split("</table>")[0])
    assert len(rows) == 1 + 3  # header + one row per architecture
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown as text
    assert "<script>" not in html  # and nothing became a script element
    assert html.count("<img") == len(list((report_dir / "figures").iterdir()))

    shot = tmp_path / "report.png"
    result = run_chromium(page, tmp_path, f"--screenshot={shot}",
                           "--window-size=1280,4000", "--hide-scrollbars")  # fmt: skip
    assert result.returncode == 0 and shot.is_file(), result.stderr
    image = Image.open(shot).convert("L")
    assert image.size == (1280, 4000)
    lo, hi = image.getextrema()
    assert hi - lo > 200  # text and figures, not a blank page
    assert len(image.resize((64, 256)).getcolors(256) or []) > 20
