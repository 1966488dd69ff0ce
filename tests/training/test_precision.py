"""Training precision (training.precision): fp32 by default; bf16 mixed precision
learns with float32 weights and resumes exactly; the probe reads the CPU's flags;
fp16 with its gradient scaler on CUDA.

bf16 is refused on a CPU without native bf16 (the message is in the bad-input
matrix); CNNLAB_ALLOW_SLOW_BF16=1 lets these tests run its code path anyway.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import cnnlab
from cnnlab.errors import CnnlabError, RunError
from cnnlab.nn.model import build_model
from cnnlab.studies import estimate
from cnnlab.studies.cpus import CpuSplit
from cnnlab.studies.estimate import HOURS, NetTiming, StudyEstimate
from cnnlab.studies.results import TrialResult, precision_note
from cnnlab.studies.study import load_study
from cnnlab.training import precision
from cnnlab.training.allocator import keep_large_blocks
from cnnlab.training.config import TrainConfig
from cnnlab.training.session import use_conv_path
from helpers import run_cli

SMALL = TrainConfig(
    epochs=1, train_limit=1000, val_size=300, test_limit=500, precision="bf16"
)
needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"
)


@pytest.fixture
def slow_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(precision.ALLOW_SLOW_BF16, "1")


def _metrics(result: cnnlab.RunResult) -> list[tuple]:
    keys = ("loss", "acc", "val_loss", "val_acc")
    return [tuple(row[k] for k in keys) for row in result.history.epochs]


def test_fp32_is_the_default_and_the_choice_is_checked() -> None:
    assert TrainConfig().precision == "fp32"
    with pytest.raises(CnnlabError, match=r"precision must be one of fp32, bf16, "):
        TrainConfig(precision="bfloat16")


def test_the_probe_reads_the_cpus_flags() -> None:
    epyc_avx2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
    xeon = "processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16 avx512_fp16\n"
    sapphire = "flags\t\t: avx512f amx_bf16 amx_tile\n"
    graviton = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
    found = [
        precision.has_native_bf16(precision.cpu_flags(text))
        for text in (epyc_avx2, xeon, sapphire, graviton, "")
    ]
    assert found == [False, True, True, True, False]
    here = precision.cpu_flags()  # this machine's, as lscpu shows them
    assert precision.native_bf16() == precision.has_native_bf16(here)


def test_bf16_is_refused_without_native_bf16_unless_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cpu = torch.device("cpu")
    if precision.native_bf16():
        precision.check_precision("bf16", cpu)  # accepted where the CPU has it
    else:
        with pytest.raises(RunError, match="needs a CPU with native bf16"):
            precision.check_precision("bf16", cpu)
    monkeypatch.setenv(precision.ALLOW_SLOW_BF16, "1")
    precision.check_precision("bf16", cpu)
    with pytest.raises(RunError, match="fp16 runs on a CUDA GPU only"):
        precision.check_precision("fp16", cpu)  # the escape hatch is for bf16 alone


@pytest.mark.slow
def test_bf16_learns_keeps_float32_weights_and_resumes_exactly(
    tmp_path: Path, slow_bf16: None
) -> None:
    whole = cnnlab.train("conv5-medium", SMALL.replace(epochs=2), tmp_path / "whole")
    # 16 steps: float32 reaches about the same (chance is 0.10)
    assert whole.test_acc is not None and whole.test_acc > 0.25
    assert {p.dtype for p in whole.model.parameters()} == {torch.float32}
    meta = json.loads((whole.path / "run.json").read_text())
    assert meta["config"]["precision"] == "bf16"

    cnnlab.train("conv5-medium", SMALL, tmp_path / "split")
    resumed = cnnlab.resume(tmp_path / "split", epochs=2)
    assert resumed.meta["config"]["precision"] == "bf16"  # kept on resume
    assert _metrics(resumed) == _metrics(whole)
    assert (resumed.test_loss, resumed.test_acc) == (whole.test_loss, whole.test_acc)
    for a, b in zip(resumed.model.parameters(), whole.model.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_bf16_differs_from_fp32_and_records_it(tmp_path: Path, slow_bf16: None) -> None:
    """The same seed in the two precisions: the forward pass really ran in bf16."""
    config = SMALL.replace(train_limit=500, test_limit=200)
    bf16 = cnnlab.train("conv5-tiny", config, tmp_path / "bf16")
    fp32 = cnnlab.train("conv5-tiny", config.replace(precision="fp32"), tmp_path / "f")
    assert _metrics(bf16) != _metrics(fp32)
    assert fp32.meta["config"]["precision"] == "fp32"


def test_resume_refuses_another_precision(tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = SMALL.replace(precision="fp32", train_limit=200, test_limit=100)
    cnnlab.train("conv5-tiny", config.replace(val_size=100), run)
    done = run_cli("train", "--resume", run, "--epochs", "2", "--precision", "bf16")
    assert done.code == 2
    assert "drop --precision (only --epochs, --device, --threads may" in done.err


def test_mixed_precision_takes_onednn_for_wide_layers() -> None:
    """NNPACK computes in float32 only: under bf16 the wide layers run in oneDNN."""
    model = build_model(cnnlab.load("conv3-512"), 10, seed=0)
    path = use_conv_path(model, torch.device("cpu"), 128, None, "bf16")
    assert path == "onednn"
    assert not any(conv.winograd for conv in model.wide_convs())


def test_keep_large_blocks_on_glibc() -> None:
    import platform

    kept = keep_large_blocks()
    assert kept == (platform.libc_ver()[0] == "glibc")
    big = torch.ones(64 * 2**20 // 4)  # 64 MB: from the heap now, still correct
    assert float(big.sum()) == big.numel()


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("name", ["bf16", "fp16"])
def test_mixed_precision_on_cuda_learns_and_resumes_exactly(
    tmp_path: Path, name: str
) -> None:
    config = SMALL.replace(
        precision=name, device="cuda", train_limit=6000, val_size=1000, epochs=2
    )
    whole = cnnlab.train("conv5-tiny", config, tmp_path / "whole")
    assert whole.test_acc is not None and whole.test_acc > 0.8
    assert {p.dtype for p in whole.model.parameters()} == {torch.float32}
    cnnlab.train("conv5-tiny", config.replace(epochs=1), tmp_path / "split")
    payload = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    assert (payload["scaler"] is not None) == (name == "fp16")  # fp16's scale kept
    resumed = cnnlab.resume(tmp_path / "split", epochs=2)
    assert _metrics(resumed) == _metrics(whole)
    assert (resumed.test_loss, resumed.test_acc) == (whole.test_loss, whole.test_acc)


def _trial(label: str, seed: int, precision_: str) -> TrialResult:
    history = ({"epoch": 1, "loss": 0.5, "acc": 0.9, "seconds": 1.0},)
    return TrialResult(
        "s",
        label,
        seed,
        label,
        "adam",
        10,
        10,
        history,
        "completed",
        precision=precision_,
    )


def test_a_study_that_mixes_precisions_says_so() -> None:
    same = [_trial("a", 0, "fp32"), _trial("b", 0, "fp32")]
    assert precision_note(same) is None
    mixed = [_trial("a", 0, "fp32"), _trial("a", 1, "fp32"), _trial("b", 0, "bf16")]
    note = precision_note(mixed)
    assert note is not None and note.startswith("Mixed precisions (fp32: a; bf16: b)")


def test_the_estimate_advises_bf16_only_where_the_cpu_has_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A study of hours in float32 on a CPU: `--precision bf16` with its time where
    the probe finds native bf16, never elsewhere (the probe's answer injected)."""
    trials = load_study("seed").trials()[:2]
    hours = [3 * HOURS, HOURS]
    nets = [NetTiming(t.label, 1e9, 1e-3, True) for t in trials]
    found = StudyEstimate(
        trials, hours, [12, 12], nets, CpuSplit(1, 2), "cpu", 1, False
    )
    for native in (True, False):
        monkeypatch.setattr(estimate, "native_bf16", lambda native=native: native)
        advice = found.lines()[-1]
        assert "to shorten it: a GPU" in advice
        assert ("--precision bf16 (this CPU has native bf16: ~3h12m)" in advice) == (
            native
        ), advice
    bf16 = [
        dataclasses.replace(t, config=t.config.replace(precision="bf16"))
        for t in trials
    ]
    already = dataclasses.replace(found, trials=bf16)
    monkeypatch.setattr(estimate, "native_bf16", lambda: True)
    assert "--precision" not in already.lines()[-1]


@pytest.mark.slow
def test_a_real_study_that_mixes_precisions_records_and_reports_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "mixed.yaml").write_text(
        "name: mixed\nseeds: [0]\n"
        "train: {epochs: 1, train_limit: 300, val_size: 100, test_limit: 100}\n"
        "architectures:\n"
        "  - {preset: conv5-tiny, label: tiny}\n"
        "  - {preset: conv5-tiny, label: tiny-bf16, train: {precision: bf16}}\n"
    )
    slow = {precision.ALLOW_SLOW_BF16: "1"}
    done = run_cli("study", "mixed.yaml", "--out", "ST", cwd=tmp_path, env=slow)
    assert done.code == 0, done.err
    note = "Mixed precisions (fp32: tiny; bf16: tiny-bf16)"
    assert note in done.out
    assert note in (tmp_path / "ST/mixed/report/report.md").read_text()
    listed = run_cli("runs", "--out", "ST", cwd=tmp_path, check=True).out
    assert "bf16" in listed and "fp32" in listed
