"""Draw a timestamp such as ``"12.50s"`` in red in each frame's bottom-right corner.

VITAL turns this on for RL and evaluation so the model can read absolute times off the
frames. A 5x7 bitmap font in NumPy (digits, '.', 's', ':', '-') keeps this dependency-free;
glyphs are scaled with the frame height so they stay legible at 224 px and at 1080 px.
"""

from __future__ import annotations

import functools

import numpy as np

_GLYPHS = {
    "0": ("01110", "10001", "10011", "10101", "11001", "10001", "01110"),
    "1": ("00100", "01100", "00100", "00100", "00100", "00100", "01110"),
    "2": ("01110", "10001", "00001", "00010", "00100", "01000", "11111"),
    "3": ("11110", "00001", "00001", "01110", "00001", "00001", "11110"),
    "4": ("00010", "00110", "01010", "10010", "11111", "00010", "00010"),
    "5": ("11111", "10000", "11110", "00001", "00001", "10001", "01110"),
    "6": ("00110", "01000", "10000", "11110", "10001", "10001", "01110"),
    "7": ("11111", "00001", "00010", "00100", "01000", "01000", "01000"),
    "8": ("01110", "10001", "10001", "01110", "10001", "10001", "01110"),
    "9": ("01110", "10001", "10001", "01111", "00001", "00010", "01100"),
    ".": ("00000", "00000", "00000", "00000", "00000", "01100", "01100"),
    "s": ("00000", "00000", "01111", "10000", "01110", "00001", "11110"),
    ":": ("00000", "01100", "01100", "00000", "01100", "01100", "00000"),
    "-": ("00000", "00000", "00000", "11111", "00000", "00000", "00000"),
    " ": ("00000",) * 7,
}
GLYPH_H, GLYPH_W = 7, 5
RED = (255, 0, 0)


def format_timestamp(seconds: float) -> str:
    """``12.5 -> "12.50s"`` (two decimals, as VITAL prints times)."""
    return f"{seconds:.2f}s"


@functools.lru_cache(maxsize=4096)
def text_mask(text: str, scale: int) -> np.ndarray:
    """Boolean ``[7*scale, (6*len-1)*scale]`` bitmap of ``text`` (1-column gap between glyphs)."""
    cols = []
    for i, ch in enumerate(text):
        if ch not in _GLYPHS:
            raise ValueError(f"overlay font has no glyph for {ch!r} in {text!r}")
        if i:
            cols.append(np.zeros((GLYPH_H, 1), dtype=bool))
        cols.append(np.array([[b == "1" for b in row] for row in _GLYPHS[ch]], dtype=bool))
    mask = np.concatenate(cols, axis=1)
    mask = mask.repeat(scale, axis=0).repeat(scale, axis=1)
    mask.setflags(write=False)
    return mask


def draw_text(frame: np.ndarray, text: str, *, color=RED, scale: int | None = None) -> np.ndarray:
    """Return a copy of uint8 ``[H, W, 3]`` ``frame`` with ``text`` in the bottom-right corner.

    ``scale`` defaults to about 1/16 of the frame height per glyph row block; text wider
    than the frame is shrunk, and clipped on the left only if even scale 1 does not fit.
    """
    h, w = frame.shape[:2]
    if scale is None:
        scale = max(1, h // (GLYPH_H * 16))
    while scale > 1 and (6 * len(text) - 1) * scale + 2 * scale > w:
        scale -= 1
    mask = text_mask(text, scale)
    margin = scale
    mh, mw = mask.shape
    y0, x0 = max(0, h - margin - mh), max(0, w - margin - mw)
    mask = mask[: h - y0, mask.shape[1] - (w - x0 if mw > w - x0 else mw):]
    out = frame.copy()
    region = out[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
    region[mask] = np.asarray(color, dtype=np.uint8)
    return out


def overlay_timestamps(frames: np.ndarray, times) -> np.ndarray:
    """Draw ``format_timestamp(times[i])`` on ``frames[i]`` (uint8 ``[T, H, W, 3]``)."""
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    if times.shape[0] != frames.shape[0]:
        raise ValueError(f"{frames.shape[0]} frames but {times.shape[0]} timestamps")
    return np.stack([draw_text(f, format_timestamp(t)) for f, t in zip(frames, times)])
