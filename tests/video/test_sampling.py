"""Frame indices and sizes equal the qwen-vl-utils rules (reference written here, on torch)."""

import math

import numpy as np
import pytest
import torch

from tests.video.conftest import frame_ids
from vital_jax.video import VideoError, load_clip, load_video, plan_clip, plan_video, probe
from vital_jax.video.pipeline import decode_plan
from vital_jax.video.sampling import smart_resize


# ---- reference: qwen-vl-utils (vision_process.py) rules, restated independently -----------
def ref_smart_resize(h, w, min_pixels, max_pixels, factor=28):
    hb, wb = max(factor, round(h / factor) * factor), max(factor, round(w / factor) * factor)
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb, wb = math.floor(h / beta / factor) * factor, math.floor(w / beta / factor) * factor
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


def ref_video(total, vfps, h, w, start=None, end=None, fps=2.0, min_frames=4, max_frames=768):
    if start is None and end is None:
        s, e = 0, total - 1
    else:
        dur = total / vfps
        s = math.ceil(max(0.0, min(start, dur)) * vfps) if start is not None else 0
        e = min(math.floor(max(0.0, min(end, dur)) * vfps), total - 1) if end is not None else total - 1
    n_total = e - s + 1
    lo = math.ceil(min_frames / 2) * 2
    hi = math.floor(min(max_frames, n_total) / 2) * 2
    n = math.floor(min(max(n_total / vfps * fps, lo), hi, n_total) / 2) * 2
    idx = torch.linspace(s, e, n).round().long().numpy()
    min_px = 128 * 28 * 28
    max_px = max(min(768 * 28 * 28, 128000 * 28 * 28 * 0.9 / n * 2), int(min_px * 1.05))
    return idx, ref_smart_resize(h, w, min_px, max_px), n / n_total * vfps


GRID = [  # (frames, fps, h, w, start, end)
    (300, 30.0, 360, 640, None, None),
    (1500, 25.0, 1080, 1920, None, None),
    (7, 3.0, 64, 48, None, None),
    (90000, 29.97, 720, 1280, None, None),  # ~50 min: hits the 768-frame and pixel caps
    (600, 24.0, 480, 270, 3.3, 17.9),
    (600, 24.0, 480, 270, 0.0, 25.0),  # end clamped to the duration
    (241, 8.0, 100, 2000, 1.1, None),
]


@pytest.mark.parametrize("frames,vfps,h,w,start,end", GRID)
def test_plan_video_matches_reference(frames, vfps, h, w, start, end):
    plan = plan_video(frames, vfps, h, w, start=start, end=end)
    idx, (rh, rw), sfps = ref_video(frames, vfps, h, w, start, end)
    np.testing.assert_array_equal(plan.indices, idx)
    assert (plan.height, plan.width) == (rh, rw)
    assert plan.sample_fps == pytest.approx(sfps)
    assert plan.second_per_grid_t == pytest.approx(2 / sfps)
    assert len(plan.indices) % 2 == 0 and plan.height % 28 == 0 and plan.width % 28 == 0


def test_smart_resize_bounds_and_reference():
    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(10, 4000, 2))
        if max(h, w) / min(h, w) > 200:
            continue
        lo, hi = 4 * 28 * 28, int(rng.integers(64, 16384)) * 28 * 28
        got = smart_resize(h, w, min_pixels=lo, max_pixels=hi)
        assert got == ref_smart_resize(h, w, lo, hi)
        assert got[0] % 28 == 0 and got[1] % 28 == 0 and got[0] * got[1] <= hi


def test_nframes_option():
    plan = plan_video(300, 30.0, 360, 640, nframes=15, fps=None)
    np.testing.assert_array_equal(plan.indices, torch.linspace(0, 299, 16).round().long().numpy())


def test_clip_rule():
    # 30 fps, 200 s video, clip [10.3, 20.8]: ticks ceil(20.6)=21 .. floor(41.6)=41 -> 21 ticks
    plan = plan_clip(6000, 30.0, 360, 640, 10.3, 20.8)
    ticks = np.arange(21, 42)
    np.testing.assert_array_equal(plan.indices, np.round(ticks / 2 * 30).astype(int))
    np.testing.assert_allclose(plan.times, ticks / 2)
    assert plan.sample_fps == pytest.approx(2.0)
    assert plan.height * plan.width <= 64 * 28 * 28 and plan.height * plan.width >= 4 * 28 * 28
    assert (plan.height, plan.width) == ref_smart_resize(360, 640, 4 * 28 * 28, 64 * 28 * 28)
    # a long clip: 2 fps ticks 20..200 (181) subsampled to 64 and the fps rescaled
    plan = plan_clip(6000, 30.0, 360, 640, 10.0, 100.0)
    ticks = np.arange(20, 201)
    kept = ticks[torch.linspace(0, 180, 64).round().long().numpy()]
    np.testing.assert_allclose(plan.times, kept / 2)
    assert len(plan.indices) == 64 and plan.sample_fps == pytest.approx(2 * 64 / 181)
    # the last tick may round past the last frame: clamped
    plan = plan_clip(100, 10.0, 64, 64, 8.0, 10.0)
    assert plan.indices.max() == 99


@pytest.mark.parametrize(
    "frames,fps,h,w",
    [(60, 10.0, 64, 96), (97, 24.0, 96, 64), (40, 5.0, 56, 56), (121, 29.97, 48, 80)],
)
def test_real_videos_follow_the_rules(make_video, frames, fps, h, w):
    path = make_video(frames, fps, h, w)
    info = probe(path)
    assert info.num_frames == frames and info.fps == pytest.approx(fps, rel=1e-3)
    v = load_video(path)
    idx, (rh, rw), sfps = ref_video(info.num_frames, info.fps, h, w)
    np.testing.assert_array_equal(v.frame_indices, idx)
    np.testing.assert_array_equal(v.grid_thw, [len(idx) // 2, rh // 14, rw // 14])
    assert v.pixel_values.shape == (len(idx) // 2 * rh // 14 * rw // 14, 1176)
    assert v.second_per_grid_t == pytest.approx(2 / sfps)
    plan = plan_video(info.num_frames, info.fps, h, w)
    decoded = decode_plan(path, plan, grid_fps=None)
    np.testing.assert_array_equal(frame_ids(decoded), idx)  # the right frames were decoded
    # a window
    start, end = 1.0, info.duration - 0.5
    vw = load_video(path, start=start, end=end)
    np.testing.assert_array_equal(vw.frame_indices, ref_video(info.num_frames, info.fps, h, w, start, end)[0])


def test_real_clip_decodes_the_right_frames(make_video):
    path = make_video(121, 29.97, 48, 80)
    info = probe(path)
    clip = load_clip(path, 1.2, 3.9)
    plan = plan_clip(info.num_frames, info.fps, info.height, info.width, 1.2, 3.9)
    np.testing.assert_array_equal(clip.frame_indices, plan.indices)
    decoded = decode_plan(path, plan, grid_fps=2.0)
    np.testing.assert_array_equal(frame_ids(decoded), plan.indices)
    # 3 ticks (3, 4, ..., 7 -> 5 frames, odd): temporal patch padded by repeating the last frame
    assert len(plan.indices) == 5 and clip.grid_thw[0] == 3
    assert clip.num_tokens == 3 * clip.grid_thw[1] * clip.grid_thw[2] // 4
    with pytest.raises(VideoError):
        load_clip(path, 3.0, 4.5)  # past the ~4.04 s duration
