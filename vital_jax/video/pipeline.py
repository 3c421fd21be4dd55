"""Video/image file -> model-ready visual input (patches, grid, seconds per temporal patch).

The three entry points mirror how VITAL feeds Qwen2.5-VL:

* :func:`load_video` -- the question's video, qwen-vl-utils rule (2 fps, 4..768 frames,
  per-frame and total pixel budgets), optionally a ``[start, end]`` window;
* :func:`load_clip` -- the tool ``get_video_clip_frame(start, end)``: 2 fps ticks
  ``ceil(2s)..floor(2e)``, at most 64 frames, 4..64 x 28^2 pixels;
* :func:`load_image` -- one image, duplicated to the temporal patch.

Each returns a :class:`VisualInput`. Bad input raises a :class:`VideoError` subclass naming
the file; nothing else escapes (decoder exceptions are translated).
"""

from __future__ import annotations

import dataclasses
import os
import threading

import numpy as np

from vital_jax.video import sampling
from vital_jax.video.cache import FrameCache, default_cache
from vital_jax.video.decode import VideoInfo, _get_batch, _info, _open
from vital_jax.video.errors import BadVideoSize, VideoError, VideoNotFound, VideoUnreadable
from vital_jax.video.overlay import overlay_timestamps
from vital_jax.video.patchify import Processing, num_merged_tokens, to_patches
from vital_jax.video.resize import resize_frames

_DECODE_CHUNK = 32  # frames decoded at full resolution at once (bounds peak memory)


@dataclasses.dataclass(frozen=True)
class VisualInput:
    """One video, clip or image ready for the vision tower.

    Attributes:
      pixel_values: float32 ``[t*h*w, patch_dim]`` patches in merge-block order (1176 values
        for Qwen2.5-VL's 14 px patches, 1536 for Qwen3-VL's 16 px).
      grid_thw: int64 ``[3]`` patch grid (temporal, height, width), before the 2x2 merge.
      second_per_grid_t: seconds one temporal patch spans (``2 / sample_fps``); 0 for images.
      kind: ``"video"`` or ``"image"``.
      frame_times: float64 ``[T]`` seconds of each sampled frame (before temporal padding).
      frame_indices: int64 ``[T]`` frame indices in the file (``[0]`` for images).
    """

    pixel_values: np.ndarray
    grid_thw: np.ndarray
    second_per_grid_t: float
    kind: str
    frame_times: np.ndarray
    frame_indices: np.ndarray

    @property
    def num_tokens(self) -> int:
        """Placeholder tokens in the text: ``t * h * w / 4``."""
        return num_merged_tokens(self.grid_thw)

    @property
    def sample_fps(self) -> float:
        return sampling.TEMPORAL_PATCH_SIZE / self.second_per_grid_t if self.second_per_grid_t else 0.0


# ---------------------------------------------------------------- metadata, with a tiny cache
_INFO: dict[tuple, VideoInfo] = {}
_INFO_LOCK = threading.Lock()


def video_info(path: str | os.PathLike) -> VideoInfo:
    """:func:`probe` memoised on (path, mtime, size): clips of one video probe once."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError:
        raise VideoNotFound(path, "no such file") from None
    key = (os.path.abspath(path), st.st_mtime_ns, st.st_size)
    with _INFO_LOCK:
        if key in _INFO:
            return _INFO[key]
    info = _info(path, _open(path))
    with _INFO_LOCK:
        if len(_INFO) > 4096:
            _INFO.clear()
        _INFO[key] = info
    return info


# ---------------------------------------------------------------- decoding a plan
def decode_plan(
    path: str | os.PathLike,
    plan: sampling.FramePlan,
    *,
    grid_fps: float | None,
    cache: FrameCache | None = None,
    num_threads: int = 0,
) -> np.ndarray:
    """Decode and resize the frames of ``plan`` -> uint8 ``[T, h, w, 3]`` (uses the cache)."""
    path = os.fspath(path)
    cache = default_cache() if cache is None else cache
    prefix = cache.video_key(path, grid_fps, (plan.height, plan.width))
    wanted = np.unique(plan.indices)
    have = cache.get_many(prefix, wanted)
    missing = [int(i) for i in wanted if int(i) not in have]
    if missing:
        vr = _open(path, num_threads)
        n = len(vr)
        if missing[-1] >= n:
            raise VideoUnreadable(path, f"frame {missing[-1]} requested but the decoder sees {n} frames")
        new = {}
        for s in range(0, len(missing), _DECODE_CHUNK):
            chunk = np.asarray(missing[s : s + _DECODE_CHUNK], dtype=np.int64)
            frames = resize_frames(_get_batch(path, vr, chunk), plan.height, plan.width)
            new.update(zip(chunk.tolist(), frames))
        cache.put_many(prefix, new)
        have.update(new)
    return np.stack([have[int(i)] for i in plan.indices])


def _to_input(frames: np.ndarray, plan: sampling.FramePlan, timestamps: bool, kind: str,
              processing: Processing) -> VisualInput:
    if timestamps:
        frames = overlay_timestamps(frames, plan.times)
    pixel_values, grid = to_patches(frames, processing)
    spg = plan.second_per_grid_t if kind == "video" else 0.0
    return VisualInput(pixel_values, grid, float(spg), kind, np.asarray(plan.times, np.float64), plan.indices)


def load_video(
    path: str | os.PathLike,
    *,
    start: float | None = None,
    end: float | None = None,
    fps: float | None = sampling.FPS,
    nframes: int | None = None,
    min_frames: int = sampling.FPS_MIN_FRAMES,
    max_frames: int = sampling.FPS_MAX_FRAMES,
    min_pixels: int = sampling.VIDEO_MIN_PIXELS,
    max_pixels: int | None = None,
    total_pixels: int = sampling.VIDEO_TOTAL_PIXELS,
    timestamps: bool = False,
    cache: FrameCache | None = None,
    frame_transform=None,
    processing: Processing = Processing(),
) -> VisualInput:
    """A whole video (or a ``[start, end]`` window) with the qwen-vl-utils rule, patched for the
    model family ``processing`` describes (default Qwen2.5-VL).

    ``frame_transform(frames uint8 [T, h, w, 3]) -> frames``: applied to the decoded, resized
    frames before normalisation (e.g. DeepVideo-R1's noise / frame masking for easy prompts).
    """
    path = os.fspath(path)
    info = video_info(path)
    plan = sampling.plan_video(
        info.num_frames, info.fps, info.height, info.width,
        start=start, end=end, fps=None if nframes is not None else fps, nframes=nframes,
        min_frames=min_frames, max_frames=max_frames, min_pixels=min_pixels,
        max_pixels=max_pixels, total_pixels=total_pixels, factor=processing.factor, path=path,
    )
    frames = decode_plan(path, plan, grid_fps=None, cache=cache)
    if frame_transform is not None:
        frames = np.asarray(frame_transform(frames), np.uint8)
    return _to_input(frames, plan, timestamps, "video", processing)


def load_clip(
    path: str | os.PathLike,
    start: float,
    end: float,
    *,
    fps: float = sampling.CLIP_FPS,
    max_frames: int = sampling.CLIP_MAX_FRAMES,
    min_pixels: int = sampling.CLIP_MIN_PIXELS,
    max_pixels: int = sampling.CLIP_MAX_PIXELS,
    timestamps: bool = False,
    cache: FrameCache | None = None,
    processing: Processing = Processing(),
) -> VisualInput:
    """VITAL's tool: frames of ``[start, end]`` seconds (raises WindowOutOfRange if invalid)."""
    path = os.fspath(path)
    info = video_info(path)
    plan = sampling.plan_clip(
        info.num_frames, info.fps, info.height, info.width, start, end,
        fps=fps, max_frames=max_frames, min_pixels=min_pixels, max_pixels=max_pixels, factor=processing.factor,
        path=path,
    )
    frames = decode_plan(path, plan, grid_fps=fps, cache=cache)
    return _to_input(frames, plan, timestamps, "video", processing)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file (png/jpg/...) with PyAV -> uint8 ``[H, W, 3]``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VideoNotFound(path, "no such image file")
    import av

    try:
        with av.open(path) as container:
            frame = next(container.decode(video=0))
            return frame.to_ndarray(format="rgb24")
    except VideoError:
        raise
    except Exception as e:
        raise VideoUnreadable(path, f"cannot decode image ({str(e)[:200]})") from e


def load_image(
    image: str | os.PathLike | np.ndarray,
    *,
    min_pixels: int = sampling.IMAGE_MIN_PIXELS,
    max_pixels: int = sampling.IMAGE_MAX_PIXELS,
    processing: Processing = Processing(),
) -> VisualInput:
    """One image (file path or uint8 ``[H, W, 3]``) -> patches with ``grid_thw = [1, h, w]``."""
    if isinstance(image, np.ndarray):
        path, pixels = "", image
    else:
        path = os.fspath(image)
        pixels = read_image(path)
    if pixels.ndim != 3 or pixels.shape[-1] != 3 or pixels.dtype != np.uint8:
        raise BadVideoSize(path, f"image must be uint8 [H, W, 3], got {pixels.dtype} {pixels.shape}")
    h, w = sampling.smart_resize(
        pixels.shape[0], pixels.shape[1], factor=processing.factor, min_pixels=min_pixels, max_pixels=max_pixels,
        path=path,
    )
    frames = resize_frames(pixels[None], h, w)
    plan = sampling.FramePlan(np.zeros(1, np.int64), h, w, 0.0, np.zeros(1))
    return _to_input(frames, plan, False, "image", processing)
