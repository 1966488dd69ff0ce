"""The kernel gradient of a 3x3 convolution by Winograd's F(4x4, 3x3), in tensor ops.

A stride-1 3x3 convolution's kernel gradient is itself a correlation: of the layer's
input with its output gradient, summed over the batch. Winograd's minimal filtering
(Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016) cuts it
into 6x6 input tiles and 4x4 output-gradient tiles; in the transformed domain the
sum over tiles is 36 independent matrix products (out channels x tiles) @ (tiles x
in channels), one batched multiply, with 36 multiplies per tile where the direct
form needs 144: a quarter of the arithmetic, plus the tile transforms, which are
sums of strided slices and so cost memory traffic, not multiplies.

The transforms run on channels-last slices, so every slice keeps the channels
contiguous and the batched multiply reads both operands in place. The batch is
taken in chunks whose transformed tiles fit in a few tens of megabytes (the working
set stays near the caches), accumulating into one 36 x out x in buffer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TILE = 4  # output tile side: F(4x4, 3x3)
SPAN = TILE + 2  # input tile side
CHUNK_BYTES = 32 * 2**20  # transformed input tiles per chunk of the batch

# F(4, 3) on the points 0, 1, -1, 2, -2 and infinity (Lavin and Gray, 2016).
_BT = (
    (4.0, 0.0, -5.0, 0.0, 1.0, 0.0),
    (0.0, -4.0, -4.0, 1.0, 1.0, 0.0),
    (0.0, 4.0, -4.0, -1.0, 1.0, 0.0),
    (0.0, -2.0, -1.0, 2.0, 1.0, 0.0),
    (0.0, 2.0, -1.0, -2.0, 1.0, 0.0),
    (0.0, 4.0, 0.0, -5.0, 0.0, 1.0),
)
_G = (
    (1 / 4, 0.0, 0.0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0.0, 0.0, 1.0),
)
_A = (  # A, 6 x 4: the transpose of the output transform
    (1.0, 0.0, 0.0, 0.0),
    (1.0, 1.0, 1.0, 1.0),
    (1.0, -1.0, 1.0, -1.0),
    (1.0, 2.0, 4.0, 8.0),
    (1.0, -2.0, 4.0, -8.0),
    (0.0, 0.0, 0.0, 1.0),
)


def _transform(
    z: torch.Tensor, matrix: tuple[tuple[float, ...], ...], dim: int, tiles: int
) -> torch.Tensor:
    """Tile `dim` of z (tiles starting every TILE steps) and apply `matrix` to each
    tile along it: out[a] = sum_i matrix[a][i] * z[..., TILE * t + i, ...]."""
    head = (slice(None),) * dim
    taps = len(matrix[0])
    end = (tiles - 1) * TILE + 1
    parts = [z[(*head, slice(i, i + end, TILE))] for i in range(taps)]
    out = z.new_empty((len(matrix), *parts[0].shape))
    for a, row in enumerate(matrix):
        terms = [(c, p) for c, p in zip(row, parts, strict=True) if c != 0.0]
        torch.mul(terms[0][1], terms[0][0], out=out[a])
        for c, p in terms[1:]:
            out[a].add_(p, alpha=c)
    return out


def weight_grad(x: torch.Tensor, grad: torch.Tensor, pad: int) -> torch.Tensor:
    """d(loss)/d(weight) of `F.conv2d(x, weight, padding=pad)`, a 3x3 stride-1
    convolution, given its output gradient `grad`: shape (out, in, 3, 3)."""
    n_all, channels, height, width = x.shape
    outs, out_h, out_w = grad.shape[1:]
    rows, cols = -(-out_h // TILE), -(-out_w // TILE)
    spare_h, spare_w = rows * TILE - out_h, cols * TILE - out_w
    # channels last, as views when the tensors already are (the net runs so)
    x_last, g_last = x.permute(0, 2, 3, 1), grad.permute(0, 2, 3, 1)
    per_image = SPAN * SPAN * rows * cols * channels * x.element_size()
    chunk = max(1, CHUNK_BYTES // per_image)
    total = x.new_zeros(SPAN * SPAN, outs, channels)
    for start in range(0, n_all, chunk):
        xs = F.pad(
            x_last[start : start + chunk],
            (0, 0, pad, pad + spare_w, pad, pad + spare_h),
        )
        gs = F.pad(g_last[start : start + chunk], (0, 0, 0, spare_w, 0, spare_h))
        # (W-index, H-index, n, row, col, channel): both transforms keep that order
        v = _transform(_transform(xs, _BT, 1, rows), _BT, 3, cols)
        m = _transform(_transform(gs, _A, 1, rows), _A, 3, cols)
        tiles = v.shape[2] * rows * cols
        total.baddbmm_(
            m.reshape(SPAN * SPAN, tiles, outs).transpose(1, 2),
            v.reshape(SPAN * SPAN, tiles, channels),
        )
    # back from the transformed domain: G^T dU G per (out, in) pair
    g = torch.tensor(_G, dtype=x.dtype, device=x.device)
    back = torch.kron(g, g)  # (36, 9): row (b, a), column (l, k), W index first
    kernel = total.reshape(SPAN * SPAN, outs * channels).T @ back
    return kernel.reshape(outs, channels, 3, 3).transpose(2, 3)
