"""DeepVideo-R1's difficulty-aware augmentation, as pure per-sample functions.

The RL side measures difficulty (Δ = replay-buffer mean reward − the prompt's group mean) and turns
it into a signed *strength* in [-1, 1]: negative means the prompt was easy (perturb the video),
positive means it was hard (show part of a reasoning hint). The paper gives no exact noise σ or
hint-length schedule, so both live in :class:`AugmentConfig`.

- easy, ``mode="noise"``: frame-level Gaussian noise with σ = |strength| · ``noise_sigma``
  (in [0, 1] pixel units; uint8 frames are scaled by 255);
- easy, ``mode="mask"``: a fraction |strength| · ``max_mask_fraction`` of the frames is blanked
  (set to ``mask_value``), chosen at random;
- hard: the first ⌈strength · ``max_hint_fraction`` · words⌉ words of the hint text are inserted
  into the prompt after the question (``Hint: …``).

Every function takes an explicit ``np.random.Generator``: a grain ``random_map`` hands one per
element, derived from the pipeline seed and the element index, so augmentation is reproducible
and survives an iterator restore.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import numpy as np


@dataclasses.dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    easy_mode: Literal["noise", "mask"] = "noise"
    noise_sigma: float = 0.3         # σ at strength 1, pixel range [0, 1]
    max_mask_fraction: float = 0.5   # frames blanked at strength 1
    mask_value: int = 0
    max_hint_fraction: float = 0.5   # share of the hint's words shown at strength 1
    hint_prefix: str = "Hint: "

    def __post_init__(self):
        if self.easy_mode not in ("noise", "mask"):
            raise ValueError(f"easy_mode must be 'noise' or 'mask', got {self.easy_mode!r}")
        for name in ("noise_sigma", "max_mask_fraction", "max_hint_fraction"):
            v = getattr(self, name)
            if not (0.0 <= v and math.isfinite(v)):
                raise ValueError(f"{name} must be >= 0, got {v}")
        if self.max_mask_fraction > 1.0 or self.max_hint_fraction > 1.0:
            raise ValueError("max_mask_fraction and max_hint_fraction must be <= 1")


def _check_strength(strength: float) -> float:
    if not (math.isfinite(strength) and 0.0 <= strength <= 1.0):
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    return float(strength)


def add_frame_noise(frames: np.ndarray, strength: float, rng: np.random.Generator, *, sigma: float = 0.3) -> np.ndarray:
    """Gaussian noise, σ = strength · sigma in [0, 1] pixel units; same dtype and range back."""
    strength = _check_strength(strength)
    if strength == 0.0 or sigma == 0.0:
        return frames
    if frames.dtype == np.uint8:
        noise = rng.normal(0.0, strength * sigma * 255.0, size=frames.shape).astype(np.float32)
        return np.clip(frames.astype(np.float32) + noise, 0, 255).round().astype(np.uint8)
    if not np.issubdtype(frames.dtype, np.floating):
        raise TypeError(f"frames must be uint8 or floating, got {frames.dtype}")
    noise = rng.normal(0.0, strength * sigma, size=frames.shape).astype(frames.dtype)
    return frames + noise


def mask_frames(frames: np.ndarray, strength: float, rng: np.random.Generator, *,
                max_fraction: float = 0.5, value: float = 0) -> tuple[np.ndarray, np.ndarray]:
    """Blank ⌊strength · max_fraction · T⌉ random frames (never all). Returns (frames, kept[T])."""
    strength = _check_strength(strength)
    t = frames.shape[0]
    n = min(int(round(strength * max_fraction * t)), t - 1)
    kept = np.ones(t, dtype=bool)
    if n <= 0:
        return frames, kept
    kept[rng.choice(t, size=n, replace=False)] = False
    out = frames.copy()
    out[~kept] = value
    return out, kept


def hint_prefix_words(hint: str, strength: float, *, max_fraction: float = 0.5) -> str:
    """The first ⌈strength · max_fraction · words⌉ words of ``hint`` ('' at strength 0)."""
    strength = _check_strength(strength)
    words = hint.split()
    n = math.ceil(strength * max_fraction * len(words) - 1e-9)
    return " ".join(words[:n])


def insert_hint(question: str, hint: str, strength: float, *, max_fraction: float = 0.5,
                prefix: str = "Hint: ") -> str:
    """The question with a partial hint appended on its own line (unchanged at strength 0)."""
    shown = hint_prefix_words(hint, strength, max_fraction=max_fraction)
    return f"{question}\n{prefix}{shown}" if shown else question


def augment_example(example: dict[str, Any], strength: float, rng: np.random.Generator,
                    cfg: AugmentConfig = AugmentConfig()) -> dict[str, Any]:
    """Apply the DeepVideo-R1 rule to one pipeline example for a signed ``strength`` in [-1, 1].

    ``example`` has ``question`` (str), optionally ``frames`` and ``hint`` (str: defaults to the
    record's reference reasoning when the pipeline provides it). Returns a new dict with
    ``augment`` = ("none" | "noise" | "mask" | "hint", |strength|) recorded for logging.
    """
    if not (math.isfinite(strength) and -1.0 <= strength <= 1.0):
        raise ValueError(f"signed strength must be in [-1, 1], got {strength}")
    out = dict(example)
    if strength > 0.0 and example.get("hint"):
        out["question"] = insert_hint(example["question"], example["hint"], strength,
                                      max_fraction=cfg.max_hint_fraction, prefix=cfg.hint_prefix)
        out["augment"] = ("hint", strength)
    elif strength < 0.0 and example.get("frames") is not None:
        if cfg.easy_mode == "noise":
            out["frames"] = add_frame_noise(example["frames"], -strength, rng, sigma=cfg.noise_sigma)
        else:
            out["frames"], out["frame_kept"] = mask_frames(
                example["frames"], -strength, rng, max_fraction=cfg.max_mask_fraction, value=cfg.mask_value)
        out["augment"] = (cfg.easy_mode, -strength)
    else:
        out["augment"] = ("none", 0.0)
    return out
