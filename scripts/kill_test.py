"""Kill studies with SIGKILL at random moments, resume them, and check nothing broke.

    python3 scripts/kill_test.py                 # >= 24 kills, about 5 minutes
    python3 scripts/kill_test.py --kills 40 --seed 7 --work /tmp/kills --keep

The study: conv5-tiny (with dropout) and a dense net, seeds 0 and 1, 2 epochs on
1,500 training images, one thread. It runs once without interruption (the
reference), then again under
fresh --out folders while killing its process (`cnnlab study ...`, SIGKILL to its
process group) and re-running the same command until one run finishes by itself.
Each launch's moment of death is drawn from a seeded RNG (same --seed, same plan):

    delay       a random time after the process started (imports, data, training)
    checkpoint  right after the k-th checkpoint.pt of the launch is renamed into
                place, plus 0-30 ms: the history and run.json writes behind it (and
                the curves' after the last epoch)
    run-json    right after a run.json changes (a run created, an epoch, the finish)
    store       right after the store's files change (a commit, maybe mid-commit)
    report      right after a report file or figure changes

After every kill: the store opens and passes `PRAGMA integrity_check`, and every
run.json, history.csv and checkpoint.pt in the folders reads back whole. After
each finished round: no trial or epoch row duplicated, missing or left 'running',
no temporary file left, every run folder whole (run.json parses, checkpoint.pt and
weights.pt load with weights_only=True, history.csv and the checkpoint agree with
the store), and every result equal to the reference's exactly: per-epoch losses and
accuracies, test and clean-train metrics, final weights and the comparison table
(timings aside). Rounds repeat until --kills kills are done. It prints its figures
and exits 1 if any difference was found.

tests/training/test_crash.py runs a short version (one round, ~7 kills) in the
test suite.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from PIL import Image

STUDY = "crash"
STORE = "cnnlab.sqlite"
METRICS = ("loss", "acc", "val_loss", "val_acc")
TRIAL_METRICS = ("test_loss", "test_acc", "train_clean_loss", "train_clean_acc")
TARGETS = {"delay": 3, "checkpoint": 3, "run-json": 1, "store": 3, "report": 2}
POLL_S = 0.001  # a rename is seen within about a millisecond
LAUNCH_TIMEOUT_S = 600


def study_doc(epochs: int, seeds: list[int], train_limit: int) -> dict[str, Any]:
    """Two small nets: one with dropout (RNG state matters), one dense-only."""
    dense = {"layers": ["Flatten", {"Dense": {"units": 32, "activation": "relu"}},
                        {"Dense": {"units": 10, "activation": "softmax"}}]}  # fmt: skip
    return {
        "name": STUDY,
        "description": "SIGKILL test: resumed results must equal uninterrupted ones",
        "seeds": seeds,
        # One thread: the same arithmetic in every process, however loaded the CPU.
        "train": {
            "epochs": epochs,
            "train_limit": train_limit,
            "val_size": 300,
            "test_limit": 500,
            "threads": 1,
        },  # fmt: skip
        "architectures": ["conv5-tiny", {"label": "dense", "spec": dense}],
    }


@dataclass
class Figures:
    """What the run did and found."""

    kills: int = 0
    resumes: int = 0
    launches: int = 0
    rounds: int = 0
    records: int = 0  # rows and files compared or read back
    mid_write: int = 0  # kills that left a temporary file: they hit a write
    differences: list[str] = field(default_factory=list)
    targets: Counter = field(default_factory=Counter)

    def report(self) -> str:
        spread = ", ".join(f"{k} {v}" for k, v in sorted(self.targets.items()))
        return "\n".join(
            [
                f"kills: {self.kills} ({spread})",
                f"resumes: {self.resumes} (launches {self.launches}, rounds "
                f"{self.rounds})",
                f"kills that hit a file write (left a temporary file): "
                f"{self.mid_write}",
                f"records checked: {self.records}",
                f"differences found: {len(self.differences)}",
                *(f"  - {d}" for d in self.differences),
            ]
        )


# ------------------------------------------------------------------ launching


def launch(study: Path, out: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as fh:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "cnnlab", "study", str(study), "--out", str(out)],
            cwd=study.parent,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as one
        )


def watched(out: Path, target: str) -> list[Path]:
    """The files whose change triggers a kill for `target`."""
    runs = out / STUDY / "runs"
    if target == "store":
        return [out / STORE, out / f"{STORE}-wal"]
    if target == "report":
        report = out / STUDY / "report"
        return [*_files(report), *_files(report / "figures")]
    name = "checkpoint.pt" if target == "checkpoint" else "run.json"
    return [d / name for d in _files(runs)]


def _files(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except FileNotFoundError:
        return []


def snapshot(paths: list[Path]) -> dict[Path, tuple[int, int, int]]:
    found = {}
    for path in paths:
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        found[path] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return found


def run_until_killed(
    proc: subprocess.Popen, out: Path, target: str, rng: random.Random, typical: float
) -> bool:
    """Kill `proc` at the moment `target` picks; False if it finished first."""
    started = time.monotonic()
    if target == "delay":
        deadline = started + rng.uniform(0.2, typical)
        changes_wanted, jitter = 0, 0.0
    else:
        deadline = started + LAUNCH_TIMEOUT_S
        changes_wanted = rng.randint(1, 4 if target == "store" else 2)
        jitter = rng.uniform(0, 0.03 if target == "checkpoint" else 0.005)
    seen = snapshot(watched(out, target))
    changes = 0
    while proc.poll() is None:
        now = time.monotonic()
        if changes_wanted:
            current = snapshot(watched(out, target))
            changes += sum(1 for p, s in current.items() if seen.get(p) != s)
            seen = current
        if (changes_wanted and changes >= changes_wanted) or now >= deadline:
            if jitter:
                time.sleep(jitter)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            return proc.returncode == -signal.SIGKILL
        time.sleep(POLL_S)
    return False


# ------------------------------------------------------------------- checking


def check_after_kill(out: Path, figures: Figures) -> list[Path]:
    """What a kill may never leave: a damaged store or a torn run file.

    Returns the temporary files it left (the writes it interrupted).
    """
    if (out / STORE).exists():
        db = sqlite3.connect(out / STORE)
        try:
            result = [r[0] for r in db.execute("PRAGMA integrity_check")]
            if result != ["ok"]:
                figures.differences.append(f"{out}: integrity_check says {result}")
        finally:
            db.close()
        figures.records += 1
    for run in _files(out / STUDY / "runs"):
        for name, read in (
            ("run.json", lambda p: json.loads(p.read_text())),
            ("history.csv", read_history_csv),
            ("checkpoint.pt", load_tensors),
            ("weights.pt", load_tensors),
        ):
            path = run / name
            if path.exists():
                figures.records += 1
                try:
                    read(path)
                except Exception as err:  # any failure to read back is a torn file
                    figures.differences.append(f"{path}: torn after a kill ({err!r})")
    return [p for p in out.rglob("*") if ".tmp" in p.name]


def load_tensors(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


def read_history_csv(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [{k: (float(v) if v else None) for k, v in row.items()} for row in rows]


@dataclass(frozen=True)
class Outcome:
    """Everything a finished study produced that must not depend on kills."""

    trials: dict[tuple[str, int], dict[str, Any]]  # (label, seed) -> row + history
    weights: dict[tuple[str, int], dict[str, torch.Tensor]]
    table: list[list[str]]  # table.csv without its timing column


def read_outcome(out: Path, figures: Figures) -> Outcome:
    """Read a finished study's store, run folders and report, checking each whole."""
    problems = figures.differences
    db = sqlite3.connect(out / STORE)
    db.row_factory = sqlite3.Row
    try:
        integrity = [r[0] for r in db.execute("PRAGMA integrity_check")]
        if integrity != ["ok"]:
            problems.append(f"{out}: integrity_check says {integrity}")
        if list(db.execute("PRAGMA foreign_key_check")):
            problems.append(f"{out}: foreign keys point at missing rows")
        rows = list(db.execute("SELECT * FROM trials WHERE study=?", (STUDY,)))
        trials = {}
        for row in rows:
            key = (row["label"], row["seed"])
            if key in trials:
                problems.append(f"{out}: trial {key} appears twice")
            sql = "SELECT * FROM epochs WHERE trial_id=? ORDER BY epoch"
            epochs = [dict(e) for e in db.execute(sql, (row["id"],))]
            trials[key] = dict(row) | {"history": epochs}
            figures.records += 1 + len(epochs)
    finally:
        db.close()
    weights = {}
    for key, trial in trials.items():
        if trial["status"] != "completed":
            problems.append(f"{out}: trial {key} left '{trial['status']}'")
        try:
            weights[key] = check_run_folder(
                Path(trial["run_path"]), out, trial, figures
            )
        except Exception as err:  # a missing or unreadable file
            problems.append(f"{trial['run_path']}: cannot be read back ({err!r})")
            weights[key] = {}
    leftovers = [p for p in out.rglob("*") if ".tmp" in p.name]
    problems += [f"{p}: temporary file left behind" for p in leftovers]
    return Outcome(trials, weights, read_report(out, figures))


def check_run_folder(
    run: Path, out: Path, trial: dict[str, Any], figures: Figures
) -> dict[str, torch.Tensor]:
    """One run folder read back whole and consistent with the store's row."""
    run = run if run.is_absolute() else out.parent / run
    problems, history = figures.differences, trial["history"]
    meta = json.loads((run / "run.json").read_text())
    if meta["status"] != "completed" or meta["epochs_done"] != len(history):
        problems.append(
            f"{run}/run.json: status {meta['status']}, epochs_done "
            f"{meta['epochs_done']}, the store has {len(history)} epochs"
        )
    if meta["test"] != {"loss": trial["test_loss"], "acc": trial["test_acc"]}:
        problems.append(f"{run}/run.json: test metrics differ from the store's")
    checkpoint = load_tensors(run / "checkpoint.pt")
    stored = [{k: e[k] for k in ("epoch", *METRICS, "seconds")} for e in history]
    if [dict(r) for r in checkpoint["history"]] != stored:
        problems.append(f"{run}/checkpoint.pt: history differs from the store's")
    csv_rows = read_history_csv(run / "history.csv")
    if [r | {"epoch": int(r["epoch"])} for r in csv_rows] != stored:
        problems.append(f"{run}/history.csv: differs from the store's history")
    with Image.open(run / "curves.png") as image:
        image.verify()
    yaml.safe_load((run / "spec.yaml").read_text())
    figures.records += 6
    return load_tensors(run / "weights.pt")


def read_report(out: Path, figures: Figures) -> list[list[str]]:
    report = out / STUDY / "report"
    page = (report / "report.html").read_text()
    if not page.endswith("</html>\n"):
        figures.differences.append(f"{report}/report.html: incomplete")
    if "## Machine" not in (report / "report.md").read_text():
        figures.differences.append(f"{report}/report.md: incomplete")
    for png in (report / "figures").glob("*.png"):
        with Image.open(png) as image:
            image.verify()
        figures.records += 1
    with open(report / "table.csv", newline="") as fh:
        table = list(csv.reader(fh))
    timing = table[0].index("s/epoch")
    figures.records += 3
    return [row[:timing] + row[timing + 1 :] for row in table]


def compare(
    reference: Outcome, resumed: Outcome, where: Path, figures: Figures
) -> None:
    """Every result of the killed-and-resumed study equals the reference's."""
    problems = figures.differences
    if set(resumed.trials) != set(reference.trials):
        problems.append(f"{where}: trials {sorted(resumed.trials)} != reference")
    for key in sorted(set(resumed.trials) & set(reference.trials)):
        a, b = reference.trials[key], resumed.trials[key]
        for name in TRIAL_METRICS:
            if a[name] != b[name]:
                problems.append(f"{where}: {key} {name} {b[name]!r} != {a[name]!r}")
        epochs_a = [tuple(e[k] for k in ("epoch", *METRICS)) for e in a["history"]]
        epochs_b = [tuple(e[k] for k in ("epoch", *METRICS)) for e in b["history"]]
        if epochs_a != epochs_b:
            problems.append(f"{where}: {key} history {epochs_b} != {epochs_a}")
        wa, wb = reference.weights[key], resumed.weights[key]
        if wa.keys() != wb.keys() or not all(torch.equal(wa[k], wb[k]) for k in wa):
            problems.append(f"{where}: {key} final weights differ")
        figures.records += len(TRIAL_METRICS) + len(epochs_a) + len(wa)
    if resumed.table != reference.table:
        problems.append(
            f"{where}: comparison table differs from the reference: "
            + table_difference(reference.table, resumed.table)
        )
    figures.records += len(reference.table)


def table_difference(reference: list[list[str]], resumed: list[list[str]]) -> str:
    """The first cells that differ, as 'row/column: reference -> resumed'."""
    if len(reference) != len(resumed):
        return f"{len(reference)} rows -> {len(resumed)} rows"
    headers = reference[0]
    cells = [
        f"{ra[0]}/{headers[j]}: {a!r} -> {b!r}"
        for ra, rb in zip(reference, resumed, strict=True)
        for j, (a, b) in enumerate(zip(ra, rb, strict=False))
        if a != b
    ]
    return "; ".join(cells[:4]) or "row lengths differ"


# -------------------------------------------------------------------- driving


def run_reference(study: Path, work: Path) -> tuple[Outcome, float]:
    """The uninterrupted study and its wall time."""
    started = time.monotonic()
    proc = launch(study, work / "reference", work / "reference.log")
    if proc.wait(LAUNCH_TIMEOUT_S) != 0:
        raise SystemExit(f"the reference study failed; see {work / 'reference.log'}")
    elapsed = time.monotonic() - started
    figures = Figures()
    outcome = read_outcome(work / "reference", figures)
    if figures.differences:
        raise SystemExit(f"the reference study is broken: {figures.differences}")
    return outcome, elapsed


def run_round(
    study: Path,
    out: Path,
    kills: int,
    rng: random.Random,
    typical: float,
    figures: Figures,
    verbose: bool = False,
    plan: list[str] | None = None,
) -> None:
    """Launch, kill, relaunch ... `kills` times, then let a launch finish.

    Each kill's moment is the next of `plan` while it lasts, else drawn at random.
    """
    log = out.with_suffix(".log")
    done = 0
    seen: set[Path] = set()  # temporary files earlier kills left
    while True:
        proc = launch(study, out, log)
        figures.launches += 1
        if done == kills:
            finished = proc.wait(LAUNCH_TIMEOUT_S) == 0
        else:
            if plan:
                target = plan.pop(0)
            else:
                target = rng.choices(list(TARGETS), weights=list(TARGETS.values()))[0]
            if run_until_killed(proc, out, target, rng, typical):
                done += 1
                figures.kills += 1
                figures.targets[target] += 1
                figures.resumes += 1  # the next launch resumes it
                left = [p for p in check_after_kill(out, figures) if p not in seen]
                seen.update(left)
                figures.mid_write += bool(left)
                if verbose:
                    names = ", ".join(str(p.relative_to(out)) for p in left)
                    hit = f", mid-write: {names}" if names else ""
                    print(f"{out.name}: kill {done} at {target}{hit}", flush=True)
                continue
            finished = proc.returncode == 0
        if not finished:
            raise SystemExit(f"a launch failed (exit {proc.returncode}); see {log}")
        return


def run(
    kills: int = 24,
    seed: int = 0,
    work: Path | None = None,
    per_round: int = 8,
    epochs: int = 2,
    seeds: tuple[int, ...] = (0, 1),
    train_limit: int = 1500,
    verbose: bool = False,
    targets: list[str] | None = None,
) -> Figures:
    """The whole test; returns its figures (differences empty when all is well).

    `targets` names the first kills' moments in order (say, one of each kind);
    the rest are drawn at random with the weights of TARGETS.
    """
    work = Path(work or tempfile.mkdtemp(prefix="cnnlab-kills-"))
    work.mkdir(parents=True, exist_ok=True)
    study = work / "crash.yaml"
    study.write_text(yaml.safe_dump(study_doc(epochs, list(seeds), train_limit)))
    reference, typical = run_reference(study, work)
    rng = random.Random(seed)
    figures = Figures()
    plan = list(targets or [])
    while figures.kills < kills:
        figures.rounds += 1
        out = work / f"killed-{figures.rounds}"
        budget = min(per_round, kills - figures.kills)
        run_round(study, out, budget, rng, typical, figures, verbose, plan)
        compare(reference, read_outcome(out, figures), out, figures)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=24, help="at least this many")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill plan")
    parser.add_argument("--per-round", type=int, default=8, help="kills per round")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--work", type=Path, help="working folder (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each kill")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="cnnlab-kills-"))
    started = time.monotonic()
    try:
        figures = run(args.kills, args.seed, work, args.per_round, args.epochs,
                      verbose=args.verbose)  # fmt: skip
    finally:
        if not args.keep and args.work is None:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    print(figures.report())
    print(f"time: {time.monotonic() - started:.0f} s (seed {args.seed})")
    return 1 if figures.differences else 0


if __name__ == "__main__":
    sys.exit(main())
