"""The sampler serves Qwen3-VL through the family seam: the KV-cached prefill / tool-clip append /
decode equals one full forward (DeepStack features added at the appended clip's positions too),
greedy decoding equals transformers' greedy, and nothing compiles after warm-up."""

from __future__ import annotations

import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.models import hf_reference as ref  # noqa: E402
from tests.models.test_qwen3_vl_parity import _hf_positions, _pixels, saved_hf_model  # noqa: E402
from vital_jax.models.families import forward  # noqa: E402
from vital_jax.rollout import Sampler, SamplerConfig, SamplingOptions, Segment  # noqa: E402
from vital_jax.testing import CompileCounter  # noqa: E402

ATOL = 2e-5
SAMPLER = SamplerConfig(batch_size=2, cache_length=160, chunk_buckets=(8, 32, 64), vision_buckets=(64, 128),
                        max_visual_tokens=48, decode_steps=4)


@pytest.fixture(scope="module")
def hf_qwen3(tmp_path_factory):
    return saved_hf_model(tmp_path_factory, tie=False, seed=1)


def _item(grid, seed, kind="video"):
    return types.SimpleNamespace(pixel_values=_pixels(grid, seed), grid_thw=np.asarray(grid), kind=kind,
                                 second_per_grid_t=1.0)


def _full_logits(cfg, params, ids, visuals):
    batch = {"input_ids": np.asarray(ids)[None]}
    for kind, pix, grid in (("image", "pixel_values", "image_grid_thw"),
                            ("video", "pixel_values_videos", "video_grid_thw")):
        items = [v for v in visuals if v.kind == kind]
        if items:
            batch[pix] = np.concatenate([v.pixel_values for v in items])
            batch[grid] = np.stack([v.grid_thw for v in items])
    return np.asarray(forward(cfg, params, batch))[0]


def test_prefill_tool_clip_decode_equal_full_forward(hf_qwen3):
    """Row 0: an image and a two-group timestamped video, three greedy tokens, then a tool turn
    with a new timestamped clip (its tower output and DeepStack features go into the live cache
    at the row's offset), then greedy decoding; row 1 text only. Every appended token's logits
    equal one full forward over the whole history."""
    _, cfg, params = hf_qwen3
    s = Sampler(cfg, params, SAMPLER)
    img, v1, clip = _item((1, 4, 4), 1, "image"), _item((2, 4, 4), 2), _item((2, 4, 6), 3)
    p0 = ref.build_input_ids([("text", 4), ("image", (1, 4, 4)), ("text", 2), ("video_ts", (2, 4, 4)),
                              ("text", 3)], seed=30)
    p1 = ref.build_input_ids([("text", 9)], seed=31)
    hist, vis = [list(p0), list(p1)], [[img, v1], []]
    state, lg = s.prefill([Segment(p0, [img, v1]), Segment(p1)], all_logits=True)
    for b in range(2):
        np.testing.assert_allclose(lg[b], _full_logits(cfg, params, hist[b], vis[b]), atol=ATOL, rtol=1e-4)
    greedy = SamplingOptions(temperature=0.0)
    state, out = s.generate(state, greedy, max_new_tokens=[3, 2])
    for b in range(2):
        hist[b] += out.tokens[b].tolist()

    turn = ref.build_input_ids([("text", 3), ("video_ts", (2, 4, 6)), ("text", 2)], seed=32)
    state, lg = s.extend(state, [Segment(turn, [clip]), None], all_logits=True)
    hist[0] += list(turn)
    vis[0].append(clip)
    np.testing.assert_allclose(lg[0], _full_logits(cfg, params, hist[0], vis[0])[-len(turn):], atol=ATOL, rtol=1e-4)

    state, out = s.generate(state, greedy, max_new_tokens=4)
    seq = hist[0] + out.tokens[0].tolist()
    full = _full_logits(cfg, params, seq, vis[0])
    np.testing.assert_array_equal(out.tokens[0], full[len(hist[0]) - 1:-1].argmax(-1))
    np.testing.assert_allclose(np.asarray(state.last_logits[0]), full[-1], atol=ATOL, rtol=1e-4)


def test_deepstack_reaches_the_appended_clip(hf_qwen3):
    """The clip's logits depend on its DeepStack features: zeroing the DeepStack mergers changes
    them (so the equality above is not met by a path that drops DeepStack at append time)."""
    _, cfg, params = hf_qwen3
    no_ds = dict(params, vision=dict(params["vision"], deepstack={k: np.zeros_like(v) for k, v in
                                                                   params["vision"]["deepstack"].items()}))
    clip = _item((2, 4, 4), 4)
    ids = ref.build_input_ids([("text", 2), ("video_ts", (2, 4, 4)), ("text", 2)], seed=33)
    outs = []
    for p in (params, no_ds):
        s = Sampler(cfg, p, SAMPLER)
        state = s.prefill([Segment(ref.build_input_ids([("text", 5)], seed=34)), None])
        _, lg = s.extend(state, [Segment(ids, [clip]), None], all_logits=True)
        outs.append(lg[0])
    assert np.max(np.abs(outs[0] - outs[1])) > 1e-3


def test_greedy_equals_transformers(hf_qwen3):
    model, cfg, params = hf_qwen3
    segs = [[("text", 3), ("video_ts", (2, 4, 4)), ("text", 2)], [("text", 2), ("image", (1, 4, 4)), ("text", 4)]]
    vis = [[_item((2, 4, 4), 5)], [_item((1, 4, 4), 6, "image")]]
    rows = [ref.build_input_ids(sg, seed=40 + i) for i, sg in enumerate(segs)]
    new = 8
    s = Sampler(cfg, params, SAMPLER)
    state = s.prefill([Segment(r, v) for r, v in zip(rows, vis)])
    state, out = s.generate(state, SamplingOptions(max_new_tokens=new))
    ids, mask = ref.pad_left(rows)
    pos = _hf_positions(model, ids, mask, image_grids=[(1, 4, 4)], video_grids=[(2, 4, 4)])
    want = ref.hf_greedy(model, ids, pos, new, attention_mask=mask,
                         pixel_values=vis[1][0].pixel_values, image_grid_thw=np.stack([vis[1][0].grid_thw]),
                         pixel_values_videos=vis[0][0].pixel_values, video_grid_thw=np.stack([vis[0][0].grid_thw]))
    np.testing.assert_array_equal(np.stack(out.tokens), want)


def test_no_compiles_after_warmup(hf_qwen3):
    _, cfg, params = hf_qwen3
    s = Sampler(cfg, params, SAMPLER)
    s.warmup()
    rng = np.random.default_rng(0)
    with CompileCounter() as cc:
        for k in range(3):
            g = (2, 4, int(rng.choice([4, 6])))
            state = s.prefill([Segment(ref.build_input_ids([("text", 3), ("video_ts", g), ("text", 2)], seed=k),
                                       [_item(g, k)]), Segment(ref.build_input_ids([("text", 5 + k)], seed=9))])
            state, _ = s.generate(state, SamplingOptions(temperature=1.0, max_new_tokens=5))
            clip = (2, 4, 4)
            state = s.extend(state, [Segment(ref.build_input_ids([("video_ts", clip)], seed=k), [_item(clip, k)]),
                                     None])
            state, _ = s.generate(state, SamplingOptions(max_new_tokens=3))
    assert cc.count == 0, f"{cc.count} compiles after warm-up"
