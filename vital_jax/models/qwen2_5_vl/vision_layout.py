"""Host-side layout of the vision tower's ragged inputs, padded to a static size.

The tower attends inside 112-px windows (most blocks) or inside one temporal patch (blocks in
``fullatt_block_indexes``), never across visual items. All of that raggedness is turned here into
plain integer arrays of a fixed length ``N`` (a bucket), so the jitted tower sees one shape per
bucket no matter how many clips or which grids it gets:

- ``perm[N]``: patch rows in window order (HF permutes merged 2x2 units into windows);
- ``seg_window[N]``/``seg_full[N]``: attention segment ids (a query attends keys of its segment);
- ``rot_hw[N, 2]``: (row, col) of each patch for the 2D rotary embedding;
- ``unperm[N/4]``: gathers merged tokens back to the original order.
Padding patches get a segment of their own and land after all real merged tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VisionLayout:
    perm: np.ndarray        # [N] int32
    seg_window: np.ndarray  # [N] int32
    seg_full: np.ndarray    # [N] int32
    rot_hw: np.ndarray      # [N, 2] int32
    unperm: np.ndarray      # [N / merge_unit] int32
    num_patches: int        # real patches (<= N)

    @property
    def num_merged(self) -> int:
        return self.unperm.shape[0]


def vision_layout(grid_thw, vision_config, pad_to: int | None = None) -> VisionLayout:
    """Layout for the concatenation of visual items with patch grids ``grid_thw[k] = (t, h, w)``."""
    grid_thw = np.asarray(grid_thw, dtype=np.int64).reshape(-1, 3)
    m = vision_config.spatial_merge_size
    unit = m * m
    ws = vision_config.window_merged
    merged_perm, seg_w_units, seg_f_units, rot = [], [], [], []
    merged_base = 0
    win_id = 0
    frame_id = 0
    for k, (t, h, w) in enumerate(grid_thw):
        if h % m or w % m or t <= 0:
            raise ValueError(f"visual item {k}: grid {(t, h, w)} must have t > 0 and h, w divisible by {m}")
        gh, gw = h // m, w // m
        # rotary (row, col) per patch in the original (merge-block-major) order
        hh, ww = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        hh = hh.reshape(gh, m, gw, m).transpose(0, 2, 1, 3).reshape(-1)
        ww = ww.reshape(gh, m, gw, m).transpose(0, 2, 1, 3).reshape(-1)
        rot.append(np.tile(np.stack([hh, ww], -1), (t, 1)))
        # window order of merged units: (t, window row, window col, row in window, col in window)
        idx = np.arange(t * gh * gw).reshape(t, gh, gw)
        r = np.arange(gh) // ws
        c = np.arange(gw) // ws
        nwc = -(-gw // ws)
        win_of = (np.arange(t)[:, None, None] * (-(-gh // ws) * nwc)
                  + r[None, :, None] * nwc + c[None, None, :])
        order = np.lexsort((np.tile(np.arange(gw) % ws, (t, gh, 1)).ravel(),
                            np.tile((np.arange(gh) % ws)[:, None], (t, 1, gw)).ravel(),
                            win_of.ravel()))
        merged_perm.append(idx.ravel()[order] + merged_base)
        # remap window ids to be consecutive over non-empty windows
        _, win_dense = np.unique(win_of.ravel()[order], return_inverse=True)
        seg_w_units.append(win_dense + win_id)
        win_id += int(win_dense.max()) + 1
        seg_f_units.append(np.repeat(np.arange(t), gh * gw) + frame_id)  # already in window order per frame
        frame_id += t
        merged_base += t * gh * gw
    if merged_base == 0:
        merged_perm = [np.zeros((0,), np.int64)]
        seg_w_units = seg_f_units = [np.zeros((0,), np.int64)]
        rot = [np.zeros((0, 2), np.int64)]
    mp = np.concatenate(merged_perm)
    n_real = mp.shape[0] * unit
    n = n_real if pad_to is None else int(pad_to)
    if n < n_real or n % unit:
        raise ValueError(f"pad_to={pad_to} must be a multiple of {unit} and >= {n_real} patches")
    n_pad_units = (n - n_real) // unit
    mp_full = np.concatenate([mp, np.arange(mp.shape[0], mp.shape[0] + n_pad_units)])
    perm = (mp_full[:, None] * unit + np.arange(unit)[None, :]).reshape(-1)
    seg_w = np.concatenate([np.repeat(np.concatenate(seg_w_units), unit), np.full(n - n_real, -1)])
    # frames are contiguous in window order too (windows never cross frames)
    seg_f = np.concatenate([np.repeat(np.concatenate(seg_f_units), unit), np.full(n - n_real, -1)])
    rot_all = np.concatenate(rot + [np.zeros((n - n_real, 2), np.int64)])[perm]
    unperm = np.argsort(mp_full)
    return VisionLayout(
        perm=perm.astype(np.int32), seg_window=seg_w.astype(np.int32), seg_full=seg_f.astype(np.int32),
        rot_hw=rot_all.astype(np.int32), unperm=unperm.astype(np.int32), num_patches=n_real,
    )


def max_frame_patches(grid_thw) -> int:
    """Patches of the largest frame (one temporal slice, h*w) among ``grid_thw``: the smallest
    valid ``RuntimeOptions.vision_frame_block`` for these items."""
    g = np.asarray(grid_thw, dtype=np.int64).reshape(-1, 3)
    return int((g[:, 1] * g[:, 2]).max()) if len(g) else 0
