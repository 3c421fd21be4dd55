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

# Full pipeline (imported after the early, stable names above).
from vital_jax.video.cache import FrameCache, default_cache  # noqa: E402
from vital_jax.video.pipeline import (  # noqa: E402
    VisualInput,
    load_clip,
    load_image,
    load_video,
    read_image,
    video_info,
)
from vital_jax.video.sampling import FramePlan, plan_clip, plan_video, smart_resize  # noqa: E402
from vital_jax.video.patchify import Processing  # noqa: E402

__all__ += [
    "FrameCache",
    "Processing",
    "FramePlan",
    "VisualInput",
    "default_cache",
    "load_clip",
    "load_image",
    "load_video",
    "plan_clip",
    "plan_video",
    "read_image",
    "smart_resize",
    "video_info",
]
