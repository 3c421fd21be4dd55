"""Host-side entry points: turn a transformers-style batch into the jitted model's arrays.

The ragged work (position ids, window layout, which token takes which visual row) happens here in
NumPy; the device sees dense arrays only.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from vital_jax.models.qwen2_5_vl import modeling
from vital_jax.models.qwen2_5_vl.config import ModelConfig
from vital_jax.models.qwen2_5_vl.rope import rope_index
from vital_jax.models.qwen2_5_vl.vision_layout import vision_layout
from vital_jax.errors import VitalError


class InputError(VitalError, ValueError):
    """A batch is inconsistent (names the tensor and what is wrong)."""


def visual_token_index(cfg: ModelConfig, input_ids: np.ndarray, image_grid_thw, video_grid_thw) -> np.ndarray:
    """``vis_index[B, L]``: row of the merged visual embeddings (images first, then videos) that
    each placeholder token takes, -1 for text. Checks the placeholder counts against the grids."""
    ids = np.asarray(input_ids)
    unit = cfg.vision.merge_unit
    img = np.zeros((0, 3), np.int64) if image_grid_thw is None else np.asarray(image_grid_thw).reshape(-1, 3)
    vid = np.zeros((0, 3), np.int64) if video_grid_thw is None else np.asarray(video_grid_thw).reshape(-1, 3)
    n_img = int(np.sum(np.prod(img, axis=1) // unit))
    n_vid = int(np.sum(np.prod(vid, axis=1) // unit))
    is_img = ids == cfg.image_token_id
    is_vid = ids == cfg.video_token_id
    if is_img.sum() != n_img:
        raise InputError(f"input_ids has {int(is_img.sum())} image placeholder tokens but image_grid_thw gives {n_img}")
    if is_vid.sum() != n_vid:
        raise InputError(f"input_ids has {int(is_vid.sum())} video placeholder tokens but video_grid_thw gives {n_vid}")
    out = np.full(ids.shape, -1, np.int32)
    out[is_img] = np.arange(n_img)
    out[is_vid] = n_img + np.arange(n_vid)
    return out


def vision_arrays(cfg: ModelConfig, pixel_values, grid_thw, pad_to: int | None = None) -> modeling.VisionArrays:
    """Pixels ``[N, patch_dim]`` (HF order) + grids -> padded device arrays for the tower."""
    pixel_values = np.asarray(pixel_values, dtype=np.float32)
    grid_thw = np.asarray(grid_thw).reshape(-1, 3)
    expect = int(np.sum(np.prod(grid_thw, axis=1)))
    if pixel_values.ndim != 2 or pixel_values.shape != (expect, cfg.vision.patch_dim):
        raise InputError(
            f"pixel_values has shape {pixel_values.shape}; grids {grid_thw.tolist()} need "
            f"({expect}, {cfg.vision.patch_dim})"
        )
    lay = vision_layout(grid_thw, cfg.vision, pad_to=pad_to)
    n = lay.perm.shape[0]
    pix = np.zeros((n, cfg.vision.patch_dim), np.float32)
    pix[:expect] = pixel_values
    # NumPy: the trainers' batches stack them on the host; jit moves them to the device
    return modeling.VisionArrays(pixels=pix, perm=np.asarray(lay.perm, np.int32),
                                 seg_window=np.asarray(lay.seg_window, np.int32),
                                 seg_full=np.asarray(lay.seg_full, np.int32), rot_hw=np.asarray(lay.rot_hw, np.int32),
                                 unperm=np.asarray(lay.unperm, np.int32))


@functools.lru_cache(maxsize=None)
def _jitted_logits(cfg: ModelConfig):
    return jax.jit(functools.partial(modeling.model_logits, cfg))


@functools.lru_cache(maxsize=None)
def _jitted_vision(cfg: ModelConfig):
    return jax.jit(lambda vp, va: modeling.encode_vision(cfg, vp, va))


def _concat_visual(batch):
    pix, grids = [], []
    if batch.get("pixel_values") is not None:
        pix.append(np.asarray(batch["pixel_values"], np.float32))
        grids.append(np.asarray(batch["image_grid_thw"]).reshape(-1, 3))
    if batch.get("pixel_values_videos") is not None:
        pix.append(np.asarray(batch["pixel_values_videos"], np.float32))
        grids.append(np.asarray(batch["video_grid_thw"]).reshape(-1, 3))
    if not pix:
        return None, None
    return np.concatenate(pix), np.concatenate(grids)


# transformers' names of a VL batch (both families take the same batch)
BATCH_KEYS = frozenset({"input_ids", "attention_mask", "position_ids", "pixel_values", "image_grid_thw",
                        "pixel_values_videos", "video_grid_thw", "second_per_grid_ts", "mm_token_type_ids"})


def forward(config: ModelConfig, params: dict, batch: dict) -> jax.Array:
    """Logits ``[B, L, V]`` (float32) for a transformers-style batch.

    ``batch`` keys: ``input_ids``, optional ``attention_mask``, optional ``position_ids[3, B, L]``
    (computed with :func:`rope_index` when absent), ``pixel_values``/``image_grid_thw``,
    ``pixel_values_videos``/``video_grid_thw``/``second_per_grid_ts``.
    """
    unknown = set(batch) - BATCH_KEYS
    if unknown:
        raise InputError(f"unknown batch key(s) {sorted(unknown)}")
    ids = np.asarray(batch["input_ids"])
    if ids.ndim != 2:
        raise InputError(f"input_ids must be [B, L], got shape {ids.shape}")
    mask = np.ones(ids.shape, np.int32) if batch.get("attention_mask") is None else np.asarray(batch["attention_mask"])
    if mask.shape != ids.shape:
        raise InputError(f"attention_mask shape {mask.shape} != input_ids shape {ids.shape}")
    if (batch.get("pixel_values") is None) != (batch.get("image_grid_thw") is None):
        raise InputError("pixel_values and image_grid_thw must be given together")
    if (batch.get("pixel_values_videos") is None) != (batch.get("video_grid_thw") is None):
        raise InputError("pixel_values_videos and video_grid_thw must be given together")
    vis_index = visual_token_index(config, ids, batch.get("image_grid_thw"), batch.get("video_grid_thw"))
    pos = batch.get("position_ids")
    if pos is None:
        pos, _ = rope_index(config, ids, batch.get("image_grid_thw"), batch.get("video_grid_thw"),
                            batch.get("second_per_grid_ts"), mask)
    pos = np.asarray(pos)
    if pos.shape != (3,) + ids.shape:
        raise InputError(f"position_ids shape {pos.shape} != (3, B, L) = {(3,) + ids.shape}")
    pix, grids = _concat_visual(batch)
    vision = None if pix is None else vision_arrays(config, pix, grids)
    return _jitted_logits(config)(
        params, jnp.asarray(ids, jnp.int32), jnp.asarray(pos, jnp.int32), jnp.asarray(mask, jnp.int32),
        vision=vision, vis_index=jnp.asarray(vis_index) if vision is not None else None,
    )


def encode_visual(config: ModelConfig, params: dict, pixel_values, grid_thw) -> jax.Array:
    """Merged visual embeddings ``[sum(t*h*w)/4, D]`` in the original token order."""
    va = vision_arrays(config, pixel_values, grid_thw)
    n = int(np.sum(np.prod(np.asarray(grid_thw).reshape(-1, 3), axis=1))) // config.vision.merge_unit
    return _jitted_vision(config)(params["vision"], va)[:n]


def vision_processing(cfg: ModelConfig):
    """How this family's tower wants its pixels (patch grid from the config; OpenAI CLIP
    statistics, as Qwen2.5-VL's preprocessor_config.json) for :mod:`vital_jax.video`."""
    from vital_jax.video.patchify import Processing

    v = cfg.vision
    return Processing(patch_size=v.patch_size, merge_size=v.spatial_merge_size, temporal_patch_size=v.temporal_patch_size)
