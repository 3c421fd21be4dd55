"""Attention over static KV windows (SamplerConfig.kv_buckets): the same results as attending over
the whole cache, nothing compiles after warm-up, and the config rules."""

import numpy as np
import pytest

from tests.models import hf_reference as ref
from tests.rollout.conftest import visual
from vital_jax.rollout import (
    Sampler,
    SamplerConfig,
    SamplerError,
    SamplingOptions,
    Segment,
)
from vital_jax.testing import CompileCounter

# slots = 96 + 32 = 128. Windows 11 and 12 sit on the decode bound of the first decode call
# below (lengths 7 and 4, budgets 4 and 6 -> row 0 writes 7..10, then junk at 11 while row 1
# runs; row 1 needs only 10): an off-by-one in the bound would pick 11 and clamp row 0's junk
# write onto its last token.
BASE = {"batch_size": 2, "cache_length": 96, "chunk_buckets": (8, 32), "vision_buckets": (64,),
        "max_visual_tokens": 16, "decode_steps": 8}
WINDOWS = (11, 12, 48)   # + 128; few windows: each one is a few more compiles


@pytest.fixture(scope="module")
def samplers(hf_tiny):
    """The multi-window sampler, warmed up (so both tests below run it without compiling), and
    the single-window one (the whole allocation, as before buckets existed)."""
    _, cfg, params = hf_tiny
    multi = Sampler(cfg, params, SamplerConfig(**BASE, kv_buckets=WINDOWS))
    with CompileCounter() as cc:
        multi.warmup()
    assert cc.count >= len(multi.config.programs())
    return multi, Sampler(cfg, params, SamplerConfig(**BASE, kv_buckets=()))


def workload(s: Sampler) -> dict:
    """Prefill (one prompt longer than a chunk), decode across window boundaries with a row that
    stops early, a tool turn with a video clip, a rewind + append, a full row, and a fresh
    prefill of other lengths. Returns everything observable."""
    out = {}
    greedy = SamplingOptions()
    p0, p1 = ref.build_input_ids([("text", 7)], seed=50), ref.build_input_ids([("text", 4)], seed=51)
    state, out["prefill"] = s.prefill([Segment(p0), Segment(p1)], all_logits=True)
    sp = s.sampling_params(greedy)
    state, r = s.decode(state, sp, [4, 6])                                   # window 12
    out["d1"] = r
    state, r = s.generate(state, greedy, max_new_tokens=[12, 30])            # window 48
    out["d2"] = r
    clip = ref.build_input_ids([("text", 3), ("video", (2, 4, 4)), ("text", 2)], seed=52)
    text = ref.build_input_ids([("text", 5)], seed=53)
    state, out["tool"] = s.extend(state, [Segment(clip, [visual((2, 4, 4), seed=7)]), Segment(text)],
                                  all_logits=True)
    state, out["d3"] = s.generate(state, greedy, max_new_tokens=[6, 0])
    state = s.rewind(state, [4, 0])
    # row 0 (40 tokens) gets 6 more in window 48 while row 1 (45, untouched) is longer than it
    state, out["after_rewind"] = s.extend(state, [Segment(ref.build_input_ids([("text", 6)], seed=54)), None],
                                          all_logits=True)
    # row 1 fills up to the context limit while row 0 is idle
    state, out["d4"] = s.generate(state, greedy, max_new_tokens=[0, 100])
    out["state"] = {k: np.asarray(getattr(state, k)) for k in ("length", "next_pos", "last_logits")}
    L = out["state"]["length"]
    out["cache"] = [np.asarray(state.cache.k[:, b, :, :L[b]]) for b in range(2)]
    # a second episode: prompts of other lengths (one longer than the largest chunk)
    q0, q1 = ref.build_input_ids([("text", 40)], seed=55), ref.build_input_ids([("text", 17)], seed=56)
    state, out["prefill2"] = s.prefill([Segment(q0), Segment(q1)], seeds=3, all_logits=True)
    state, out["d5"] = s.generate(state, greedy, max_new_tokens=10)
    return out


def test_kv_windows_equal_whole_cache(samplers):
    multi, single = samplers
    multi.calls.clear()
    got, want = workload(multi), workload(single)
    for key in ("prefill", "tool", "after_rewind", "prefill2"):
        for a, b in zip(got[key][1], want[key][1]):
            np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-5, err_msg=key)
    for key in ("d1", "d2", "d3", "d4", "d5"):
        g, w = got[key], want[key]
        assert g.reason == w.reason, key
        for a, b in zip(g.tokens, w.tokens):
            np.testing.assert_array_equal(a, b, err_msg=key)
        for a, b in zip(g.logprobs, w.logprobs):
            np.testing.assert_allclose(a, b, atol=2e-5, err_msg=key)
    assert got["d4"].reason == ["idle", "length"]
    np.testing.assert_array_equal(got["state"]["length"], want["state"]["length"])
    np.testing.assert_array_equal(got["state"]["next_pos"], want["state"]["next_pos"])
    np.testing.assert_allclose(got["state"]["last_logits"], want["state"]["last_logits"], atol=2e-5, rtol=1e-5)
    for a, b in zip(got["cache"], want["cache"]):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-5)
    # the workload really ran in small windows and crossed window boundaries while decoding
    used = {k for k in multi.calls if multi.calls[k]}
    assert {("decode", 12), ("decode", 48), ("decode", 128)} <= used, sorted(used)
    assert {("extend", 8, 11), ("extend", 8, 48), ("extend", 32, 48), ("extend", 32, 128)} <= used, sorted(used)
    assert set(single.calls) <= {("extend", 8, 128), ("extend", 32, 128), ("decode", 128)}


def test_no_compiles_after_warmup_with_kv_windows(samplers):
    multi, _ = samplers
    multi.calls.clear()
    with CompileCounter() as cc:
        workload(multi)
    assert cc.count == 0, f"{cc.count} compiles after warm-up"
    assert len(multi.calls) >= 7 and set(multi.calls) <= set(multi.config.programs()), sorted(multi.calls)


def test_kv_bucket_config_rules():
    c = SamplerConfig()
    assert c.slots == 4096 + 2048 and c.kv_windows == (512, 2048, 6144)
    progs = c.programs()
    assert sum(p[0] == "extend" for p in progs) == 11 and sum(p[0] == "decode" for p in progs) == 3
    assert ("extend", 2048, 512) not in progs and ("extend", 2048, 2048) in progs
    # small caches get one window: the whole allocation, as before buckets existed
    assert SamplerConfig(cache_length=40, chunk_buckets=(16,)).kv_windows == (56,)
    assert SamplerConfig(kv_buckets=()).kv_windows == (6144,)
    assert SamplerConfig(cache_length=8704, chunk_buckets=(288, 4384)).kv_windows == (512, 2048, 8192, 13088)
    assert SamplerConfig(cache_length=32768, chunk_buckets=(2048,)).kv_windows == (512, 2048, 8192, 34816)
    # sorted, deduplicated, the allocation added when missing
    c = SamplerConfig(cache_length=96, chunk_buckets=(8, 32), kv_buckets=(80, 24, 24))
    assert c.kv_buckets == (24, 80) and c.kv_windows == (24, 80, 128)
    # decode needs [1, cache_length + 1]: a window above it is unreachable for decode
    c = SamplerConfig(cache_length=96, chunk_buckets=(8, 32), kv_buckets=(97, 100))
    assert ("decode", 100) not in c.programs() and ("decode", 97) in c.programs()
    assert ("extend", 32, 128) in c.programs()
    for bad in ((0, 64), (-3,), (129,)):
        with pytest.raises(SamplerError):
            SamplerConfig(cache_length=96, chunk_buckets=(8, 32), kv_buckets=bad)
