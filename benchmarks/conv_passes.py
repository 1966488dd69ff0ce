"""The three passes of a wide 3x3 convolution, each way cnnlab can run it.

    python3 benchmarks/conv_passes.py                      # net 1's 512->256 layer
    python3 benchmarks/conv_passes.py --in 64 --out 64 --size 14 --pad 1

For one layer (default: conv3-512's second convolution, 512 -> 256 filters at 26x26,
'same' padding, batch 128, as the notebook trains it) it times, interleaved and
repeated, the forward pass, the input gradient and the kernel gradient: in oneDNN
(PyTorch's own convolution), in NNPACK (cnnlab's forward and input gradient) and by
Winograd's F(4x4, 3x3) in tensor ops (cnnlab's kernel gradient). Each pass's
GFLOP/s is given two ways: the direct convolution's count over the time (what the
pass is worth) and the arithmetic the method actually does.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_lines  # noqa: E402


def passes(x: torch.Tensor, w: torch.Tensor, g: torch.Tensor, pad: int) -> dict:
    from cnnlab.nn import fastconv, winograd

    fastconv.available()  # initialises NNPACK

    def onednn(mask: list[bool]) -> Callable[[], object]:
        return lambda: torch.ops.aten.convolution_backward(
            g, x, w, None, [1, 1], [pad, pad], [1, 1], False, [0, 0], 1, mask
        )

    flipped = w.transpose(0, 1).flip(2, 3).contiguous()
    xc, gc, wc = x.contiguous(), g.contiguous(), w.contiguous()
    zeros_o, zeros_i = x.new_zeros(w.shape[0]), x.new_zeros(w.shape[1])
    return {
        ("forward", "oneDNN"): lambda: F.conv2d(x, w, padding=pad),
        ("forward", "NNPACK"): lambda: torch._nnpack_spatial_convolution(
            xc, wc, zeros_o, [pad, pad], [1, 1]
        ),
        ("input gradient", "oneDNN"): onednn([True, False, False]),
        ("input gradient", "NNPACK"): lambda: torch._nnpack_spatial_convolution(
            gc, flipped, zeros_i, [2 - pad, 2 - pad], [1, 1]
        ),
        ("kernel gradient", "oneDNN"): onednn([False, True, False]),
        ("kernel gradient", "Winograd F(4x4,3x3)"): lambda: winograd.weight_grad(
            x, g, pad
        ),
    }


def winograd_flops(batch: int, cin: int, cout: int, out: int) -> float:
    """Multiply-adds of F(4x4, 3x3)'s batched products, x 2 (transforms excluded)."""
    tiles = batch * (-(-out // 4)) ** 2
    return 2.0 * 36 * tiles * cin * cout


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--in", dest="cin", type=int, default=512)
    p.add_argument("--out", dest="cout", type=int, default=256)
    p.add_argument("--size", type=int, default=26, help="input height and width")
    p.add_argument("--pad", type=int, default=1, choices=(0, 1))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    last = torch.channels_last
    x = torch.randn(args.batch, args.cin, args.size, args.size, generator=gen)
    out = args.size + 2 * args.pad - 2
    g = torch.randn(args.batch, args.cout, out, out, generator=gen)
    x, g = x.contiguous(memory_format=last), g.contiguous(memory_format=last)
    w = torch.randn(args.cout, args.cin, 3, 3, generator=gen) * 0.02
    direct = 2.0 * args.batch * out * out * args.cout * args.cin * 9
    runs = passes(x, w, g, args.pad)
    for fn in runs.values():
        fn()  # warm-up: allocations, NNPACK's and oneDNN's first-call set-up
    seconds: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
    for _ in range(args.repeats):
        for key, fn in runs.items():
            started = time.perf_counter()
            fn()
            seconds[key].append(time.perf_counter() - started)
    print("\n".join(machine_lines()))
    print(
        f"\nLayer {args.cin}->{args.cout} 3x3, {args.size}x{args.size} input, pad "
        f"{args.pad}, batch {args.batch}, {args.threads} threads, {args.repeats} "
        f"interleaved repeats; direct-form FLOPs per pass {direct / 1e9:.1f} G.\n"
    )
    print("| pass | method | s min | s median | GFLOP/s (direct count) | "
          "GFLOP/s (done) |\n|---|---|---|---|---|---|")  # fmt: skip
    for (name, method), times in seconds.items():
        best, med = min(times), statistics.median(times)
        done = direct
        if method.startswith("Winograd"):
            done = winograd_flops(args.batch, args.cin, args.cout, out)
        elif method == "NNPACK":
            done = float("nan")  # NNPACK's own tiling is not exposed
        done_text = "-" if done != done else f"{done / med / 1e9:.0f}"
        print(f"| {name} | {method} | {best:.3f} | {med:.3f} | "
              f"{direct / med / 1e9:.0f} | {done_text} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
