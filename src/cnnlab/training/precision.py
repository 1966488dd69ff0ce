"""Training precision: fp32 (the default, Keras's float32), bf16 or fp16 mixed.

Mixed precision as Keras's `mixed_bfloat16` policy and PyTorch's autocast define
it: the weights, the optimizer's state and the loss stay float32; the forward pass
(training and evaluation) runs under `torch.autocast`, which computes matrix
products and convolutions in the lower precision and keeps the ops that need range
(softmax, reductions) in float32. fp16 also needs a gradient scaler against
underflowing gradients, and runs on CUDA only.

Whether bf16 pays on a CPU depends on its instructions: with native bf16 dot
products (x86 `avx512_bf16` or `amx_bf16`, Arm `bf16`) it is faster than float32;
without them oneDNN emulates bf16 and a step is slower than in float32, so
`check_precision` refuses it there. `native_bf16` is the one probe, read once per
process from the CPU's flags (the same flags `nn.convpath` keys its cache with;
reading them costs microseconds, so there is nothing worth keeping on disk).
CNNLAB_ALLOW_SLOW_BF16=1 lets bf16 run anyway: it exists so the bf16 code path can
be tested on a CPU without bf16, not for real training.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Any

import torch

from cnnlab.errors import RunError

FP32, BF16, FP16 = "fp32", "bf16", "fp16"
PRECISIONS = (FP32, BF16, FP16)
DTYPES = {BF16: torch.bfloat16, FP16: torch.float16}
# CPU flags (lscpu, /proc/cpuinfo) of native bf16 arithmetic: x86's AVX-512 BF16
# and AMX tiles, Arm's BF16 extension.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
ARM_BF16_FEATURE = "bf16"
ALLOW_SLOW_BF16 = "CNNLAB_ALLOW_SLOW_BF16"


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The first CPU's instruction-set flags (x86 `flags`, Arm `Features`)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return set()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
            break
    return flags


def has_native_bf16(flags: set[str]) -> bool:
    """Whether a CPU with these flags computes bf16 natively."""
    return bool(flags & {*NATIVE_BF16_FLAGS, ARM_BF16_FEATURE})


@functools.cache
def native_bf16() -> bool:
    """This CPU has native bf16 dot products (checked once per process)."""
    return has_native_bf16(cpu_flags())


def slow_bf16_allowed() -> bool:
    """CNNLAB_ALLOW_SLOW_BF16=1: bf16 even on a CPU without it (tests only)."""
    return os.environ.get(ALLOW_SLOW_BF16, "").strip() == "1"


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision this device cannot run faster than float32."""
    if precision == FP16 and device.type != "cuda":
        raise RunError(
            "precision=fp16 runs on a CUDA GPU only (with a gradient scaler); on a "
            "CPU it is slower than float32. Use --precision fp32 (the default) here, "
            "or bf16 on a CPU with native bf16 (lscpu flag avx512_bf16 or amx_bf16)."
        )
    if precision != BF16:
        return
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported(including_emulation=False):
            raise RunError(
                f"precision=bf16: the GPU {torch.cuda.get_device_name(device)} has "
                "no native bf16. Use --precision fp16 on it, or fp32."
            )
        return
    if device.type == "cpu" and not native_bf16() and not slow_bf16_allowed():
        # PyTorch's own report of this case: an epoch went from 2.5 s in float32
        # to 231 s under CPU bf16 autocast (github.com/pytorch/pytorch/issues/118499).
        raise RunError(
            "precision=bf16 needs a CPU with native bf16 instructions (lscpu flag "
            "avx512_bf16 or amx_bf16) and this one has none: autocast would emulate "
            "bf16 and train slower than float32, not faster. Use --precision fp32 "
            "(the default) here, or bf16 on a CPU or GPU that has it."
        )


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward pass's context: autocast for bf16 and fp16, nothing for fp32."""
    if precision == FP32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


class NoScaler:
    """fp32 and bf16 need no loss scaling: the same interface, doing nothing."""

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()

    def update(self) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def make_scaler(precision: str, device: torch.device) -> Any:
    """fp16's gradient scaler (torch.amp.GradScaler), else a NoScaler."""
    if precision == FP16:
        return torch.amp.GradScaler(device.type)
    return NoScaler()
