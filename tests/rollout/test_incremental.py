"""Incremental (prefill / append with new clips / decode) equals one full forward."""

import numpy as np
import pytest

from tests.models import hf_reference as ref
from tests.rollout.conftest import visual
from vital_jax.models.qwen2_5_vl import forward
from vital_jax.rollout import Sampler, SamplerConfig, SamplingOptions, Segment

ATOL = 2e-5


def _full_logits(cfg, params, ids, visuals):
    batch = {"input_ids": np.asarray(ids)[None]}
    vids = [v for v in visuals if v.kind == "video"]
    imgs = [v for v in visuals if v.kind == "image"]
    if imgs:
        batch["pixel_values"] = np.concatenate([v.pixel_values for v in imgs])
        batch["image_grid_thw"] = np.stack([v.grid_thw for v in imgs])
    if vids:
        batch["pixel_values_videos"] = np.concatenate([v.pixel_values for v in vids])
        batch["video_grid_thw"] = np.stack([v.grid_thw for v in vids])
        batch["second_per_grid_ts"] = np.asarray([v.second_per_grid_t for v in vids])
    return np.asarray(forward(cfg, params, batch))[0]


@pytest.mark.parametrize("attention,decode", [("xla", "auto"), ("blockwise", "auto"), ("xla", "gpu_decode")])
def test_prefill_append_decode_equals_full_forward(hf_tiny, attention, decode):
    """Against one full forward of the reference path (xla), whichever attention the sampler runs
    (``gpu_decode``: the decode steps through JAX's Pallas GPU kernel, interpret mode on CPU)."""
    _, cfg, params = hf_tiny
    s = Sampler(cfg.with_runtime(attention=attention, decode_attention=decode), params, SamplerConfig(batch_size=3, cache_length=160, chunk_buckets=(8, 32, 64),
                                           vision_buckets=(64, 256), max_visual_tokens=96, decode_steps=4))
    v1, v2 = visual((2, 4, 4), seed=1), visual((4, 4, 6), seed=2, spg=0.5)
    img = visual((1, 2, 4), seed=3, spg=0.0, kind="image")
    p0 = ref.build_input_ids([("text", 5), ("video", (2, 4, 4)), ("text", 4)], seed=10)
    p1 = ref.build_input_ids([("text", 9)], seed=11)
    p2 = ref.build_input_ids([("text", 3), ("image", (1, 2, 4)), ("text", 70)], seed=12)  # > largest bucket
    hist = [list(p0), list(p1), list(p2)]
    vis = [[v1], [], [img]]
    state, lg = s.prefill([Segment(p0, [v1]), Segment(p1), Segment(p2, [img])], all_logits=True)
    for b in range(3):
        np.testing.assert_allclose(lg[b], _full_logits(cfg, params, hist[b], vis[b]), atol=ATOL, rtol=1e-4)

    greedy = SamplingOptions(temperature=0.0)
    state, out = s.generate(state, greedy, max_new_tokens=[6, 3, 0])
    assert [len(t) for t in out.tokens] == [6, 3, 0]
    for b in range(3):
        hist[b] += out.tokens[b].tolist()

    # a tool turn: row 0 gets a new clip (positions continue at its max + 1), row 1 text only
    a0 = ref.build_input_ids([("text", 3), ("video", (4, 4, 6)), ("text", 2)], seed=13)
    a1 = ref.build_input_ids([("text", 6)], seed=14)
    state, lg = s.extend(state, [Segment(a0, [v2]), Segment(a1), None], all_logits=True)
    vis[0].append(v2)
    for b, a in ((0, a0), (1, a1)):
        hist[b] += list(a)
        full = _full_logits(cfg, params, hist[b], vis[b])
        np.testing.assert_allclose(lg[b], full[-len(a):], atol=ATOL, rtol=1e-4)
    assert lg[2].shape[0] == 0

    state, out = s.generate(state, greedy, max_new_tokens=5)
    for b in range(3):
        full = _full_logits(cfg, params, hist[b], vis[b])
        # the greedy tokens are the argmax of the full forward at each step
        seq = hist[b] + out.tokens[b].tolist()
        full2 = _full_logits(cfg, params, seq, vis[b])
        np.testing.assert_array_equal(out.tokens[b], full2[len(hist[b]) - 1:-1].argmax(-1))
        np.testing.assert_allclose(full2[len(hist[b]) - 1], full[-1], atol=ATOL)
        lp = full2[len(hist[b]) - 1:-1]
        lp = lp - np.log(np.exp(lp - lp.max(-1, keepdims=True)).sum(-1, keepdims=True)) - lp.max(-1, keepdims=True)
        np.testing.assert_allclose(out.logprobs[b], lp[np.arange(5), out.tokens[b]], atol=1e-4)
        # the state's next-token logits equal the full forward's last row
        np.testing.assert_allclose(np.asarray(state.last_logits[b]), full2[-1], atol=ATOL, rtol=1e-4)
    np.testing.assert_array_equal(s.lengths(state), [len(hist[b]) + 5 for b in range(3)])


def test_text_timestamps_prefill_and_tool_clip_equal_full_forward(hf_tiny):
    """Videos written Qwen3-VL style (a timestamp's text before each temporal group): the prompt
    and an appended tool clip turn give the logits of one full forward over the whole sequence
    (positions per group, the tower's tokens scattered into the groups in order)."""
    _, cfg, params = hf_tiny
    s = Sampler(cfg, params, SamplerConfig(batch_size=2, cache_length=160, chunk_buckets=(8, 32, 64),
                                           vision_buckets=(64, 256), max_visual_tokens=96, decode_steps=4))
    v1, v2 = visual((4, 4, 4), seed=4, spg=0.5), visual((2, 4, 6), seed=5, spg=2.0)
    p0 = ref.build_input_ids([("text", 5), ("video_ts", (4, 4, 4)), ("text", 4)], seed=20)
    p1 = ref.build_input_ids([("text", 7)], seed=21)
    hist, vis = [list(p0), list(p1)], [[v1], []]
    state, lg = s.prefill([Segment(p0, [v1]), Segment(p1)], all_logits=True)
    np.testing.assert_allclose(lg[0], _full_logits(cfg, params, hist[0], vis[0]), atol=ATOL, rtol=1e-4)
    state, out = s.generate(state, SamplingOptions(temperature=0.0), max_new_tokens=[3, 2])
    for b in range(2):
        hist[b] += out.tokens[b].tolist()
    a0 = ref.build_input_ids([("text", 3), ("video_ts", (2, 4, 6)), ("text", 2)], seed=22)
    state, lg = s.extend(state, [Segment(a0, [v2]), None], all_logits=True)
    hist[0] += list(a0)
    vis[0].append(v2)
    np.testing.assert_allclose(lg[0], _full_logits(cfg, params, hist[0], vis[0])[-len(a0):], atol=ATOL, rtol=1e-4)
    # 4 + 2 temporal groups, each its own <|vision_start|> block
    assert (np.asarray(hist[0]) == ref.VISION_START_ID).sum() == 4 + 2
