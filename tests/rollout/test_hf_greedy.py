"""Greedy generation equals transformers' greedy decoding (same weights, same positions)."""

import numpy as np
import pytest

from tests.models import hf_reference as ref
from tests.rollout.conftest import visual
from vital_jax.rollout import Sampler, SamplerConfig, SamplingOptions, Segment


@pytest.mark.parametrize("case", ["text", "video"])
def test_greedy_matches_transformers(hf_tiny, case):
    model, cfg, params = hf_tiny
    if case == "text":
        segs = [[("text", 11)], [("text", 6)]]
        vis = [[], []]
    else:
        segs = [[("text", 4), ("video", (4, 4, 6)), ("text", 5)], [("text", 3), ("video", (2, 4, 4)), ("text", 2)]]
        vis = [[visual((4, 4, 6), seed=5, spg=1.0)], [visual((2, 4, 4), seed=6, spg=0.5)]]
    rows = [ref.build_input_ids(s, seed=20 + i) for i, s in enumerate(segs)]
    new = 12
    s = Sampler(cfg, params, SamplerConfig(batch_size=2, cache_length=96, chunk_buckets=(16, 64),
                                           vision_buckets=(256,), max_visual_tokens=64, decode_steps=8))
    state = s.prefill([Segment(r, v) for r, v in zip(rows, vis)])
    state, out = s.generate(state, SamplingOptions(max_new_tokens=new))
    assert out.reason == ["budget", "budget"]
    # transformers: left-padded batch, original-rule positions passed explicitly
    ids, mask = ref.pad_left(rows)
    kw = {}
    if case == "video":
        kw = {"pixel_values_videos": np.concatenate([v[0].pixel_values for v in vis]),
              "video_grid_thw": np.stack([v[0].grid_thw for v in vis]),
              "second_per_grid_ts": np.asarray([v[0].second_per_grid_t for v in vis])}
    pos, _ = ref.reference_rope_index(ids, None, kw.get("video_grid_thw"), kw.get("second_per_grid_ts"), mask)
    want = ref.hf_greedy(model, ids, pos, new, attention_mask=mask, **kw)
    np.testing.assert_array_equal(np.stack(out.tokens), want)
