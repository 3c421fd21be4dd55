"""M-RoPE position ids for Qwen2.5-VL, computed on the host in NumPy.

The rule is the original Qwen2.5-VL one (also vLLM's and the transformers release VITAL trained
with): text advances by one on all three axes; a visual segment starting at ``st`` gets
``temporal = st + floor(t * second_per_grid_t * tokens_per_second)`` (0 for images),
``height = st + row``, ``width = st + col`` over the merged grid; text after it resumes at
``max(positions so far) + 1``. transformers 5.23 resumes at ``st + max(h, w) / 2`` instead, which
differs for most real videos, so parity tests feed explicit positions to both models.

:func:`row_positions` is composable: the positions of ``a + b`` equal ``row_positions(a)``
followed by ``row_positions(b, start=max(a) + 1)``, which is what the sampler uses to give
appended tool turns their positions without recomputing the whole context.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class PositionError(ValueError):
    """input_ids and visual grids disagree (counts of placeholder tokens, missing grids)."""


def row_positions(
    ids: np.ndarray,
    *,
    image_token_id: int,
    video_token_id: int,
    spatial_merge_size: int,
    tokens_per_second: float,
    image_grids: Sequence[Sequence[int]] = (),
    video_grids: Sequence[Sequence[int]] = (),
    video_seconds_per_grid: Sequence[float] = (),
    start: int = 0,
) -> tuple[np.ndarray, int]:
    """Positions ``[3, n]`` of one unpadded row and the next free position (max + 1).

    ``image_grids``/``video_grids`` are the (t, h, w) patch grids of the visual items that appear
    in ``ids``, in order; each item's placeholder run must be contiguous.
    """
    ids = np.asarray(ids)
    n = ids.shape[0]
    out = np.empty((3, n), dtype=np.int64)
    m = spatial_merge_size
    i, nxt = 0, int(start)
    img_k = vid_k = 0
    while i < n:
        tok = ids[i]
        if tok != image_token_id and tok != video_token_id:
            # a run of text
            j = i
            while j < n and ids[j] != image_token_id and ids[j] != video_token_id:
                j += 1
            out[:, i:j] = nxt + np.arange(j - i)
            nxt += j - i
            i = j
            continue
        if tok == image_token_id:
            if img_k >= len(image_grids):
                raise PositionError(f"image placeholder at token {i} but only {len(image_grids)} image grid(s)")
            t, h, w = (int(x) for x in image_grids[img_k])
            sec = 0.0
            img_k += 1
        else:
            if vid_k >= len(video_grids):
                raise PositionError(f"video placeholder at token {i} but only {len(video_grids)} video grid(s)")
            t, h, w = (int(x) for x in video_grids[vid_k])
            sec = float(video_seconds_per_grid[vid_k]) if len(video_seconds_per_grid) > vid_k else 1.0
            vid_k += 1
        gh, gw = h // m, w // m
        count = t * gh * gw
        if i + count > n or np.any(ids[i:i + count] != tok):
            raise PositionError(
                f"visual item at token {i} needs {count} contiguous placeholder tokens (grid {t}x{h}x{w})"
            )
        # float32 (t * sec) * tps truncated, in the original's order of operations
        tt = ((np.arange(t, dtype=np.float32) * np.float32(sec)) * np.float32(tokens_per_second)).astype(np.int64)
        out[0, i:i + count] = nxt + np.repeat(tt, gh * gw)
        out[1, i:i + count] = nxt + np.tile(np.repeat(np.arange(gh), gw), t)
        out[2, i:i + count] = nxt + np.tile(np.arange(gw), t * gh)
        nxt = int(out[:, i:i + count].max()) + 1
        i += count
    if img_k != len(image_grids) or vid_k != len(video_grids):
        raise PositionError(
            f"grids unused: {len(image_grids) - img_k} image(s), {len(video_grids) - vid_k} video(s) "
            "have no placeholder tokens"
        )
    return out, nxt


def _count_items(ids: np.ndarray, token_id: int, start_id: int) -> int:
    """Number of visual items = placeholder runs that follow a ``<|vision_start|>``."""
    prev = np.concatenate([[-1], ids[:-1]])
    return int(np.sum((ids == token_id) & (prev == start_id)))


def rope_index(
    config,
    input_ids,
    image_grid_thw=None,
    video_grid_thw=None,
    second_per_grid_ts=None,
    attention_mask=None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(position_ids[3, B, L], rope_deltas[B])`` for a batch, the original Qwen2.5-VL rule.

    Grids are consumed in order across the batch rows (as transformers does). Padding tokens
    (``attention_mask == 0``) get position 1 on all axes, as the original code sets them;
    ``rope_deltas = max(position) + 1 - L`` per row.
    """
    input_ids = np.asarray(input_ids)
    if input_ids.ndim != 2:
        raise PositionError(f"input_ids must be [B, L], got shape {input_ids.shape}")
    B, L = input_ids.shape
    mask = np.ones((B, L), bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    if mask.shape != (B, L):
        raise PositionError(f"attention_mask shape {mask.shape} != input_ids shape {(B, L)}")
    img = np.zeros((0, 3), np.int64) if image_grid_thw is None else np.asarray(image_grid_thw).reshape(-1, 3)
    vid = np.zeros((0, 3), np.int64) if video_grid_thw is None else np.asarray(video_grid_thw).reshape(-1, 3)
    secs = np.ones(len(vid)) if second_per_grid_ts is None else np.asarray(second_per_grid_ts, float).reshape(-1)
    if len(secs) != len(vid):
        raise PositionError(f"second_per_grid_ts has {len(secs)} entries for {len(vid)} videos")
    vc = config.vision
    pos = np.ones((3, B, L), np.int64)
    deltas = np.zeros((B,), np.int64)
    ii = vi = 0
    for b in range(B):
        ids = input_ids[b][mask[b]]
        ni = _count_items(ids, config.image_token_id, config.vision_start_token_id)
        nv = _count_items(ids, config.video_token_id, config.vision_start_token_id)
        if ii + ni > len(img) or vi + nv > len(vid):
            raise PositionError(
                f"row {b}: {ni} image(s) and {nv} video(s) in input_ids exceed the grids given "
                f"({len(img) - ii} image and {len(vid) - vi} video grids left)"
            )
        p, _ = row_positions(
            ids, image_token_id=config.image_token_id, video_token_id=config.video_token_id,
            spatial_merge_size=vc.spatial_merge_size, tokens_per_second=vc.tokens_per_second,
            image_grids=img[ii:ii + ni], video_grids=vid[vi:vi + nv],
            video_seconds_per_grid=secs[vi:vi + nv],
        )
        ii, vi = ii + ni, vi + nv
        pos[:, b, mask[b]] = p
        deltas[b] = (p.max() + 1 - L) if p.size else 2 - L  # empty row: all-ones positions
    if ii != len(img) or vi != len(vid):
        raise PositionError(f"{len(img) - ii} image and {len(vid) - vi} video grid(s) have no placeholders")
    return pos, deltas
