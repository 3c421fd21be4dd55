"""M-RoPE position ids for Qwen2.5-VL, computed on the host in NumPy.

The rule is the original Qwen2.5-VL one (also vLLM's and the transformers release VITAL trained
with): text advances by one on all three axes; a visual segment starting at ``st`` gets
``temporal = st + floor(t * second_per_grid_t * tokens_per_second)`` (0 for images),
``height = st + row``, ``width = st + col`` over the merged grid; text after it resumes at
``max(positions so far) + 1``. transformers 5.23 resumes at ``st + max(h, w) / 2`` instead, which
differs for most real videos, so parity tests feed explicit positions to both models.

A video rendered with textual timestamps (Qwen3-VL, ``vital_jax.prompt.Vision.times``) has one
placeholder run per temporal group with ``<t seconds>`` text between; each group is then
positioned as its own ``(1, h, w)`` item, as Qwen3-VL's ``get_rope_index`` does.

:func:`row_positions` is composable: the positions of ``a + b`` equal ``row_positions(a)``
followed by ``row_positions(b, start=max(a) + 1)``, which is what the sampler uses to give
appended tool turns their positions without recomputing the whole context.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vital_jax.errors import VitalError


class PositionError(VitalError, ValueError):
    """input_ids and visual grids disagree (counts of placeholder tokens, missing grids)."""


def _walk(ids, *, image_token_id, video_token_id, spatial_merge_size, tokens_per_second,
          image_grids, video_grids, video_seconds_per_grid, start):
    """Positions of ``ids`` consuming grids in order: ``(out[3, n], next, images used, videos used)``."""
    ids = np.asarray(ids)
    n = ids.shape[0]
    out = np.empty((3, n), dtype=np.int64)
    m = spatial_merge_size
    i, nxt = 0, int(start)
    img_k = vid_k = 0

    def text(i, nxt):  # a run of text from i: ordinary positions, one each
        j = i
        while j < n and ids[j] != image_token_id and ids[j] != video_token_id:
            j += 1
        out[:, i:j] = nxt + np.arange(j - i)
        return j, nxt + (j - i)

    def item(i, nxt, t, gh, gw, sec):  # one contiguous visual block of t temporal groups at i
        count = t * gh * gw
        tt = ((np.arange(t, dtype=np.float32) * np.float32(sec)) * np.float32(tokens_per_second)).astype(np.int64)
        out[0, i:i + count] = nxt + np.repeat(tt, gh * gw)
        out[1, i:i + count] = nxt + np.tile(np.repeat(np.arange(gh), gw), t)
        out[2, i:i + count] = nxt + np.tile(np.arange(gw), t * gh)
        return i + count, int(out[:, i:i + count].max()) + 1

    def run_length(i, tok):
        j = i
        while j < n and ids[j] == tok:
            j += 1
        return j - i

    while i < n:
        tok = ids[i]
        if tok != image_token_id and tok != video_token_id:
            i, nxt = text(i, nxt)
            continue
        if tok == image_token_id:
            if img_k >= len(image_grids):
                raise PositionError(f"image placeholders at token {i} exceed the grids given: only "
                                    f"{len(image_grids)} image grid(s)")
            t, h, w = (int(x) for x in image_grids[img_k])
            sec = 0.0
            img_k += 1
        else:
            if vid_k >= len(video_grids):
                raise PositionError(f"video placeholders at token {i} exceed the grids given: only "
                                    f"{len(video_grids)} video grid(s)")
            t, h, w = (int(x) for x in video_grids[vid_k])
            sec = float(video_seconds_per_grid[vid_k]) if len(video_seconds_per_grid) > vid_k else 1.0
            vid_k += 1
        gh, gw = h // m, w // m
        run = run_length(i, tok)
        if run >= t * gh * gw:  # the whole item in one run (Qwen2.5-VL layout)
            i, nxt = item(i, nxt, t, gh, gw, sec)
            continue
        if tok != video_token_id or t == 1 or run != gh * gw:
            raise PositionError(
                f"visual item at token {i} needs {t * gh * gw} contiguous placeholder tokens (grid {t}x{h}x{w}), "
                f"or for a video one run of {gh * gw} per temporal group; found a run of {run}")
        # Textual timestamps (Qwen3-VL): the video's t groups are separate runs with text between
        # them; each group is positioned as its own t = 1 item (so its seconds per grid play no
        # part) and the text between gets ordinary text positions.
        for g in range(t):
            if g:
                i, nxt = text(i, nxt)
                if i >= n or ids[i] != tok or run_length(i, tok) != gh * gw:
                    got = 0 if i >= n or ids[i] != tok else run_length(i, tok)
                    raise PositionError(f"video item (grid {t}x{h}x{w}) split per temporal group: group {g} "
                                        f"needs a run of {gh * gw} placeholder tokens at token {i}, found {got}")
            i, nxt = item(i, nxt, 1, gh, gw, 0.0)
    return out, nxt, img_k, vid_k


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
    in ``ids``, in order. An item's placeholders are one contiguous run, or, for a video written
    with textual timestamps (Qwen3-VL), one run per temporal group with text between them: then
    each group is positioned as a ``(1, h, w)`` item. The layout is read from the ids, so the
    positions always agree with how the prompt was rendered.
    """
    out, nxt, img_k, vid_k = _walk(
        ids, image_token_id=image_token_id, video_token_id=video_token_id, spatial_merge_size=spatial_merge_size,
        tokens_per_second=tokens_per_second, image_grids=image_grids, video_grids=video_grids,
        video_seconds_per_grid=video_seconds_per_grid, start=start)
    if img_k != len(image_grids) or vid_k != len(video_grids):
        raise PositionError(
            f"grids unused: {len(image_grids) - img_k} image(s), {len(video_grids) - vid_k} video(s) "
            "have no placeholder tokens"
        )
    return out, nxt


def visual_positions(config, ids, visuals: Sequence[Any], *, start: int = 0) -> tuple[np.ndarray, int]:
    """:func:`row_positions` of one row from its visual items (anything with ``kind``,
    ``grid_thw`` and ``second_per_grid_t``, e.g. a :class:`vital_jax.video.VisualInput`), in
    the order their placeholders appear: the one place the trainers' batches and the sampler
    turn visual inputs into positions."""
    vids = [v for v in visuals if v.kind != "image"]
    vc = config.vision
    return row_positions(
        np.asarray(ids, np.int64), image_token_id=config.image_token_id, video_token_id=config.video_token_id,
        spatial_merge_size=vc.spatial_merge_size, tokens_per_second=vc.tokens_per_second,
        image_grids=[np.asarray(v.grid_thw).reshape(3) for v in visuals if v.kind == "image"],
        video_grids=[np.asarray(v.grid_thw).reshape(3) for v in vids],
        video_seconds_per_grid=[float(v.second_per_grid_t) for v in vids], start=start,
    )


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
        # the walk takes the grids it needs (a video with textual timestamps has one placeholder
        # run per temporal group, so runs cannot simply be counted)
        try:
            p, _, ni, nv = _walk(
                ids, image_token_id=config.image_token_id, video_token_id=config.video_token_id,
                spatial_merge_size=vc.spatial_merge_size, tokens_per_second=vc.tokens_per_second,
                image_grids=img[ii:], video_grids=vid[vi:], video_seconds_per_grid=secs[vi:], start=0,
            )
        except PositionError as e:
            raise PositionError(f"row {b}: {e}") from None
        ii, vi = ii + ni, vi + nv
        pos[:, b, mask[b]] = p
        deltas[b] = (p.max() + 1 - L) if p.size else 2 - L  # empty row: all-ones positions
    if ii != len(img) or vi != len(vid):
        raise PositionError(f"{len(img) - ii} image and {len(vid) - vi} video grid(s) have no placeholders")
    return pos, deltas
