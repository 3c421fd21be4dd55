"""Typed errors for video input.

Every error names the file and the problem, so a data pipeline can log and skip one bad
record without crashing the process. Callers catch :class:`VideoError` (the base) unless
they want to treat one failure mode differently.
"""

from __future__ import annotations

import os

from vital_jax.errors import VitalError


class VideoError(VitalError):
    """Base class: something is wrong with a video (or image) input.

    Attributes:
      path: the file the problem is about (``str``; may be ``""`` for in-memory input).
      problem: a short human-readable description without the path.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = os.fspath(path) if path is not None else ""
        self.problem = problem
        super().__init__(f"{self.path or '<array>'}: {problem}")

    def __reduce__(self):  # picklable across grain worker processes
        return (type(self), (self.path, self.problem))


class VideoNotFound(VideoError):
    """The path does not exist or is not a regular file."""


class VideoUnreadable(VideoError):
    """The file exists but cannot be decoded (garbage bytes, truncated, unknown codec)."""


class EmptyVideo(VideoError):
    """The container decodes but holds no frames (or a zero duration / zero fps)."""


class WindowOutOfRange(VideoError):
    """A requested [start, end] window or frame index lies outside the video."""


class BadVideoSize(VideoError):
    """Frame geometry or a requested resize is absurd (too small, aspect ratio > 200, ...)."""
