"""transformers (torch) reference harness for Qwen2.5-VL parity tests.

Everything here runs the *installed* transformers 5.23 ``Qwen2_5_VLForConditionalGeneration``
on CPU, in float32 and eval mode, and hands back NumPy arrays.  It is independent of the
Flax implementation in ``vital_jax/models/qwen2_5_vl`` so that parity tests compare two
separately written models.

Conventions (shared by every function below)
--------------------------------------------
* ``input_ids``: int array ``[B, L]`` (NumPy or torch).  Rows may be LEFT-padded; then
  ``attention_mask`` ``[B, L]`` (1 = real token, 0 = pad) must be given.
* Visual grids (``image_grid_thw`` / ``video_grid_thw``): a sequence of ``(t, h, w)`` PATCH
  grids (``t`` = number of temporal patches = frames / 2, ``h``/``w`` = 14 px patches, even),
  or an int array ``[N, 3]``.  Items are ordered row-major over the batch: all items of row 0
  in order of appearance, then row 1, ... (the same order transformers expects).
* ``pixel_values`` / ``pixel_values_videos``: float ``[sum(t*h*w), 3*2*14*14]``, the patches of
  all items concatenated in the same order (see :func:`make_visual`).
* ``second_per_grid_ts``: one float per video (seconds covered by one temporal patch,
  ``temporal_patch_size / fps``; 1.0 at 2 fps).  ``None`` means 1.0 for every video.
* ``position_ids``: int ``[3, B, L]`` M-RoPE positions (temporal, height, width), normally from
  :func:`reference_rope_index`.  They are ALWAYS passed explicitly to transformers, so
  transformers' own (differing, see below) rope index is never used by the logits helpers.
* Logits come back as float32 NumPy ``[B, L, V]``.  Rows at padded positions are meaningless
  (the pad query attends to nothing useful); compare only ``attention_mask == 1`` rows.

transformers 5.23 vs the original Qwen2.5-VL position rule (why we pass explicit positions)
------------------------------------------------------------------------------------------
1. Text after a vision segment: original = ``max(all positions so far) + 1``; 5.23 =
   ``st + max(h, w) / merge``.  They differ once ``floor((T-1) * spg * tps) >= max(h, w)/merge``.
2. Padding positions: original sets masked tokens to position **1** (``torch.ones`` init, and
   ``masked_fill_(mask == 0, 1)`` in the text-only branch); 5.23 leaves them at **0**.
3. ``rope_deltas``: original = ``max(pos) + 1 - L_padded`` (so cache index + delta is the next
   position); 5.23 = ``max(pos) + 1 - n_valid_tokens`` (differs by the number of pads).
4. Images: the original uses temporal interval 0 for images, 5.23 uses 1 (only matters for an
   image grid with t > 1, which never occurs in practice).
5. Without ``mm_token_type_ids`` 5.23 silently falls back to 1D positions when no position ids
   are passed.  We always pass both.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from transformers.cache_utils import DynamicCache
from transformers.vision_utils import get_vision_window_index

# ---------------------------------------------------------------------------------------------
# Tiny config
# ---------------------------------------------------------------------------------------------

#: Special token ids of the tiny vocabulary (random text ids are drawn below ``TEXT_ID_LIMIT``).
PAD_ID = 304
EOS_ID = 305
VISION_START_ID = 308
VISION_END_ID = 309
IMAGE_ID = 310
VIDEO_ID = 311
TEXT_ID_LIMIT = 300

#: The tiny Qwen2.5-VL config both sides use, in transformers 5.x nested layout.
TINY = dict(
    text_config=dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # head_dim = 64 / 4 = 16
        intermediate_size=128,
        vocab_size=320,
        rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=[2, 3, 3]),
        rms_norm_eps=1e-6,
        max_position_embeddings=4096,
        hidden_act="silu",
        bos_token_id=None,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    ),
    vision_config=dict(
        depth=4,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=64,
        patch_size=14,
        temporal_patch_size=2,
        spatial_merge_size=2,
        window_size=56,  # 56 px = 4x4 patches = 2x2 merged tokens per window
        fullatt_block_indexes=[1, 3],
        tokens_per_second=2,
        in_channels=3,
        hidden_act="silu",
    ),
    image_token_id=IMAGE_ID,
    video_token_id=VIDEO_ID,
    vision_start_token_id=VISION_START_ID,
    vision_end_token_id=VISION_END_ID,
    tie_word_embeddings=False,
    eos_token_id=EOS_ID,
    pad_token_id=PAD_ID,
)

PATCH_DIM = 3 * 2 * 14 * 14  # in_channels * temporal_patch * patch * patch = 1176


def tiny_hf_config(**overrides) -> Qwen2_5_VLConfig:
    """Return a ``Qwen2_5_VLConfig`` built from :data:`TINY` with overrides applied.

    Override forms (all may be combined):

    * top-level keys: ``tie_word_embeddings=True``, ``image_token_id=...``, ``dtype="bfloat16"``
      (``dtype`` is also copied into ``text_config``/``vision_config``);
    * ``text_config={...}`` / ``vision_config={...}``: partial dicts merged into the sub-configs;
    * prefixed shortcuts ``text_<key>=`` / ``vision_<key>=``, e.g. ``text_num_hidden_layers=1``,
      ``vision_depth=2``, ``vision_window_size=112``, ``vision_fullatt_block_indexes=[0]``.
    """
    cfg = copy.deepcopy(TINY)
    for key, value in overrides.items():
        if key in ("text_config", "vision_config"):
            cfg[key].update(copy.deepcopy(value))
        elif key.startswith("text_"):
            cfg["text_config"][key[len("text_"):]] = value
        elif key.startswith("vision_"):
            cfg["vision_config"][key[len("vision_"):]] = value
        elif key == "dtype":
            cfg["dtype"] = value
            cfg["text_config"]["dtype"] = value
            cfg["vision_config"]["dtype"] = value
        else:
            cfg[key] = value
    return Qwen2_5_VLConfig(**cfg)


# ---------------------------------------------------------------------------------------------
# Model construction / checkpoint
# ---------------------------------------------------------------------------------------------


def build_hf_model(
    config: Qwen2_5_VLConfig | None = None,
    seed: int = 0,
    *,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "eager",
) -> Qwen2_5_VLForConditionalGeneration:
    """Build a random ``Qwen2_5_VLForConditionalGeneration`` with non-trivial weights.

    HF initialises norms to 1, biases to 0 and matrices with std 0.02 (which makes a tiny model
    nearly constant).  Here EVERY parameter is redrawn from a ``torch.Generator(seed)``:

    * 1-D parameters that HF initialised to ones (RMSNorm weights): ``1 + 0.1 * N(0, 1)``;
    * other 1-D parameters (biases): ``0.1 * N(0, 1)``;
    * embedding rows: ``0.5 * N(0, 1)``;
    * matrices / the Conv3d patch kernel: ``N(0, 1) / sqrt(fan_in)`` (activations stay O(1),
      logits are well spread so greedy argmaxes are not near-ties).

    Parameters are visited in ``named_parameters()`` order (tied lm_head visited once), so the
    weights are a deterministic function of ``(config, seed)``.  Returns the model in eval mode,
    on CPU, in ``dtype`` (float32 by default), with the ``eager`` attention implementation.
    """
    if config is None:
        config = tiny_hf_config()
    model = Qwen2_5_VLForConditionalGeneration._from_config(
        config, attn_implementation=attn_implementation, dtype=torch.float32
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if p.ndim == 1:
                if torch.all(p == 1):
                    p.copy_(1.0 + 0.1 * noise)
                else:
                    p.copy_(0.1 * noise)
            elif "embed_tokens" in name:
                p.copy_(0.5 * noise)
            else:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(noise / np.sqrt(fan_in))
    model = model.to(dtype)
    model.eval()
    return model


def save_hf_checkpoint(model, directory, max_shard_size: int | str | None = None,
                       original_format: bool = True) -> Path:
    """``save_pretrained`` to ``directory`` as safetensors (config.json + weights); returns the dir.

    With ``max_shard_size`` (e.g. ``"100KB"`` or an int in bytes) the weights are sharded and a
    ``model.safetensors.index.json`` appears; without it a single ``model.safetensors``.  With
    ``tie_word_embeddings=True`` no ``lm_head.weight`` is written (as in the 3B checkpoint).

    Key layout: transformers 5.23 by default (``original_format=True``) converts back to the
    PUBLISHED hub layout: ``model.embed_tokens.weight``, ``model.layers.N.*``,
    ``model.norm.weight``, ``visual.patch_embed|blocks.N|merger.*``, ``lm_head.weight``.
    ``original_format=False`` writes the 5.x module layout instead: ``model.language_model.*``,
    ``model.visual.*``, ``lm_head.weight``.  config.json is nested (``text_config`` /
    ``vision_config``, ``rope_parameters`` holding ``rope_theta`` and ``mrope_section``).
    """
    directory = Path(directory)
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(directory, save_original_format=original_format, **kwargs)
    return directory


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def _grid_list(grids) -> list[tuple[int, int, int]]:
    if grids is None:
        return []
    if isinstance(grids, torch.Tensor):
        grids = grids.cpu().numpy()
    return [tuple(int(v) for v in g) for g in np.asarray(grids).reshape(-1, 3)]


def _to_np(x):
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def make_visual(grid_thw_list, seed: int = 0) -> np.ndarray:
    """Random ``pixel_values`` float32 ``[sum(t*h*w), 1176]`` (N(0,1)) for ``(t, h, w)`` grids.

    ``h`` and ``w`` must be even (spatial merge 2).  Patches of the items are concatenated in
    list order; inside an item the rows follow transformers' patch order (t, h-blocks, w-blocks,
    2x2 merge unit) -- for random data only the count matters.
    """
    grids = _grid_list(grid_thw_list)
    for t, h, w in grids:
        if h % 2 or w % 2 or t < 1:
            raise ValueError(f"bad grid {(t, h, w)}: need t >= 1 and even h, w")
    n = sum(t * h * w for t, h, w in grids)
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, PATCH_DIM)).astype(np.float32)


def build_input_ids(segments, seed: int = 0, spatial_merge: int = 2) -> np.ndarray:
    """Token ids (1-D int64) for a list of segments.

    ``segments`` items: ``("text", n)`` -> n random ids in ``[0, 300)``;
    ``("image", (t, h, w))`` / ``("video", (t, h, w))`` -> ``vision_start``,
    ``t*h*w/4`` image/video pad ids, ``vision_end``; ``("video_ts", (t, h, w))`` -> per temporal
    group 3 text ids (a timestamp) + ``vision_start``, ``h*w/4`` video pads, ``vision_end``.
    Use :func:`segment_grids` for the grids.
    """
    rng = np.random.default_rng(seed)
    out: list[int] = []
    for kind, arg in segments:
        if kind == "text":
            out.extend(rng.integers(0, TEXT_ID_LIMIT, size=int(arg)).tolist())
        elif kind in ("image", "video"):
            t, h, w = (int(v) for v in arg)
            n = t * h * w // (spatial_merge**2)
            out.append(VISION_START_ID)
            out.extend([IMAGE_ID if kind == "image" else VIDEO_ID] * n)
            out.append(VISION_END_ID)
        elif kind == "video_ts":  # textual timestamps (Qwen3-VL): 3 text ids + one block per temporal group
            t, h, w = (int(v) for v in arg)
            for _ in range(t):
                out.extend(rng.integers(0, TEXT_ID_LIMIT, size=3).tolist())
                out += [VISION_START_ID] + [VIDEO_ID] * (h * w // spatial_merge**2) + [VISION_END_ID]
        else:
            raise ValueError(f"unknown segment kind {kind!r}")
    return np.asarray(out, dtype=np.int64)


def segment_grids(segments) -> tuple[list, list]:
    """``(image_grids, video_grids)``: the ``(t, h, w)`` grids of ``segments`` in order."""
    images = [tuple(a) for k, a in segments if k == "image"]
    videos = [tuple(a) for k, a in segments if k in ("video", "video_ts")]
    return images, videos


def pad_left(rows: Sequence[np.ndarray], pad_id: int = PAD_ID) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad 1-D id rows to ``[B, L]``; returns ``(input_ids, attention_mask)`` (int64)."""
    L = max(len(r) for r in rows)
    ids = np.full((len(rows), L), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), L), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, L - len(r):] = r
        mask[i, L - len(r):] = 1
    return ids, mask


def mm_token_type_ids(input_ids, image_token_id: int = IMAGE_ID, video_token_id: int = VIDEO_ID):
    """transformers 5.x modality ids: 0 text, 1 image pad, 2 video pad (same shape as ids)."""
    ids = _to_np(input_ids)
    return ((ids == image_token_id) * 1 + (ids == video_token_id) * 2).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Reference M-RoPE index (original Qwen2.5-VL rule, our own NumPy implementation)
# ---------------------------------------------------------------------------------------------


def reference_rope_index(
    input_ids,
    image_grid_thw=None,
    video_grid_thw=None,
    second_per_grid_ts=None,
    attention_mask=None,
    spatial_merge: int = 2,
    tokens_per_second: int = 2,
    *,
    image_token_id: int = IMAGE_ID,
    video_token_id: int = VIDEO_ID,
) -> tuple[np.ndarray, np.ndarray]:
    """M-RoPE positions by the ORIGINAL Qwen2.5-VL rule.  Returns ``(pos [3,B,L], deltas [B])``.

    Per row, over the unmasked tokens only, with ``cur`` = next free position (starts at 0):

    * a text token (anything but the image/video pad id, so vision_start/end too) gets ``cur`` on
      all three axes, ``cur += 1``;
    * an image/video item starting at ``st = cur`` consumes the next grid ``(t, h, w)`` of its
      modality (grids are consumed row-major over the batch) and covers
      ``n = t * (h/m) * (w/m)`` tokens in (t, row, col) order:
      temporal ``st + floor(t_idx * second_per_grid_t * tokens_per_second)`` for videos, ``st``
      for images; height ``st + row``; width ``st + col``.  Afterwards
      ``cur = max(all positions of the item) + 1`` (= max of everything so far + 1).
      The floor is computed as the original code does: float32 ``(t_idx * spg) * tps`` truncated.
    * masked (padding) tokens get position **1** on all axes (original code);
    * ``deltas[b] = max(valid positions of row b) + 1 - L`` with ``L`` the PADDED length, so the
      next token (cache index ``L``) gets position ``L + delta = max + 1`` on all three axes.
      A row with no valid token gets all-ones positions and ``delta = 2 - L`` (original text-only
      branch behaviour).

    ``input_ids`` may be 1-D (treated as ``[1, L]``).  ``second_per_grid_ts`` None = 1.0 each.
    """
    ids = _to_np(input_ids)
    if ids.ndim == 1:
        ids = ids[None]
    B, L = ids.shape
    mask = np.ones((B, L), dtype=bool) if attention_mask is None else _to_np(attention_mask).astype(bool)
    if mask.ndim == 1:
        mask = mask[None]
    images = iter(_grid_list(image_grid_thw))
    videos = _grid_list(video_grid_thw)
    spgs = [1.0] * len(videos) if second_per_grid_ts is None else [float(s) for s in _to_np(second_per_grid_ts).reshape(-1)]
    if len(spgs) != len(videos):
        raise ValueError("need one second_per_grid_t per video")
    videos = iter(zip(videos, spgs))

    pos = np.ones((3, B, L), dtype=np.int64)
    deltas = np.zeros((B,), dtype=np.int64)
    for b in range(B):
        valid = np.nonzero(mask[b])[0]
        row = ids[b, valid]
        out = np.zeros((3, len(row)), dtype=np.int64)
        cur = 0
        i = 0
        while i < len(row):
            tok = row[i]
            if tok != image_token_id and tok != video_token_id:
                out[:, i] = cur
                cur += 1
                i += 1
                continue
            if tok == image_token_id:
                t, h, w = next(images)
                t_off = np.zeros((t,), dtype=np.int64)
            else:
                (t, h, w), spg = next(videos)
                t_off = ((np.arange(t).astype(np.float32) * np.float32(spg)) * np.float32(tokens_per_second))
                t_off = np.floor(t_off).astype(np.int64)
            gh, gw = h // spatial_merge, w // spatial_merge
            n = t * gh * gw
            if i + n > len(row) or np.any(row[i:i + n] != tok):
                raise ValueError(f"row {b}: {n} pad tokens expected for grid {(t, h, w)} at {i}")
            tt, hh, ww = np.meshgrid(t_off, np.arange(gh), np.arange(gw), indexing="ij")
            st = cur
            out[0, i:i + n] = st + tt.reshape(-1)
            out[1, i:i + n] = st + hh.reshape(-1)
            out[2, i:i + n] = st + ww.reshape(-1)
            cur = int(out[:, i:i + n].max()) + 1
            i += n
        pos[:, b, valid] = out
        deltas[b] = (int(out.max()) if len(row) else 1) + 1 - L
    return pos, deltas


def hf_rope_index(model, input_ids, image_grid_thw=None, video_grid_thw=None, second_per_grid_ts=None,
                  attention_mask=None) -> tuple[np.ndarray, np.ndarray]:
    """transformers 5.23's OWN ``get_rope_index`` (for documenting where it differs).

    Returns ``(pos [3,B,L], deltas [B])`` as NumPy.
    """
    ids = torch.as_tensor(_to_np(input_ids), dtype=torch.long)
    tt = torch.as_tensor(mm_token_type_ids(ids.numpy()), dtype=torch.int)
    kw = _visual_kwargs(None, image_grid_thw, None, video_grid_thw, second_per_grid_ts)
    mask = None if attention_mask is None else torch.as_tensor(_to_np(attention_mask), dtype=torch.long)
    with torch.no_grad():
        pos, deltas = model.model.get_rope_index(
            ids, mm_token_type_ids=tt, image_grid_thw=kw.get("image_grid_thw"),
            video_grid_thw=kw.get("video_grid_thw"), second_per_grid_ts=kw.get("second_per_grid_ts"),
            attention_mask=mask,
        )
    return pos.numpy(), deltas.reshape(-1).numpy()


# ---------------------------------------------------------------------------------------------
# Forward helpers
# ---------------------------------------------------------------------------------------------


def _visual_kwargs(pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw, second_per_grid_ts):
    kw = {}
    if pixel_values is not None:
        kw["pixel_values"] = torch.as_tensor(_to_np(pixel_values), dtype=torch.float32)
    if image_grid_thw is not None and len(_grid_list(image_grid_thw)):
        kw["image_grid_thw"] = torch.tensor(_grid_list(image_grid_thw), dtype=torch.long)
    if pixel_values_videos is not None:
        kw["pixel_values_videos"] = torch.as_tensor(_to_np(pixel_values_videos), dtype=torch.float32)
    if video_grid_thw is not None and len(_grid_list(video_grid_thw)):
        kw["video_grid_thw"] = torch.tensor(_grid_list(video_grid_thw), dtype=torch.long)
        if second_per_grid_ts is not None:
            kw["second_per_grid_ts"] = torch.tensor(
                np.asarray(_to_np(second_per_grid_ts), dtype=np.float32).reshape(-1))
    return kw


def _forward(model, input_ids, position_ids, attention_mask=None, past_key_values=None, use_cache=False, **vis):
    ids = torch.as_tensor(np.array(_to_np(input_ids), dtype=np.int64))
    if ids.ndim == 1:
        ids = ids[None]
    pos = torch.as_tensor(np.array(_to_np(position_ids), dtype=np.int64))
    if pos.ndim == 2:  # [3, L] for a single row
        pos = pos[:, None]
    if pos.shape != (3, *ids.shape):
        raise ValueError(f"position_ids must be [3, B, L] = {(3, *ids.shape)}, got {tuple(pos.shape)}")
    mask = None if attention_mask is None else torch.as_tensor(_to_np(attention_mask), dtype=torch.long)
    kw = _visual_kwargs(vis.get("pixel_values"), vis.get("image_grid_thw"), vis.get("pixel_values_videos"),
                        vis.get("video_grid_thw"), vis.get("second_per_grid_ts"))
    with torch.no_grad():
        out = model(
            input_ids=ids,
            position_ids=pos,
            attention_mask=mask,
            mm_token_type_ids=torch.as_tensor(mm_token_type_ids(ids.numpy()), dtype=torch.int),
            past_key_values=past_key_values,
            use_cache=use_cache,
            **kw,
        )
    return out


def hf_logits(
    model,
    input_ids,
    position_ids,
    attention_mask=None,
    pixel_values=None,
    image_grid_thw=None,
    pixel_values_videos=None,
    video_grid_thw=None,
    second_per_grid_ts=None,
) -> np.ndarray:
    """Full forward with EXPLICIT ``position_ids [3, B, L]``; returns float32 logits ``[B, L, V]``.

    ``mm_token_type_ids`` is derived from the ids and passed as well.  With explicit 3-row
    positions transformers 5.23 uses them verbatim (no ``get_rope_index``, no rope_deltas).
    """
    out = _forward(model, input_ids, position_ids, attention_mask, pixel_values=pixel_values,
                   image_grid_thw=image_grid_thw, pixel_values_videos=pixel_values_videos,
                   video_grid_thw=video_grid_thw, second_per_grid_ts=second_per_grid_ts)
    return out.logits.float().numpy()


def hf_vision(model, pixel_values, grid_thw, return_blocks: bool = False):
    """Run the vision tower (patch embed, blocks, merger) on ``pixel_values`` for ``grid_thw``.

    Returns the merged embeddings float32 ``[sum(t*h*w)/4, out_hidden]`` in the ORIGINAL token
    order (the order the LLM placeholders consume them; transformers un-permutes the window order
    after the merger).  With ``return_blocks=True`` returns ``(merged, hidden)`` where
    ``hidden`` is a list ``[patch_embed_out, block_0_out, ..., block_{depth-1}_out]`` of float32
    ``[sum(t*h*w), vision_hidden]`` arrays, un-permuted from transformers' window order back to
    the original patch order (captured with forward hooks).
    """
    visual = model.model.visual
    pv = torch.as_tensor(_to_np(pixel_values), dtype=torch.float32)
    grid = torch.tensor(_grid_list(grid_thw), dtype=torch.long)
    captured: list[torch.Tensor] = []
    handles = []
    if return_blocks:
        handles.append(visual.patch_embed.register_forward_hook(lambda m, i, o: captured.append(("embed", o))))
        for blk in visual.blocks:
            handles.append(blk.register_forward_hook(lambda m, i, o: captured.append(("block", o))))
    try:
        with torch.no_grad():
            out = visual(pv, grid_thw=grid)
    finally:
        for h in handles:
            h.remove()
    merged = out.pooler_output.float().numpy()
    if not return_blocks:
        return merged
    unit = visual.spatial_merge_unit
    window_index, _ = get_vision_window_index(grid, visual.spatial_merge_size, visual.window_size,
                                              visual.patch_size)
    inverse = torch.argsort(window_index)
    hidden = []
    for kind, o in captured:
        o = o[0] if isinstance(o, tuple) else o
        o = o.detach().float()
        if kind == "block":  # window order -> original patch order
            o = o.reshape(-1, unit, o.shape[-1])[inverse].reshape(-1, o.shape[-1])
        hidden.append(o.numpy())
    return merged, hidden


def _next_positions(position_ids, attention_mask) -> np.ndarray:
    """Per row: max over the valid positions (all 3 axes) + 1."""
    pos = _to_np(position_ids)
    if pos.ndim == 2:
        pos = pos[:, None]
    if attention_mask is None:
        return pos.max(axis=(0, 2)) + 1
    m = _to_np(attention_mask).astype(bool)
    return np.where(m[None], pos, np.iinfo(np.int64).min).max(axis=(0, 2)) + 1


def hf_greedy(
    model,
    input_ids,
    position_ids,
    max_new_tokens: int,
    attention_mask=None,
    pixel_values=None,
    image_grid_thw=None,
    pixel_values_videos=None,
    video_grid_thw=None,
    second_per_grid_ts=None,
    eos_token_id: int | None = None,
    pad_token_id: int = PAD_ID,
    return_logits: bool = False,
):
    """Manual greedy decode with the HF ``DynamicCache`` and explicit positions.

    Prefill runs ``input_ids`` at ``position_ids``.  Generated token k (0-based) is fed at
    position ``next[b] + k`` on all three axes, where ``next[b] = max(valid prompt positions of
    row b) + 1`` (= ``L + delta``).  The attention mask (if any) is extended with ones.

    Returns int64 ``[B, max_new_tokens]``.  With ``eos_token_id``: once a row has produced EOS,
    its later tokens are ``pad_token_id`` (the row still runs; decoding stops early only when
    every row is done, remaining columns padded).  With ``return_logits=True`` also returns the
    float32 logits ``[B, max_new_tokens, V]`` each token was chosen from (rows after EOS: the
    logits that were computed, still meaningful as model outputs).
    """
    ids = _to_np(input_ids)
    if ids.ndim == 1:
        ids = ids[None]
    B = ids.shape[0]
    mask = None if attention_mask is None else _to_np(attention_mask).astype(np.int64)
    nxt = _next_positions(position_ids, mask)
    cache = DynamicCache(config=model.config.text_config)
    out = _forward(model, ids, position_ids, mask, past_key_values=cache, use_cache=True,
                   pixel_values=pixel_values, image_grid_thw=image_grid_thw,
                   pixel_values_videos=pixel_values_videos, video_grid_thw=video_grid_thw,
                   second_per_grid_ts=second_per_grid_ts)
    cache = out.past_key_values
    step_logits = out.logits[:, -1].float().numpy()
    gen = np.full((B, max_new_tokens), pad_token_id, dtype=np.int64)
    all_logits = np.zeros((B, max_new_tokens, step_logits.shape[-1]), dtype=np.float32)
    done = np.zeros((B,), dtype=bool)
    for k in range(max_new_tokens):
        tok = step_logits.argmax(-1)
        all_logits[:, k] = step_logits
        tok = np.where(done, pad_token_id, tok)
        gen[:, k] = tok
        if eos_token_id is not None:
            done |= tok == eos_token_id
            if done.all():
                break
        if k == max_new_tokens - 1:
            break
        if mask is not None:
            mask = np.concatenate([mask, np.ones((B, 1), dtype=np.int64)], axis=1)
        pos = np.broadcast_to((nxt + k)[None, :, None], (3, B, 1))
        out = _forward(model, tok[:, None], pos, mask, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        step_logits = out.logits[:, -1].float().numpy()
    return (gen, all_logits) if return_logits else gen


def _items_by_chunk(ids, grids, token_id, mask, bounds, spatial_merge=2):
    """Assign each visual item (row-major order) to the chunk containing its tokens.

    Returns a list (per item) of ``(chunk_index, patch_start, patch_count)``.
    """
    grids = list(grids)
    res = []
    gi = 0
    patch_off = 0
    B, L = ids.shape
    for b in range(B):
        j = 0
        while j < L:
            if ids[b, j] == token_id and (mask is None or mask[b, j]):
                t, h, w = grids[gi]
                n = t * h * w // spatial_merge**2
                end = j + n
                chunk = int(np.searchsorted(bounds, j, side="right")) - 1
                if end > bounds[chunk + 1]:
                    raise ValueError(f"visual item at row {b}, token {j} straddles a chunk boundary")
                res.append((chunk, patch_off, t * h * w))
                patch_off += t * h * w
                gi += 1
                j = end
            else:
                j += 1
    if gi != len(grids):
        raise ValueError(f"{len(grids)} grids given but {gi} items found in the ids")
    return res


def hf_incremental_logits(
    model,
    input_ids,
    position_ids,
    split: int | Sequence[int],
    attention_mask=None,
    pixel_values=None,
    image_grid_thw=None,
    pixel_values_videos=None,
    video_grid_thw=None,
    second_per_grid_ts=None,
) -> np.ndarray:
    """Chunked forward through the HF cache; returns logits of every chunk after the first.

    All arguments describe the FULL history exactly as for :func:`hf_logits`: ``input_ids``
    ``[B, L]``, ``position_ids [3, B, L]`` computed on the whole sequence (e.g. by
    :func:`reference_rope_index`), and all images/videos of the whole history (row-major order).
    ``split`` (int, or increasing ints) cuts the sequence into chunks ``[0, s0), [s0, s1), ...,
    [s_last, L)``.  Chunk 0 is prefilled; each later chunk is run by ``forward`` with its ids,
    the pixels/grids/``second_per_grid_ts`` of the items whose tokens lie in it (a NEW video in
    the second turn), the positions sliced ``position_ids[:, :, a:b]``, the attention mask
    ``[:, :b]`` and the cache (``generate()`` cannot do this in 5.23).  An item straddling a
    boundary raises ``ValueError``.

    Returns float32 logits ``[B, L - s0, V]`` (concatenated over the chunks after the first); it
    must equal ``hf_logits(...)[:, s0:]``.
    """
    ids = _to_np(input_ids)
    if ids.ndim == 1:
        ids = ids[None]
    B, L = ids.shape
    pos = _to_np(position_ids)
    if pos.ndim == 2:
        pos = pos[:, None]
    mask = None if attention_mask is None else _to_np(attention_mask).astype(np.int64)
    splits = [int(split)] if np.isscalar(split) else [int(s) for s in split]
    bounds = [0, *splits, L]
    if any(a >= b for a, b in zip(bounds[:-1], bounds[1:])):
        raise ValueError(f"splits must be increasing inside (0, {L}): {splits}")
    cfg = model.config
    merge = cfg.vision_config.spatial_merge_size
    img_grids, vid_grids = _grid_list(image_grid_thw), _grid_list(video_grid_thw)
    img_items = _items_by_chunk(ids, img_grids, cfg.image_token_id, mask, bounds, merge)
    vid_items = _items_by_chunk(ids, vid_grids, cfg.video_token_id, mask, bounds, merge)
    pv = _to_np(pixel_values)
    pvv = _to_np(pixel_values_videos)
    spg = None if second_per_grid_ts is None else np.asarray(_to_np(second_per_grid_ts), np.float32).reshape(-1)

    cache = DynamicCache(config=cfg.text_config)
    logits = []
    for c, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        vis = {}
        sel = [k for k, it in enumerate(img_items) if it[0] == c]
        if sel:
            vis["pixel_values"] = np.concatenate([pv[img_items[k][1]:img_items[k][1] + img_items[k][2]] for k in sel])
            vis["image_grid_thw"] = [img_grids[k] for k in sel]
        sel = [k for k, it in enumerate(vid_items) if it[0] == c]
        if sel:
            vis["pixel_values_videos"] = np.concatenate(
                [pvv[vid_items[k][1]:vid_items[k][1] + vid_items[k][2]] for k in sel])
            vis["video_grid_thw"] = [vid_grids[k] for k in sel]
            if spg is not None:
                vis["second_per_grid_ts"] = spg[sel]
        out = _forward(model, ids[:, a:b], pos[:, :, a:b], None if mask is None else mask[:, :b],
                       past_key_values=cache, use_cache=True, **vis)
        cache = out.past_key_values
        if c > 0:
            logits.append(out.logits.float().numpy())
    return np.concatenate(logits, axis=1)
