"""Antialiased bicubic resize in NumPy, matching torch ``interpolate(bicubic, antialias=True)``.

qwen-vl-utils resizes video frames with torchvision (which calls that torch kernel) and
images with PIL bicubic; both use the same antialiased Keys cubic (a = -0.5) with a support
widened by the downscale factor. We build the two separable weight matrices once per
(input, output) size and apply them as two batched matmuls, then round back to uint8.
"""

from __future__ import annotations

import functools

import numpy as np

_A = -0.5  # Keys cubic coefficient used by the antialiased (PIL-style) kernels


def _cubic(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    near = ((_A + 2) * x - (_A + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * _A
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


@functools.lru_cache(maxsize=64)
def resize_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Banded interpolation weights: ``(index[out, K], weight[out, K])``, rows sum to 1.

    ``K`` is the widest filter footprint; short rows (at the borders) are padded with
    weight 0 on a valid index, so applying the taps is K gathers and multiply-adds.
    """
    scale = in_size / out_size
    support = 2.0 * max(scale, 1.0)
    inv = 1.0 / max(scale, 1.0)
    rows = []
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)  # int() truncates toward zero, like torch
        hi = min(int(center + support + 0.5), in_size)
        j = np.arange(lo, hi)
        k = _cubic((j - center + 0.5) * inv)
        rows.append((j, k / k.sum()))
    taps = max(len(j) for j, _ in rows)
    index = np.zeros((out_size, taps), dtype=np.int64)
    weight = np.zeros((out_size, taps), dtype=np.float32)
    for i, (j, k) in enumerate(rows):
        index[i, : len(j)], index[i, len(j) :] = j, j[0]
        weight[i, : len(j)] = k
    index.setflags(write=False)
    weight.setflags(write=False)
    return index, weight


def resize_weights(in_size: int, out_size: int) -> np.ndarray:
    """Dense ``[out_size, in_size]`` form of :func:`resize_taps` (for tests and docs)."""
    index, weight = resize_taps(in_size, out_size)
    dense = np.zeros((out_size, in_size), dtype=np.float64)
    np.add.at(dense, (np.arange(out_size)[:, None], index), weight)
    return dense


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize uint8 ``[T, H, W, C]`` to ``[T, height, width, C]`` uint8.

    Width pass then height pass in float32, each one large GEMM with the dense weight
    matrix (faster here than banded gathers: the gathers are strided), then round half to
    even and clip. That is torch's float ``interpolate`` followed by torchvision's cast back
    to uint8; the two agree to within 1 level on rare pixels (float summation order).
    """
    t, h, w, c = frames.shape
    if (h, w) == (height, width):
        return frames
    x = frames.astype(np.float32)
    if w != width:
        ww = _dense_f32(w, width).T  # [W, width]
        x = x.transpose(0, 1, 3, 2).reshape(t * h * c, w) @ ww  # [T*H*C, width]
        x = x.reshape(t, h, c, width).transpose(0, 1, 3, 2)  # [T, H, width, C]
    if h != height:
        wh = _dense_f32(h, height)  # [height, H]
        x = np.matmul(wh, np.ascontiguousarray(x).reshape(t, h, width * c))
        x = x.reshape(t, height, width, c)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=64)
def _dense_f32(in_size: int, out_size: int) -> np.ndarray:
    w = resize_weights(in_size, out_size).astype(np.float32)
    w.setflags(write=False)
    return w
