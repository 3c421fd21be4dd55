"""Decoding and typed errors on real (test-made) mp4 files."""

import os

import numpy as np
import pytest

from tests.video.conftest import frame_ids
from vital_jax.video import (
    BadVideoSize,
    EmptyVideo,
    VideoError,
    VideoNotFound,
    VideoUnreadable,
    WindowOutOfRange,
    load_clip,
    load_video,
    probe,
    read_frames,
    write_video,
)


def test_probe_and_read_frames_roundtrip(make_video):
    path = make_video(50, 10.0, 48, 64)
    info = probe(path)
    assert (info.num_frames, info.fps, info.width, info.height) == (50, 10.0, 64, 48)
    assert info.duration == pytest.approx(5.0)
    idx = [0, 7, 49, 7, 23]
    frames = read_frames(path, idx)
    assert frames.shape == (5, 48, 64, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frame_ids(frames), idx)


def test_missing_file(tmp_path):
    with pytest.raises(VideoNotFound) as e:
        probe(tmp_path / "nope.mp4")
    assert "nope.mp4" in str(e.value) and e.value.path.endswith("nope.mp4")
    with pytest.raises(VideoNotFound):
        probe(tmp_path)  # a directory
    with pytest.raises(VideoNotFound):
        load_video(tmp_path / "nope.mp4")


def test_garbage_and_empty_files(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(VideoUnreadable) as e:
        probe(garbage)
    assert "garbage.mp4" in str(e.value)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(EmptyVideo):
        read_frames(empty, [0])
    assert issubclass(VideoUnreadable, VideoError) and issubclass(EmptyVideo, VideoError)


def test_truncated_file(make_video, tmp_path):
    data = open(make_video(50, 10.0, 48, 64), "rb").read()
    for frac in (0.3, 0.9):
        cut = tmp_path / f"cut_{frac}.mp4"
        cut.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(VideoError) as e:  # moov atom at the end: unreadable; never a crash
            load_video(cut)
        assert isinstance(e.value, (VideoUnreadable, EmptyVideo)) and "cut_" in str(e.value)


def test_window_and_index_errors(make_video):
    path = make_video(50, 10.0, 48, 64)
    with pytest.raises(WindowOutOfRange):
        read_frames(path, [50])
    with pytest.raises(WindowOutOfRange):
        read_frames(path, [-1])
    with pytest.raises(WindowOutOfRange):
        load_video(path, start=6.0, end=9.0)  # outside the 5 s
    for start, end in [(-1.0, 2.0), (1.0, 5.5), (3.0, 2.0), (1.0, 1.9)]:
        with pytest.raises(WindowOutOfRange) as e:
            load_clip(path, start, end)
        assert path in str(e.value)


def test_absurd_sizes(tmp_path):
    with pytest.raises(BadVideoSize):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 5, 8, 3), np.uint8), 2)
    thin = str(tmp_path / "thin.mp4")
    write_video(thin, np.zeros((4, 2, 600, 3), np.uint8), 2)  # 300:1 aspect
    with pytest.raises(BadVideoSize):
        load_video(thin)
    assert os.path.exists(thin)
