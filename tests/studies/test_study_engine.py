"""The study engine as a user meets it: the Python study API, one status vocabulary,
and the defects the one-runner rebuild fixed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

import cnnlab
from cnnlab.training.status import Status
from helpers import TINY_NET, Result, error_line

SMALL = {"epochs": 1, "train_limit": 1000, "test_limit": 200, "val_size": 200}


def write_study(path: Path, archs: list, seeds: list[int], **train: object) -> Path:
    doc = {"name": "s", "seeds": seeds, "train": SMALL | train, "architectures": archs}
    path.write_text(yaml.safe_dump(doc))
    return path


def test_duplicate_seeds_from_the_flag_are_refused_like_the_files(
    tmp_path: Path, cli: Callable[..., Result]
) -> None:
    study = write_study(tmp_path / "s.yaml", [{"label": "a", "spec": TINY_NET}], [0])
    result = cli("study", study, "--seeds", "0,0", "--out", tmp_path / "out")
    error_line(result, "--seeds: has duplicates: [0, 0]", "Give each seed once")
    assert not (tmp_path / "out").exists()  # refused before any file is written
    with pytest.raises(cnnlab.SpecError, match="has duplicates"):
        cnnlab.load_study(study, seeds=[1, 1])


@pytest.mark.slow
def test_a_diverged_trial_is_failed_everywhere_and_listed(
    tmp_path: Path, cli: Callable[..., Result]
) -> None:
    """run.json, the store and `cnnlab runs --status failed` agree."""
    archs = [{"label": "wild", "preset": "conv5-tiny"}]
    study = write_study(tmp_path / "s.yaml", archs, [0], optimizer="sgd", lr=1e30)
    out = tmp_path / "out"
    ran = cli("study", study, "--out", out)
    assert ran.code == 2 and "Traceback" not in ran.err  # after the progress lines:
    assert ran.err.splitlines()[-1].startswith("error: ")
    assert "training diverged at epoch 1" in ran.err
    run_json = json.loads((out / "s" / "runs" / "wild-s0" / "run.json").read_text())
    assert run_json["status"] == Status.FAILED
    listed = cli("runs", "--out", out, "--status", "failed")
    assert listed.code == 0, listed.err
    assert "wild" in listed.out and "failed" in listed.out
    assert [r["status"] for r in cnnlab.list_trials(out)] == ["failed"]
    none = cli("runs", "--out", out, "--status", "completed")
    assert none.code == 0, none.err
    assert "wild" not in none.out


def test_runs_status_choices_are_the_status_values(
    cli: Callable[..., Result],
) -> None:
    result = cli("runs", "--help")
    assert result.code == 0, result.err
    for status in Status:
        assert status.value in result.out


@pytest.mark.slow
def test_study_from_python_leaves_threads_and_random_state_alone(
    tmp_path: Path,
) -> None:
    torch.set_num_threads(2)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    # Two nets that train in a blink (a report's figures cost more than they do),
    # run in this process (workers=1): each trial sets 1 thread and seeds torch
    # here, so what it leaves behind is what the caller sees.
    archs = [{"label": "b", "spec": TINY_NET}, {"label": "a", "spec": TINY_NET}]
    study = cnnlab.load_study(
        write_study(tmp_path / "s.yaml", archs, [0]), seeds=[0], threads=1, **SMALL
    )
    report = cnnlab.run_study(study, tmp_path / "studies", workers=1)
    assert torch.get_num_threads() == 2
    assert torch.equal(torch.get_rng_state(), before)
    assert [row.label for row in report.rows] == [a.label for a in study.archs]
    assert report.markdown_path.is_file() and report.html_path.is_file()
    assert "<table" in report._repr_html_()
    again = cnnlab.open_report("s", tmp_path / "studies")
    assert [r.label for r in again.rows] == [r.label for r in report.rows]
    trials = cnnlab.list_trials(tmp_path / "studies", status=Status.COMPLETED)
    assert len(trials) == len(study.archs)
    rerun = cnnlab.run_study(study, tmp_path / "studies", workers=1)  # all skipped
    assert [r.label for r in rerun.rows] == [r.label for r in report.rows]


def test_train_from_python_leaves_threads_and_random_state_alone(
    tmp_path: Path,
) -> None:
    torch.set_num_threads(2)
    torch.manual_seed(99)
    before = torch.get_rng_state()
    config = cnnlab.TrainConfig(threads=1, seed=5, **SMALL)
    net = tmp_path / "net.yaml"
    net.write_text(yaml.safe_dump({"name": "net", **TINY_NET}))
    result = cnnlab.train(net, config, tmp_path / "run")
    assert result.meta["status"] == Status.COMPLETED
    assert torch.get_num_threads() == 2
    assert torch.equal(torch.get_rng_state(), before)


def test_store_rows_follow_the_study_order_and_unstarted_trials_are_pending(
    tmp_path: Path, cli: Callable[..., Result]
) -> None:
    """Every trial is planned in the store, in the study's order, before any starts:
    tables keep that order however worker processes race to start their trials,
    and a study stopped after one trial lists the others as pending."""
    from cnnlab.studies.runner import run_study

    archs = [{"label": "b", "spec": TINY_NET}, {"label": "a", "spec": TINY_NET}]
    study = cnnlab.load_study(write_study(tmp_path / "s.yaml", archs, [1, 0]))

    def stop(outcome: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(study, tmp_path / "out", on_finished=stop)
    plan = [(t.label, t.seed) for t in study.trials()]
    assert plan == [("b", 1), ("a", 1), ("b", 0), ("a", 0)]  # seed by seed
    rows = cnnlab.list_trials(tmp_path / "out")
    assert [(r["label"], r["seed"]) for r in rows] == plan
    assert [r["status"] for r in rows] == ["completed"] + ["pending"] * 3
    assert rows[3]["params"] == rows[0]["params"] and rows[3]["epochs"] == 0
    listed = cli("runs", "--out", tmp_path / "out", "--status", "pending")
    assert listed.code == 0, listed.err
    assert listed.out.count("pending") >= 3
    cnnlab.run_study(study, tmp_path / "out", progress=None)  # the rest, same order
    rows = cnnlab.list_trials(tmp_path / "out")
    assert [(r["label"], r["seed"]) for r in rows] == plan
    assert {r["status"] for r in rows} == {"completed"}
