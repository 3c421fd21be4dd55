"""Video input: decode, sample, resize, normalise, patchify (qwen-vl-utils semantics)."""

from vital_jax.video.decode import VideoInfo, probe, read_frames
from vital_jax.video.errors import (
    BadVideoSize,
    EmptyVideo,
    VideoError,
    VideoNotFound,
    VideoUnreadable,
    WindowOutOfRange,
)
from vital_jax.video.write import write_video

__all__ = [
    "BadVideoSize",
    "EmptyVideo",
    "VideoError",
    "VideoInfo",
    "VideoNotFound",
    "VideoUnreadable",
    "WindowOutOfRange",
    "probe",
    "read_frames",
    "write_video",
]
