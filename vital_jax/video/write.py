"""Write uint8 frames to an mp4 file (tests and the synthetic-data generator).

Uses PyAV, whose wheels ship their own FFmpeg (with libx264), so no system ffmpeg is needed.
"""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np

from vital_jax.video.errors import BadVideoSize


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float,
    *,
    crf: int = 18,
    codec: str = "libx264",
) -> str:
    """Encode ``frames`` (uint8 ``[T, H, W, 3]`` RGB) as an H.264 mp4 at ``fps``.

    H and W must be even (yuv420p chroma subsampling). ``crf`` 18 is visually lossless, so
    tests can compare decoded pixels with a small tolerance. Returns the path written.
    Parent directories are created.
    """
    path = os.fspath(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise BadVideoSize(path, f"frames must be [T, H, W, 3], got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise BadVideoSize(path, f"frames must be uint8, got {frames.dtype}")
    t, h, w, _ = frames.shape
    if t == 0:
        raise BadVideoSize(path, "no frames to write")
    if h % 2 or w % 2:
        raise BadVideoSize(path, f"height and width must be even for yuv420p, got {h}x{w}")
    if not fps > 0:
        raise BadVideoSize(path, f"fps must be positive, got {fps}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    import av  # local import: only writers need it

    rate = Fraction(fps).limit_denominator(1001)
    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            # keyframe every 2 s keeps random access (decord seeks) cheap
            stream.options = {"crf": str(crf), "preset": "veryfast", "g": str(max(1, round(2 * fps)))}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
