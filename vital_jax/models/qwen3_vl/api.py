"""Host-side entry point: a transformers-style batch -> the jitted Qwen3-VL forward.

The ragged work (which token takes which visual row, the tower's per-patch layout) happens here in
NumPy; the device sees dense arrays only. Position ids are an input: this family has no rope
index of its own yet (see the package docstring).
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from vital_jax.models.qwen2_5_vl.api import InputError, visual_token_index
from vital_jax.models.qwen3_vl import modeling
from vital_jax.models.qwen3_vl.config import ModelConfig

__all__ = ["InputError", "forward", "vision_processing", "visual_token_index"]


@functools.partial(jax.jit, static_argnums=0)
def _logits(cfg, params, input_ids, position_ids, attention_mask, vision, vis_index):
    return modeling.model_logits(cfg, params, input_ids, position_ids, attention_mask, vision, vis_index)


def forward(cfg: ModelConfig, params: dict, input_ids, position_ids, attention_mask=None, *,
            pixel_values=None, image_grid_thw=None, pixel_values_videos=None, video_grid_thw=None) -> np.ndarray:
    """float32 logits ``[B, L, V]`` of a batch with explicit ``position_ids [3, B, L]``.

    Images and videos go through the tower together (images first, the order ``vis_index``
    counts them in); each frame attends only to itself and has its own position grid, so this
    equals encoding them separately.
    """
    ids = np.asarray(input_ids, np.int32)
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask, np.int32)
    pos = np.asarray(position_ids, np.int32)
    if pos.shape != (3, *ids.shape):
        raise InputError(f"position_ids has shape {pos.shape}, expected {(3, *ids.shape)}")
    pix, grids = [], []
    for p, g in ((pixel_values, image_grid_thw), (pixel_values_videos, video_grid_thw)):
        if (p is None) != (g is None):
            raise InputError("pixel values and their grid_thw must be given together")
        if p is not None:
            pix.append(np.asarray(p, np.float32))
            grids.append(np.asarray(g, np.int64).reshape(-1, 3))
    vision = vis_index = None
    if pix:
        vis_index = visual_token_index(cfg, ids, image_grid_thw, video_grid_thw)
        vision = modeling.vision_arrays(cfg, np.concatenate(pix), np.concatenate(grids))
    return np.asarray(_logits(cfg, params, ids, pos, mask, vision, vis_index))


def vision_processing(cfg: ModelConfig):
    """How this family's tower wants its pixels for :mod:`vital_jax.video`: 16 px patches (from
    the config) and mean = std = 0.5 per channel (transformers' Qwen3-VL image and video
    processors use IMAGENET_STANDARD_MEAN/STD)."""
    from vital_jax.video.patchify import Processing

    v = cfg.vision
    return Processing(patch_size=v.patch_size, merge_size=v.spatial_merge_size, temporal_patch_size=v.temporal_patch_size,
                      mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
