"""Decode video files with decord: probe metadata, read frames by index.

All decord failures are translated into :mod:`vital_jax.video.errors` types naming the file.
decord is imported lazily so that importing :mod:`vital_jax.video` stays cheap.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from vital_jax.video.errors import (
    EmptyVideo,
    VideoError,
    VideoNotFound,
    VideoUnreadable,
    WindowOutOfRange,
)


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """Container metadata as decord reports it.

    ``duration`` is ``num_frames / fps`` (the convention qwen-vl-utils and VITAL use), not
    the container's stream duration, so frame times are ``index / fps``.
    """

    path: str
    num_frames: int
    fps: float
    duration: float
    width: int
    height: int


def _open(path: str | os.PathLike, num_threads: int = 0):
    """Open a decord VideoReader, translating every failure into a VideoError."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoNotFound(path, "no such file")
    if not os.path.isfile(path):
        raise VideoNotFound(path, "not a regular file")
    if os.path.getsize(path) == 0:
        raise EmptyVideo(path, "file is empty (0 bytes)")
    import decord

    try:
        return decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
    except Exception as e:  # decord raises DECORDError / RuntimeError with ffmpeg text
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VideoUnreadable(path, f"cannot open as video ({msg[:200]})") from e


def _info(path: str, vr) -> VideoInfo:
    n = len(vr)
    if n <= 0:
        raise EmptyVideo(path, "video has no frames")
    fps = float(vr.get_avg_fps())
    if not np.isfinite(fps) or fps <= 0:
        raise EmptyVideo(path, f"video reports an invalid frame rate ({fps})")
    h, w = _frame_hw(path, vr)
    return VideoInfo(path=path, num_frames=n, fps=fps, duration=n / fps, width=w, height=h)


def _frame_hw(path: str, vr) -> tuple[int, int]:
    try:
        shape = vr.next().shape  # decodes one frame: proves the stream is decodable at all
        vr.seek(0)
    except Exception as e:
        raise VideoUnreadable(path, f"cannot decode the first frame ({str(e)[:200]})") from e
    return int(shape[0]), int(shape[1])


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read a video's metadata (frame count, fps, duration, size). Raises VideoError."""
    path = os.fspath(path)
    return _info(path, _open(path))


def read_frames(path: str | os.PathLike, indices, *, num_threads: int = 0) -> np.ndarray:
    """Decode the frames at ``indices`` (any order, repeats allowed).

    Returns uint8 ``[T, H, W, 3]`` RGB. Raises WindowOutOfRange for an index outside
    ``[0, num_frames)`` and VideoUnreadable if decoding fails part way (truncated file).
    """
    path = os.fspath(path)
    vr = _open(path, num_threads)
    n = len(vr)
    if n <= 0:
        raise EmptyVideo(path, "video has no frames")
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise WindowOutOfRange(path, "no frame indices requested")
    bad = idx[(idx < 0) | (idx >= n)]
    if bad.size:
        raise WindowOutOfRange(path, f"frame index {int(bad[0])} outside [0, {n}) ({bad.size} bad indices)")
    return _get_batch(path, vr, idx)


def _get_batch(path: str, vr, idx: np.ndarray) -> np.ndarray:
    try:
        frames = vr.get_batch(idx.tolist()).asnumpy()
    except VideoError:
        raise
    except Exception as e:
        raise VideoUnreadable(path, f"decoding frames failed, file may be truncated ({str(e)[:200]})") from e
    if frames.ndim != 4 or frames.shape[0] != idx.size or frames.shape[-1] != 3:
        raise VideoUnreadable(path, f"decoder returned frames of shape {frames.shape} for {idx.size} indices")
    return np.ascontiguousarray(frames, dtype=np.uint8)
