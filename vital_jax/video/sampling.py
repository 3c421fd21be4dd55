"""Frame-index and frame-size rules (qwen-vl-utils semantics, plus VITAL's clip rule).

Pure integer/float arithmetic on video metadata; no decoding. Everything here is a plain
function of ``(num_frames, video_fps, height, width, options)`` so it can be tested
exhaustively and reused by the data pipeline to predict token counts without decoding.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from vital_jax.video.errors import BadVideoSize, EmptyVideo, WindowOutOfRange

# Qwen2.5-VL geometry: 14-px patches merged 2x2 -> every side a multiple of 28.
PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
IMAGE_FACTOR = PATCH_SIZE * MERGE_SIZE  # 28
MAX_RATIO = 200

# Images (qwen-vl-utils defaults).
IMAGE_MIN_PIXELS = 4 * 28 * 28
IMAGE_MAX_PIXELS = 16384 * 28 * 28

# Videos (qwen-vl-utils defaults).
FRAME_FACTOR = 2
FPS = 2.0
FPS_MIN_FRAMES = 4
FPS_MAX_FRAMES = 768
VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEO_MAX_PIXELS = 768 * 28 * 28
VIDEO_TOTAL_PIXELS = int(128000 * 28 * 28 * 0.9)

# VITAL's tool clip (get_video_clip_frame).
CLIP_FPS = 2.0
CLIP_MAX_FRAMES = 64
CLIP_MIN_PIXELS = 4 * 28 * 28
CLIP_MAX_PIXELS = 64 * 28 * 28
CLIP_MIN_SECONDS = 1.0


def round_by_factor(x: float, factor: int) -> int:
    return round(x / factor) * factor


def ceil_by_factor(x: float, factor: int) -> int:
    return math.ceil(x / factor) * factor


def floor_by_factor(x: float, factor: int) -> int:
    return math.floor(x / factor) * factor


def smart_resize(
    height: int,
    width: int,
    *,
    factor: int = IMAGE_FACTOR,
    min_pixels: int = IMAGE_MIN_PIXELS,
    max_pixels: int = IMAGE_MAX_PIXELS,
    path: str = "",
) -> tuple[int, int]:
    """Target ``(height, width)``: multiples of ``factor``, pixels in [min, max], aspect kept.

    Raises BadVideoSize for a degenerate size or an aspect ratio above 200.
    """
    if height <= 0 or width <= 0:
        raise BadVideoSize(path, f"frame size {height}x{width} is not positive")
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise BadVideoSize(path, f"aspect ratio of {height}x{width} exceeds {MAX_RATIO}:1")
    h_bar = max(factor, round_by_factor(height, factor))
    w_bar = max(factor, round_by_factor(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, floor_by_factor(height / beta, factor))
        w_bar = max(factor, floor_by_factor(width / beta, factor))
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = ceil_by_factor(height * beta, factor)
        w_bar = ceil_by_factor(width * beta, factor)
    return h_bar, w_bar


def frame_range(
    num_frames: int,
    video_fps: float,
    start: float | None = None,
    end: float | None = None,
    *,
    path: str = "",
) -> tuple[int, int]:
    """Inclusive ``(first, last)`` frame of a ``[start, end]`` seconds window.

    qwen-vl-utils rule: times are clamped to ``[0, duration]``, the first frame is
    ``ceil(start * fps)`` and the last ``min(floor(end * fps), num_frames - 1)``.
    """
    if num_frames <= 0 or not video_fps > 0:
        raise EmptyVideo(path, f"no frames to sample (num_frames={num_frames}, fps={video_fps})")
    if start is None and end is None:
        return 0, num_frames - 1
    duration = num_frames / video_fps
    first = 0 if start is None else math.ceil(max(0.0, min(start, duration)) * video_fps)
    last = num_frames - 1
    if end is not None:
        last = min(math.floor(max(0.0, min(end, duration)) * video_fps), num_frames - 1)
    if first >= last:
        raise WindowOutOfRange(
            path, f"window [{start}, {end}] s selects no frames of a {duration:.2f} s video"
        )
    return first, last


def smart_nframes(
    total_frames: int,
    video_fps: float,
    *,
    fps: float | None = FPS,
    nframes: int | None = None,
    min_frames: int = FPS_MIN_FRAMES,
    max_frames: int = FPS_MAX_FRAMES,
    path: str = "",
) -> int:
    """Number of frames to sample from ``total_frames`` (qwen-vl-utils ``smart_nframes``).

    Either ``nframes`` (rounded to a multiple of 2) or an ``fps`` rate clamped to
    ``[min_frames, max_frames]`` and to ``total_frames``, floored to a multiple of 2.
    """
    if nframes is not None:
        n = round_by_factor(nframes, FRAME_FACTOR)
    else:
        lo = ceil_by_factor(min_frames, FRAME_FACTOR)
        hi = floor_by_factor(min(max_frames, total_frames), FRAME_FACTOR)
        n = total_frames / video_fps * (FPS if fps is None else fps)
        n = floor_by_factor(min(max(n, lo), hi, total_frames), FRAME_FACTOR)
    if not FRAME_FACTOR <= n <= total_frames:
        raise WindowOutOfRange(
            path, f"cannot sample {n} frames from {total_frames} (need {FRAME_FACTOR} <= n <= total)"
        )
    return int(n)


def linspace_indices(first: int, last: int, n: int) -> np.ndarray:
    """``linspace(first, last, n).round()`` as int64 (round half to even, like torch)."""
    return np.round(np.linspace(first, last, n)).astype(np.int64)


def video_max_pixels(
    nframes: int,
    *,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int | None = None,
    total_pixels: int = VIDEO_TOTAL_PIXELS,
) -> float:
    """Per-frame pixel cap: ``max(min(768*28^2, total/n*2), 1.05*min)``, then the user cap."""
    cap = max(min(VIDEO_MAX_PIXELS, total_pixels / nframes * FRAME_FACTOR), int(min_pixels * 1.05))
    return cap if max_pixels is None else min(max_pixels, cap)


@dataclasses.dataclass(frozen=True)
class FramePlan:
    """What to decode and how to size it: the output of the sampling rules.

    Attributes:
      indices: int64 ``[T]`` frame indices into the file (T even for videos).
      height, width: the resized frame size (multiples of 28).
      sample_fps: the effective frame rate of the sampled frames.
      times: float ``[T]`` seconds of each sampled frame (``index / video_fps``).
    """

    indices: np.ndarray
    height: int
    width: int
    sample_fps: float
    times: np.ndarray

    @property
    def second_per_grid_t(self) -> float:
        return TEMPORAL_PATCH_SIZE / self.sample_fps


def plan_video(
    num_frames: int,
    video_fps: float,
    height: int,
    width: int,
    *,
    start: float | None = None,
    end: float | None = None,
    fps: float | None = FPS,
    nframes: int | None = None,
    min_frames: int = FPS_MIN_FRAMES,
    max_frames: int = FPS_MAX_FRAMES,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int | None = None,
    total_pixels: int = VIDEO_TOTAL_PIXELS,
    factor: int = IMAGE_FACTOR,
    path: str = "",
) -> FramePlan:
    """The qwen-vl-utils video rule (``fetch_video`` with the decord backend); frame sides are
    multiples of ``factor`` (the model's merged-token side)."""
    first, last = frame_range(num_frames, video_fps, start, end, path=path)
    total = last - first + 1
    n = smart_nframes(
        total, video_fps, fps=fps, nframes=nframes, min_frames=min_frames, max_frames=max_frames, path=path
    )
    idx = linspace_indices(first, last, n)
    cap = video_max_pixels(n, min_pixels=min_pixels, max_pixels=max_pixels, total_pixels=total_pixels)
    h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=cap, path=path)
    sample_fps = n / max(total, 1e-6) * video_fps
    return FramePlan(idx, h, w, sample_fps, idx / video_fps)


def check_clip_window(start: float, end: float, duration: float, *, path: str = "") -> None:
    """VITAL's validity rule for a tool call: ``0 <= start < end <= duration`` and ``end - start > 1``."""
    if not (math.isfinite(start) and math.isfinite(end)):
        raise WindowOutOfRange(path, f"clip times must be finite, got [{start}, {end}]")
    if not 0 <= start < end <= duration:
        raise WindowOutOfRange(
            path, f"clip [{start:.2f}, {end:.2f}] s is not inside [0, {duration:.2f}] s with start < end"
        )
    if end - start <= CLIP_MIN_SECONDS:
        raise WindowOutOfRange(
            path, f"clip [{start:.2f}, {end:.2f}] s must be longer than {CLIP_MIN_SECONDS:g} s"
        )


def plan_clip(
    num_frames: int,
    video_fps: float,
    height: int,
    width: int,
    start: float,
    end: float,
    *,
    fps: float = CLIP_FPS,
    max_frames: int = CLIP_MAX_FRAMES,
    min_pixels: int = CLIP_MIN_PIXELS,
    max_pixels: int = CLIP_MAX_PIXELS,
    factor: int = IMAGE_FACTOR,
    path: str = "",
) -> FramePlan:
    """VITAL's ``get_video_clip_frame`` rule (frame sides multiples of ``factor``).

    The video is viewed on a 2 fps grid: tick ``k`` is time ``k / 2`` s, shown by file frame
    ``min(round(k / 2 * video_fps), num_frames - 1)``. The clip takes ticks
    ``ceil(2 * start) .. floor(2 * end)``; more than ``max_frames`` ticks are subsampled with
    ``linspace().round()`` and the clip fps is rescaled (``fps * kept / ticks``). An odd tick
    count is fine: patchify repeats the last frame to fill the temporal patch (as HF does).
    """
    if num_frames <= 0 or not video_fps > 0:
        raise EmptyVideo(path, f"no frames to sample (num_frames={num_frames}, fps={video_fps})")
    duration = num_frames / video_fps
    check_clip_window(start, end, duration, path=path)
    ticks = np.arange(math.ceil(fps * start), math.floor(fps * end) + 1, dtype=np.int64)
    count = ticks.size
    if count > max_frames:
        ticks = ticks[linspace_indices(0, count - 1, max_frames)]
    idx = np.minimum(np.round(ticks / fps * video_fps).astype(np.int64), num_frames - 1)
    h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels, path=path)
    sample_fps = fps * ticks.size / count
    return FramePlan(idx, h, w, sample_fps, ticks / fps)
