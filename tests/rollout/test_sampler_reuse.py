"""A second Sampler with the same model and static shapes reuses the compiled programs (each
``evaluate()`` call builds a Sampler; before, every one recompiled everything)."""

import numpy as np

from vital_jax.models.qwen2_5_vl import ModelConfig, init_params
from vital_jax.rollout import Sampler, SamplerConfig, SamplingOptions, Segment
from vital_jax.testing import CompileCounter

CFG = SamplerConfig(batch_size=2, cache_length=256, chunk_buckets=(32, 64), vision_buckets=(64,),
                    max_visual_tokens=16, decode_steps=8)


def _run(cfg, params):
    s = Sampler(cfg, params, CFG)
    st = s.prefill([Segment(np.arange(1, 40)), Segment(np.arange(1, 9))])
    st, out = s.decode(st, s.sampling_params(SamplingOptions()), np.array([8, 8]))
    return np.asarray(out.tokens)


def test_second_sampler_compiles_nothing_and_uses_its_own_params():
    cfg = ModelConfig.tiny()
    _, p0 = init_params(cfg, seed=0)
    _, p1 = init_params(cfg, seed=1)
    first = _run(cfg, p0)
    with CompileCounter() as cc:
        again = _run(cfg, p0)
        other = _run(cfg, p1)          # same shapes, other weights: same programs, other tokens
    assert cc.count == 0, f"{cc.count} compiles for samplers with already-compiled shapes"
    np.testing.assert_array_equal(again, first)
    assert not np.array_equal(other, first)
