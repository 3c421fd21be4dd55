"""After warm-up, many episodes with random tool calls, lengths and clip sizes compile nothing."""

import numpy as np

from tests.rollout.test_tool_loop import ANSWER, Q, call, cfg
from vital_jax.rollout import EpisodeRequest, run_episodes
from vital_jax.rollout import SamplingOptions
from vital_jax.testing import CompileCounter


def test_no_compiles_after_warmup(sampler, renderer, videos):
    sampler.warmup()
    rng = np.random.default_rng(0)
    names = ["a", "b", "broken"]
    seen_reasons, seen_codes, clip_tokens = set(), set(), set()
    with CompileCounter() as cc:
        for episode_batch in range(6):
            reqs, plans = [], {}
            for r in range(int(rng.integers(1, 5))):
                reqs.append(EpisodeRequest(Q, videos[names[int(rng.integers(0, 3)) if r else int(rng.integers(0, 2))]]))
                turns = []
                for _ in range(int(rng.integers(0, 3))):
                    s = float(np.round(rng.uniform(0, 5), 1))
                    e = float(np.round(s + rng.uniform(0.2, 4), 1))   # some too short / past the end
                    turns.append("<think>" + "x " * int(rng.integers(0, 20)) + "</think>" + call(s, e)[15:])
                plans[r] = turns + ([ANSWER] if rng.random() < 0.8 else [])
            eps = run_episodes(sampler, renderer, reqs,
                               cfg(max_turns=3, sampling=SamplingOptions(temperature=1.0, max_new_tokens=70)),
                               seed=episode_batch,
                               script=lambda r, t, plans=plans: plans[r][t] if t < len(plans[r]) else None)
            for e in eps:
                seen_reasons.add(e.end_reason)
                seen_codes.update(t.code for t in e.tool_calls)
                clip_tokens.update(v.num_tokens for v in e.visuals[1:])
    assert cc.count == 0, f"{cc.count} compiles after warm-up"
    # the random episodes really exercised the variety they claim to
    assert {"answer", "video_error"} <= seen_reasons and len(seen_reasons) >= 3
    assert {"ok", "invalid_window"} <= seen_codes
    assert len(clip_tokens) >= 2
