"""Frame cache (hits, bound, staleness) and the timestamp overlay."""

import numpy as np

from tests.video.conftest import index_video
from vital_jax.video import FrameCache, load_clip, load_video, write_video
from vital_jax.video.overlay import draw_text, overlay_timestamps, text_mask


def test_cache_hits_and_identical_output(make_video):
    path = make_video(60, 10.0, 64, 96)
    cache = FrameCache(64 * 2**20)
    a = load_clip(path, 1.0, 4.0, cache=cache)
    assert cache.hits == 0 and cache.misses > 0 and len(cache) == len(np.unique(a.frame_indices))
    b = load_clip(path, 1.0, 4.0, cache=cache)
    assert cache.hits == len(np.unique(a.frame_indices))
    np.testing.assert_array_equal(a.pixel_values, b.pixel_values)
    misses = cache.misses
    load_clip(path, 2.0, 5.0, cache=cache)  # overlapping clip: only new frames decoded
    assert cache.misses - misses == 2  # ticks 9, 10 are new


def test_cache_is_bounded_and_not_stale(tmp_path):
    path = str(tmp_path / "v.mp4")
    write_video(path, index_video(40, 64, 64), 10)
    frame_bytes = 56 * 56 * 3  # clip frames of a 64x64 video are resized to 56x56
    cache = FrameCache(5 * frame_bytes)
    load_clip(path, 0.0, 3.9, cache=cache)
    assert len(cache) <= 5 and cache.nbytes <= 5 * frame_bytes
    first = load_video(path, cache=cache).pixel_values
    write_video(path, 255 - index_video(40, 64, 64), 10)  # rewrite the file in place
    second = load_video(path, cache=cache).pixel_values
    assert not np.allclose(first, second)
    off = FrameCache(0)
    load_clip(path, 0.0, 3.9, cache=off)
    assert len(off) == 0 and off.nbytes == 0


def test_overlay_draws_red_bottom_right():
    frames = np.zeros((2, 224, 392, 3), np.uint8)
    out = overlay_timestamps(frames, [12.5, 3.0])
    red = (out[..., 0] == 255) & (out[..., 1] == 0)
    ys, xs = np.nonzero(red[0])
    assert ys.min() > 224 * 0.8 and xs.min() > 392 * 0.6
    assert not np.array_equal(out[0], out[1])  # different text
    assert frames.sum() == 0  # input untouched
    # "12.50s" at scale 2: exact bitmap placed 2 px from the corner
    mask = text_mask("12.50s", 2)
    np.testing.assert_array_equal(red[0][224 - 2 - mask.shape[0] : 222, 392 - 2 - mask.shape[1] : 390], mask)


def test_overlay_on_tiny_frame_never_fails():
    out = draw_text(np.zeros((20, 30, 3), np.uint8), "1234.56s")
    assert out.shape == (20, 30, 3) and out[..., 0].max() == 255


def test_clip_with_timestamps_differs_only_in_corner(make_video):
    path = make_video(60, 10.0, 64, 96)
    plain = load_clip(path, 1.0, 4.0, cache=FrameCache(0))
    stamped = load_clip(path, 1.0, 4.0, timestamps=True, cache=FrameCache(0))
    assert plain.pixel_values.shape == stamped.pixel_values.shape
    changed = np.any(plain.pixel_values != stamped.pixel_values, axis=1)
    assert 0 < changed.mean() < 0.2
