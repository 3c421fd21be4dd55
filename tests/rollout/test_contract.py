"""The rollout contract: shapes sized from what the inputs can produce, many batches on one set of
compiled programs, episodes in request order, errors isolated per row when asked."""

import numpy as np
import pytest

from tests.rollout.conftest import CLIP_KW, VIDEO_KW
from vital_jax.rollout import (AgentConfig, Budget, EpisodeRequest, Rollout, SamplerError, SamplingOptions,
                               request_budget, size_sampler)
from vital_jax.prompt import Vision
from vital_jax.rollout import contract
from vital_jax.video import load_clip, load_video, write_video

Q = "What colour is the ball?"
AGENT = AgentConfig(sampling=SamplingOptions(temperature=1.0, max_new_tokens=12), max_turns=2,
                    video_kwargs=VIDEO_KW, clip_kwargs=CLIP_KW)


def _tokens(v) -> int:
    t, h, w = (int(x) for x in np.asarray(v.grid_thw).reshape(3))
    return t * h * w // 4


def test_budget_is_what_the_video_and_the_tool_give(renderer, videos, tmp_path):
    """The header-only budget equals the question video's real token count and bounds the largest
    clip the tool can return (the whole video); the per-call visual room is a batch of the
    largest of those, no more."""
    b = request_budget(renderer, EpisodeRequest(Q, videos["b"]), AGENT)
    assert b.visual == _tokens(load_video(videos["b"], **VIDEO_KW))
    whole = load_clip(videos["b"], 0.0, 8.0, **CLIP_KW)
    assert b.clip >= _tokens(whole) and b.clip <= _tokens(whole) + 4
    assert b.frame_patches == 16                                   # 56x56 frames: 4x4 patches
    assert b.prompt == len(renderer.prompt(Q, Vision("video", b.visual), duration=8.0, use_tool=True).ids)

    small = write_video(tmp_path / "small.mp4", np.zeros((30 * 4, 64, 64, 3), np.uint8), fps=4)
    wide = AgentConfig(sampling=AGENT.sampling, max_turns=3)      # load_video's and the tool's defaults
    b2 = request_budget(renderer, EpisodeRequest(Q, small), wide)
    assert b2.visual == _tokens(load_video(small))                  # upscaled to min_pixels, as the model sees it
    sc = size_sampler([b2], batch_size=8, max_turns=3, max_new_tokens=64)
    per_row = max(b2.visual, b2.clip)
    assert 8 * per_row <= sc.max_visual_tokens < 8 * per_row + 16 and max(sc.vision_buckets) == 4 * sc.max_visual_tokens

    unreadable = request_budget(renderer, EpisodeRequest(Q, videos["broken"]), AGENT)
    assert unreadable.visual == unreadable.clip == 0              # its episode ends video_error


def test_size_sampler_limits():
    b = [Budget(prompt=300, visual=16, clip=32, observation=60)]
    assert size_sampler(b, batch_size=2, max_turns=2, max_new_tokens=10, cache_length=4096).cache_length == 4096
    capped = size_sampler(b, batch_size=2, max_turns=2, max_new_tokens=1000, max_cache_length=1024)
    assert capped.cache_length == 1024 and max(capped.chunk_buckets) <= 1024
    assert size_sampler(b, batch_size=2, max_turns=2, max_new_tokens=10).cache_length == 384   # 300+20+61 -> 384
    with pytest.raises(ValueError, match="no requests"):
        size_sampler([], batch_size=1, max_turns=1, max_new_tokens=1)


def test_rollout_runs_many_batches_on_one_sampler_in_order(model, renderer, videos, monkeypatch):
    cfg, params = model
    reqs = [EpisodeRequest(Q, videos["a" if i % 2 else "b"], use_tool=False) for i in range(5)]
    ro = Rollout.sized(cfg, params, renderer, [request_budget(renderer, r, AGENT) for r in reqs], batch_size=2,
                       max_turns=AGENT.max_turns, max_new_tokens=12, overrides={"max_forced_tokens": 96})
    assert ro.model_cfg.runtime.vision_frame_block == 16          # banded by the largest frame
    calls = []
    real = contract.run_episodes

    def spy(sampler, renderer_, requests, config, **kw):
        calls.append((id(sampler), len(requests), kw["seed"]))
        return real(sampler, renderer_, requests, config, **kw)

    monkeypatch.setattr(contract, "run_episodes", spy)
    seen = []
    eps = ro.run(reqs, AGENT, seed=7, on_batch=lambda k, res, dt: seen.append((k, len(res))))
    assert len(eps) == 5 and [e.request for e in eps] == reqs
    assert [c[1:] for c in calls] == [(2, 7), (2, 9), (1, 11)] and len({c[0] for c in calls}) == 1
    assert seen == [(0, 2), (1, 2), (2, 1)]


def test_rollout_isolates_a_failing_row_and_names_memory_settings(model, renderer, videos, monkeypatch):
    cfg, params = model
    reqs = [EpisodeRequest(Q, videos["a"], use_tool=False), EpisodeRequest("too long", videos["b"], use_tool=False)]
    ro = Rollout.sized(cfg, params, renderer, [request_budget(renderer, r, AGENT) for r in reqs], batch_size=2,
                       max_turns=1, max_new_tokens=4)
    real = contract.run_episodes

    def failing(sampler, renderer_, requests, config, **kw):
        if any(r.question == "too long" for r in requests):
            raise SamplerError("row does not fit")
        return real(sampler, renderer_, requests, config, **kw)

    monkeypatch.setattr(contract, "run_episodes", failing)
    with pytest.raises(SamplerError):
        ro.run(reqs, AGENT)
    ok, bad = ro.run(reqs, AGENT, isolate_errors=True)
    assert ok.request is reqs[0] and isinstance(bad, SamplerError)

    import jax

    def oom(*a, **k):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 954499711632 bytes.")

    monkeypatch.setattr(contract, "run_episodes", oom)
    with pytest.raises(contract.RolloutResourceError, match=r"batch 2, cache \d+ tokens.*lower the batch size"):
        ro.run(reqs, AGENT)
