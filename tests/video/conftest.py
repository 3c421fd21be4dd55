import numpy as np
import pytest

from vital_jax.video import write_video


def index_video(num_frames: int, height: int, width: int) -> np.ndarray:
    """Frame i shows i in binary as 8 vertical black/white stripes: decoded frames identify
    themselves robustly under lossy compression and resizing (width >= 32)."""
    bits = (np.arange(num_frames)[:, None] >> np.arange(8)[None, :]) & 1  # [T, 8]
    stripe = np.minimum(np.arange(width) * 8 // width, 7)  # column -> bit
    rows = (bits[:, stripe] * 255).astype(np.uint8)  # [T, W]
    return np.broadcast_to(rows[:, None, :, None], (num_frames, height, width, 3)).copy()


def frame_ids(frames: np.ndarray) -> np.ndarray:
    """Invert index_video on decoded (possibly resized) uint8 [T, H, W, 3] frames."""
    t, _, w, _ = frames.shape
    centers = ((np.arange(8) + 0.5) * w / 8).astype(int)
    bits = frames[:, :, centers, :].mean(axis=(1, 3)) > 127  # [T, 8]
    return (bits * (1 << np.arange(8))).sum(axis=1)


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def make_video(video_dir):
    made = {}

    def make(num_frames: int, fps: float, height: int, width: int, name: str | None = None):
        key = (num_frames, fps, height, width)
        if key not in made:
            path = video_dir / (name or f"v_{num_frames}_{fps}_{height}x{width}.mp4")
            write_video(path, index_video(num_frames, height, width), fps)
            made[key] = str(path)
        return made[key]

    return make
