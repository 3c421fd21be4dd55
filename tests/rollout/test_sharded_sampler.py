"""The sampler on a (2, 2, 2) mesh: the KV cache is sharded, never replicated, and the tokens and
log-probs equal the single-device run (both attending over a KV window smaller than the cache)."""

import jax
import numpy as np

from tests.models import hf_reference as ref
from tests.rollout.conftest import visual
from vital_jax.models.qwen2_5_vl import load_pretrained
from vital_jax.rollout import Sampler, SamplerConfig, SamplingOptions, Segment


def test_sharded_sampler_equals_single_device(hf_tiny, mesh222, tmp_path):
    model, cfg, params = hf_tiny
    segs = [[("text", 4), ("video", (2, 4, 4)), ("text", 3)], [("text", 7)], [("text", 5)], [("text", 2)]]
    rows = [ref.build_input_ids(s, seed=40 + i) for i, s in enumerate(segs)]
    vis = [[visual((2, 4, 4), seed=3)], [], [], []]
    # KV windows (40, 96): prefill and decode attend over a 40-slot slice of the sharded cache
    sc = SamplerConfig(batch_size=4, cache_length=64, chunk_buckets=(16, 32), vision_buckets=(64,),
                       max_visual_tokens=16, decode_steps=8, kv_buckets=(40,))
    opts = SamplingOptions(max_new_tokens=10, temperature=0.8, top_p=0.9)

    def run(sampler):
        st = sampler.prefill([Segment(r, v) for r, v in zip(rows, vis)], seeds=7)
        return sampler.generate(st, opts)

    _, want = run(Sampler(cfg, params, sc))
    _, sharded_params = load_pretrained(ref.save_hf_checkpoint(model, tmp_path), mesh=mesh222)
    with jax.set_mesh(mesh222):
        sampler = Sampler(cfg, sharded_params, sc, mesh=mesh222)
        state, got = run(sampler)
    k = state.cache.k
    # [layers, B, K, S, d]: batch over (data, fsdp), kv heads over tensor
    assert k.sharding.spec[1] == ("data", "fsdp") and k.sharding.spec[2] == "tensor", k.sharding.spec
    per_device = k.addressable_shards[0].data.shape
    assert per_device[1] == 1 and per_device[2] == 1, per_device
    assert {("extend", 32, 40), ("decode", 40)} <= set(sampler.calls), sampler.calls
    for a, b in zip(got.tokens, want.tokens):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(got.logprobs, want.logprobs):
        np.testing.assert_allclose(a, b, atol=2e-5)
