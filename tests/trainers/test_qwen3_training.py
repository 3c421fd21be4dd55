"""The trainers serve Qwen3-VL through the family seam: the training forward's log-probs of an
episode (timestamped video, an image, a tool clip appended mid-episode) equal the KV-cached
sampler's, with the tower run per row or its features (DeepStack included) passed in frozen; and
`vital demo --quick model_family=qwen3_vl` runs every stage with a tiny Qwen3-VL."""

from __future__ import annotations

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models import hf_reference as ref
from vital_jax.cli import main
from vital_jax.models.qwen3_vl import ModelConfig, init_params
from vital_jax.rollout import Sampler, SamplerConfig, SamplingOptions, Segment
from vital_jax.trainers.batch import Sequence_, build_batch
from vital_jax.trainers.step import row_vision_embeds, token_logps


def _item(grid, seed, kind="video"):
    cfg = ModelConfig.tiny()
    pix = np.random.default_rng(seed).standard_normal((int(np.prod(grid)), cfg.vision.patch_dim)).astype(np.float32)
    return types.SimpleNamespace(pixel_values=pix, grid_thw=np.asarray(grid), kind=kind, second_per_grid_t=1.0)


def test_training_logps_equal_the_samplers_for_an_episode_with_a_tool_clip():
    cfg = ModelConfig.tiny().with_runtime(freeze_vision=True)
    _, params = init_params(cfg, seed=5)
    s = Sampler(cfg, params, SamplerConfig(batch_size=1, cache_length=128, chunk_buckets=(16, 64),
                                           vision_buckets=(64,), max_visual_tokens=16, decode_steps=8))
    img, video, clip = _item((1, 4, 4), 1, "image"), _item((2, 4, 4), 2), _item((2, 4, 4), 3)
    prompt = ref.build_input_ids([("text", 3), ("image", (1, 4, 4)), ("video_ts", (2, 4, 4)), ("text", 2)], seed=1)
    turn = ref.build_input_ids([("text", 2), ("video_ts", (2, 4, 4)), ("text", 2)], seed=2)
    sample = SamplingOptions(temperature=1.0, max_new_tokens=6)
    state = s.prefill([Segment(prompt, [img, video])], seeds=3)
    state, a = s.generate(state, sample)
    state = s.extend(state, [Segment(turn, [clip])])
    state, b = s.generate(state, sample)
    ids = list(prompt) + a.tokens[0].tolist() + list(turn) + b.tokens[0].tolist()
    gen = [0] * len(prompt) + [1] * len(a.tokens[0]) + [0] * len(turn) + [1] * len(b.tokens[0])
    want = np.concatenate([a.logprobs[0], b.logprobs[0]])

    batch = build_batch(cfg, [Sequence_(ids, gen, [img, video, clip])], micro_batches=1, token_buckets=[96],
                        vision_buckets=[128])
    mb = jax.tree.map(lambda x: jnp.asarray(x[0]), batch)
    on = np.asarray(gen, bool)
    direct = np.asarray(token_logps(cfg, params, mb))[0, :len(ids)]
    np.testing.assert_allclose(direct[on], want, atol=1e-4)
    # the frozen-tower path (features computed once, per row, DeepStack included) is the same
    feats = row_vision_embeds(cfg, params, mb["vision"])
    assert feats[1] is not None and feats[1].shape[:2] == (1, len(cfg.vision.deepstack_visual_indexes))
    reused = token_logps(cfg, params, {k: v for k, v in mb.items() if k != "vision"}, vis_embeds=feats)
    np.testing.assert_allclose(np.asarray(reused)[0, :len(ids)], direct, atol=1e-6)
    # and DeepStack matters on this path: without it the log-probs move
    no_ds = token_logps(cfg, params, {k: v for k, v in mb.items() if k != "vision"},
                        vis_embeds=(feats[0], jnp.zeros_like(feats[1])))
    assert np.abs(np.asarray(no_ds)[0, :len(ids)][on] - want).max() > 1e-3


def test_quick_demo_with_qwen3_vl(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "model_family=qwen3_vl"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["demo"]["model_family"] == "qwen3_vl"
    assert report["settings"]["sft"]["model"]["preset"] == "qwen3_vl_tiny"
    for stage in ("sft", "rl"):
        hf = json.loads((out / stage / "final" / "config.json").read_text())
        assert hf["model_type"] == "qwen3_vl" and hf["vision_config"]["patch_size"] == 16, stage
    for cell in [report["eval"][s][m] for s in ("sft", "rl") for m in ("tools", "no_tools")] + [report["eval"]["blind"]]:
        assert cell["n"] == 4
    # the prompts were written as Qwen3-VL writes videos: a timestamp before each group
    pred = json.loads((out / "eval" / "rl_tools" / "predictions.jsonl").read_text().splitlines()[0])
    assert pred["prompt"].count(" seconds><|vision_start|>") >= 2
