"""Patches and grids equal transformers' Qwen2-VL image processor; resize equals torch."""

import numpy as np
import pytest
import torch
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from vital_jax.video import load_image, read_image, write_video
from vital_jax.video.patchify import normalize, patchify
from vital_jax.video.resize import resize_frames, resize_weights


@pytest.fixture(scope="module")
def hf():
    return Qwen2VLImageProcessorPil()


def rand_image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3)).repeat(4, 0).repeat(4, 1)[:h, :w]
    return np.clip(base + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("h,w", [(56, 84), (84, 56), (112, 308)])
def test_image_patches_equal_hf(hf, h, w):
    img = rand_image(h, w)
    ours = load_image(img)
    ref = hf(images=[img], do_resize=False, return_tensors="np")
    np.testing.assert_array_equal(ours.grid_thw, ref["image_grid_thw"][0])
    np.testing.assert_allclose(ours.pixel_values, ref["pixel_values"], atol=1e-5)
    assert ours.kind == "image" and ours.second_per_grid_t == 0.0


def test_image_resize_and_grid_equal_hf(hf):
    img = rand_image(150, 231, seed=1)  # not multiples of 28: both sides resize (PIL vs ours)
    ours = load_image(img)
    ref = hf(images=[img], return_tensors="np")
    np.testing.assert_array_equal(ours.grid_thw, ref["image_grid_thw"][0])
    # Same filter; PIL works in 8-bit fixed point and clips between its two passes (bicubic
    # overshoot at sharp edges), ours is torch's float path: close on average, not exact.
    diff = np.abs(ours.pixel_values - ref["pixel_values"]) * 0.27 * 255
    assert diff.mean() < 1.0 and (diff > 3).mean() < 0.05


def test_image_file(tmp_path, hf):
    img = rand_image(56, 56)
    path = str(tmp_path / "one.mp4")
    write_video(path, np.stack([img]), 1)
    assert read_image(path).shape == (56, 56, 3)


def test_video_layout_matches_index_math():
    rng = np.random.default_rng(2)
    t, h, w = 4, 56, 84
    x = rng.standard_normal((t, h, w, 3)).astype(np.float32)
    pv, grid = patchify(x)
    np.testing.assert_array_equal(grid, [2, 4, 6])
    gt, gh, gw = grid
    # row r <-> (t, bh, bw, ih, iw): merge blocks of 2x2 patches, row-major inside the block
    for r in rng.integers(0, pv.shape[0], 40):
        ti, rem = divmod(int(r), gh * gw)
        block, inner = divmod(rem, 4)
        bh, bw = divmod(block, gw // 2)
        ih, iw = divmod(inner, 2)
        ph, pw = bh * 2 + ih, bw * 2 + iw
        want = x[2 * ti : 2 * ti + 2, ph * 14 : ph * 14 + 14, pw * 14 : pw * 14 + 14, :]  # [tp, 14, 14, C]
        np.testing.assert_array_equal(pv[r].reshape(3, 2, 14, 14), want.transpose(3, 0, 1, 2))


def test_video_patches_agree_with_hf_image_processor_per_frame(hf):
    frames = np.stack([rand_image(56, 84, seed=s) for s in range(4)])
    pv, grid = patchify(normalize(frames))
    per_t = grid[1] * grid[2]
    for k in range(4):  # temporal slot k % 2 of temporal patch k // 2 is frame k
        ref = hf(images=[frames[k]], do_resize=False, return_tensors="np")["pixel_values"]
        ours = pv[(k // 2) * per_t : (k // 2 + 1) * per_t].reshape(-1, 3, 2, 196)[:, :, k % 2]
        np.testing.assert_allclose(ours, ref.reshape(-1, 3, 2, 196)[:, :, 0], atol=1e-5)


def test_odd_frame_count_repeats_last():
    x = np.random.default_rng(3).standard_normal((3, 28, 28, 3)).astype(np.float32)
    pv, grid = patchify(x)
    pv4, _ = patchify(np.concatenate([x, x[-1:]]))
    assert grid[0] == 2
    np.testing.assert_array_equal(pv, pv4)


@pytest.mark.parametrize("size", [(224, 392), (28, 56), (500, 700), (360, 644)])
def test_resize_equals_torch_antialias_bicubic(size):
    x = np.stack([rand_image(360, 640, seed=s) for s in range(2)])
    ours = resize_frames(x, *size)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(x).permute(0, 3, 1, 2).float(), size=size, mode="bicubic", antialias=True,
        align_corners=False,
    )
    ref = ref.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    d = np.abs(ours.astype(int) - ref)
    assert d.max() <= 1 and (d > 0).mean() < 1e-3
    w = resize_weights(640, size[1])
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)
