"""Normalise frames and flatten them into the patch layout of the Qwen2-VL vision tower (and its
successors': Qwen3-VL's is the same with 16 px patches, see :class:`Processing`).

Layout (what HF's Qwen2-VL image/video processors produce and the Conv3d patch embed plus
the 2x2 PatchMerger expect): rows are patches ordered by
``(t, h_block, w_block, h_in_block, w_in_block)`` where blocks are 2x2 groups of 14-px
patches, so every 4 consecutive rows form one merged token; each row is
``(C, temporal_patch, 14, 14)`` flattened (1176 values).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vital_jax.video.sampling import MERGE_SIZE, PATCH_SIZE, TEMPORAL_PATCH_SIZE

# OpenAI CLIP statistics (Qwen2-VL preprocessor_config.json).
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class Processing:
    """What a model family's vision tower wants of the pixels: the patch grid and the per-channel
    statistics. The default is Qwen2.5-VL's (14 px patches, CLIP statistics); each model family
    gives its own (``vision_processing(cfg)`` in its package). Frame sizes become multiples of
    :attr:`factor` (one merged token's side)."""

    patch_size: int = PATCH_SIZE
    merge_size: int = MERGE_SIZE
    temporal_patch_size: int = TEMPORAL_PATCH_SIZE
    mean: tuple[float, float, float] = tuple(float(x) for x in CLIP_MEAN)
    std: tuple[float, float, float] = tuple(float(x) for x in CLIP_STD)

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size


def normalize(frames: np.ndarray, processing: Processing = Processing()) -> np.ndarray:
    """uint8 ``[..., C]`` -> float32 ``(x / 255 - mean) / std`` (rescale then normalise, as HF)."""
    x = frames.astype(np.float32) * np.float32(1 / 255)
    return (x - np.asarray(processing.mean, np.float32)) / np.asarray(processing.std, np.float32)


def patchify(
    frames: np.ndarray,
    *,
    patch_size: int = PATCH_SIZE,
    merge_size: int = MERGE_SIZE,
    temporal_patch_size: int = TEMPORAL_PATCH_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Flatten normalised float frames ``[T, H, W, C]`` into ``(pixel_values, grid_thw)``.

    ``pixel_values`` is ``[grid_t * grid_h * grid_w, C * temporal_patch * patch * patch]``,
    ``grid_thw`` int64 ``[3]``. A T that is not a multiple of the temporal patch is padded
    by repeating the last frame (HF's rule); a single image becomes two identical frames.
    """
    t, h, w, c = frames.shape
    unit = patch_size * merge_size
    if h % unit or w % unit:
        raise ValueError(f"frame size {h}x{w} is not a multiple of {unit}; resize first")
    if t % temporal_patch_size:
        pad = np.repeat(frames[-1:], temporal_patch_size - t % temporal_patch_size, axis=0)
        frames = np.concatenate([frames, pad], axis=0)
        t = frames.shape[0]
    gt, gh, gw = t // temporal_patch_size, h // patch_size, w // patch_size
    x = frames.reshape(
        gt, temporal_patch_size,
        gh // merge_size, merge_size, patch_size,
        gw // merge_size, merge_size, patch_size,
        c,
    )
    # -> [gt, gh/m, gw/m, m(h), m(w), C, tp, p(h), p(w)]
    x = x.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7)
    pixel_values = np.ascontiguousarray(x).reshape(gt * gh * gw, c * temporal_patch_size * patch_size**2)
    return pixel_values, np.array([gt, gh, gw], dtype=np.int64)


def num_merged_tokens(grid_thw, merge_size: int = MERGE_SIZE) -> int:
    """Placeholder tokens one visual input takes in the text: ``t * h * w / merge**2``."""
    t, h, w = (int(v) for v in grid_thw)
    return t * h * w // (merge_size * merge_size)


def to_patches(frames: np.ndarray, processing: Processing = Processing()) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frames ``[T, H, W, C]`` -> ``(pixel_values, grid_thw)`` for the model family
    ``processing`` describes: :func:`normalize` then :func:`patchify` with its grid."""
    return patchify(normalize(frames, processing), patch_size=processing.patch_size,
                    merge_size=processing.merge_size, temporal_patch_size=processing.temporal_patch_size)
