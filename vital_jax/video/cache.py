"""A bounded per-process LRU cache of decoded, resized frames.

During a rollout the same long video is clipped several times (one call per tool turn, G
rollouts per prompt); decoding dominates, so decoded frames are kept keyed by
``(path, file mtime/size, fps grid, (height, width), frame index)``. Entries are single
frames, so clips that overlap share work and the memory bound is exact. Thread-safe.
Frames are stored read-only; callers that draw on them must copy (the pipeline does).
"""

from __future__ import annotations

import collections
import os
import threading

import numpy as np

DEFAULT_MAX_BYTES = int(float(os.environ.get("VITAL_FRAME_CACHE_MB", "512")) * 2**20)


class FrameCache:
    """LRU map ``key -> uint8 frame`` bounded by total bytes (``max_bytes=0`` disables it)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = int(max_bytes)
        self._data: collections.OrderedDict[tuple, np.ndarray] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def video_key(path: str, fps: float | None, size: tuple[int, int]) -> tuple:
        """Key prefix for one video at one sampling grid and size; the file's mtime and
        size are part of it so a rewritten file is never served stale frames."""
        st = os.stat(path)
        return (os.path.abspath(path), st.st_mtime_ns, st.st_size, fps, tuple(size))

    def get_many(self, prefix: tuple, indices) -> dict[int, np.ndarray]:
        """Cached frames among ``indices`` (refreshing their recency)."""
        found = {}
        with self._lock:
            for i in indices:
                frame = self._data.get(prefix + (int(i),))
                if frame is None:
                    self.misses += 1
                    continue
                self._data.move_to_end(prefix + (int(i),))
                found[int(i)] = frame
                self.hits += 1
        return found

    def put_many(self, prefix: tuple, frames: dict[int, np.ndarray]) -> None:
        if self.max_bytes <= 0:
            return
        with self._lock:
            for i, frame in frames.items():
                if frame.nbytes > self.max_bytes:
                    continue
                key = prefix + (int(i),)
                if key in self._data:
                    self._bytes -= self._data.pop(key).nbytes
                frame = np.array(frame, copy=True)
                frame.setflags(write=False)
                self._data[key] = frame
                self._bytes += frame.nbytes
            while self._bytes > self.max_bytes:
                _, old = self._data.popitem(last=False)
                self._bytes -= old.nbytes

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0
            self.hits = self.misses = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._data)


_DEFAULT = FrameCache()


def default_cache() -> FrameCache:
    """The process-wide cache used when a caller passes none."""
    return _DEFAULT
