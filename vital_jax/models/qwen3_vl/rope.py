"""M-RoPE position ids for Qwen3-VL, computed on the host in NumPy.

Qwen3-VL renders a video with its time as text before each temporal group, so every visual
placeholder run is one ``(1, h, w)`` item: an image, or one group of a video. An item starting at
``st`` gets ``temporal = st``, ``height = st + row``, ``width = st + col`` over the merged grid, and
text after it resumes at ``st + max(h, w) / merge``, which for a one-group item is its largest
position + 1. That is exactly what Qwen2.5-VL's walk (:func:`vital_jax.models.qwen2_5_vl.rope.
row_positions`) gives for such runs, so this module reuses it and adds only the batch wrapper of
this family (no seconds per grid: a group's time lives in its text, not its positions).
Padding positions are 0, as transformers sets them (no real token reads them).
"""

from __future__ import annotations

import numpy as np

from vital_jax.models.qwen2_5_vl.rope import PositionError, row_positions

__all__ = ["PositionError", "rope_index", "visual_positions"]


def _walk(config, row: np.ndarray, images, videos, start: int = 0, where: str = "") -> tuple[np.ndarray, int]:
    """Positions ``[3, n]`` and next position of one unpadded row by this family's rule: the
    Qwen2.5 walk (time steps are unused: a one-group item's time axis is constant), after
    checking that each video of several groups is written one run per group."""
    if videos and any(t > 1 for t, _, _ in videos) and \
            _runs(row, config.video_token_id) != sum(t for t, _, _ in videos):
        raise PositionError(f"{where}a Qwen3-VL video needs one placeholder run per temporal group "
                            "(a timestamp's text before each)")
    return row_positions(row, image_token_id=config.image_token_id, video_token_id=config.video_token_id,
                         spatial_merge_size=config.vision.spatial_merge_size, tokens_per_second=1.0,
                         image_grids=images, video_grids=videos, start=start)


def visual_positions(config, ids, visuals, *, start: int = 0) -> tuple[np.ndarray, int]:
    """Positions of one row from its visual items (anything with ``kind`` and ``grid_thw``, in
    placeholder order): the same contract as Qwen2.5-VL's ``visual_positions``, which the
    sampler and the trainers' batches call through the family seam."""
    grids = lambda kind: [tuple(int(x) for x in np.asarray(v.grid_thw).reshape(3))  # noqa: E731
                          for v in visuals if (v.kind == "image") == (kind == "image")]
    return _walk(config, np.asarray(ids, np.int64), grids("image"), grids("video"), start)


def rope_index(config, input_ids, image_grid_thw=None, video_grid_thw=None,
               attention_mask=None) -> tuple[np.ndarray, np.ndarray]:
    """``(position_ids[3, B, L], rope_deltas[B])`` of a left- or right-padded batch. Grids are
    consumed in order across rows (images and videos separately); a video's placeholders must be
    one run per temporal group (timestamps between them), else PositionError names the token."""
    ids = np.asarray(input_ids)
    if ids.ndim != 2:
        raise PositionError(f"input_ids must be [B, L], got shape {ids.shape}")
    B, L = ids.shape
    mask = np.ones((B, L), bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    images = [tuple(int(x) for x in g) for g in np.asarray(image_grid_thw if image_grid_thw is not None else
                                                           np.zeros((0, 3))).reshape(-1, 3)]
    videos = [tuple(int(x) for x in g) for g in np.asarray(video_grid_thw if video_grid_thw is not None else
                                                           np.zeros((0, 3))).reshape(-1, 3)]
    pos = np.zeros((3, B, L), np.int64)
    deltas = np.zeros((B,), np.int64)
    m = config.vision.spatial_merge_size
    ik = vk = 0
    for b in range(B):
        row = ids[b][mask[b]]
        n_img = _items(row, config.image_token_id, images[ik:], m)
        n_vid = _items(row, config.video_token_id, videos[vk:], m)
        out, nxt = _walk(config, row, images[ik:ik + n_img], videos[vk:vk + n_vid], where=f"row {b}: ")
        pos[:, b, mask[b]] = out
        deltas[b] = nxt - len(row)
        ik, vk = ik + n_img, vk + n_vid
    if ik != len(images) or vk != len(videos):
        raise PositionError(f"grids unused: {len(images) - ik} image(s), {len(videos) - vk} video(s) "
                            "have no placeholder tokens")
    return pos, deltas


def _runs(row: np.ndarray, tok: int) -> int:
    hit = row == tok
    return int(np.sum(hit[1:] & ~hit[:-1]) + (1 if hit.size and hit[0] else 0))


def _items(row: np.ndarray, tok: int, grids, m: int) -> int:
    """How many of ``grids`` (in order) this row's ``tok`` placeholders use."""
    need, k = int(np.sum(row == tok)), 0
    while need > 0 and k < len(grids):
        t, h, w = grids[k]
        need -= t * (h // m) * (w // m)
        k += 1
    if need != 0:
        raise PositionError(f"{int(np.sum(row == tok))} placeholder tokens {tok} do not match the grids given")
    return k
