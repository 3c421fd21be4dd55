"""RL trainer: the update is the policy loss of vital_jax.rl on the episode tokens, frozen-vision
embeddings give the same log-probs as the tower, masking rules, and an interrupted run resumes
to exactly the uninterrupted one (rollouts are seeded by step)."""

import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vital_jax.rollout.tool_loop import Episode, EpisodeRequest
from vital_jax.data.synthetic import SynthConfig, generate
from vital_jax.models.qwen2_5_vl import ModelConfig, init_params
from vital_jax.rl.losses import policy_loss
from vital_jax.trainers import rl as rl_mod
from vital_jax.trainers.batch import Sequence_, build_batch
from vital_jax.config.run_config import load_config
from vital_jax.runs.metrics import read_jsonl
from vital_jax.trainers.step import row_vision_embeds, token_logps

from vital_jax.testing import LogLines


class _Visual:
    def __init__(self, t, rng):
        self.grid_thw = np.array([t, 4, 4])
        self.pixel_values = rng.standard_normal((t * 16, 1176)).astype(np.float32)
        self.second_per_grid_t = 1.0
        self.kind = "video"


def _rows(cfg, rng, n=4):
    rows = []
    for i in range(n):
        v = _Visual(2, rng)
        prompt = [5, 6, cfg.vision_start_token_id] + [cfg.video_token_id] * 8 + [cfg.vision_end_token_id, 7]
        gen = list(rng.integers(10, 300, size=6 + i))
        ids = prompt + gen
        mask = [0] * len(prompt) + [1] * len(gen)
        rows.append(Sequence_(ids, mask, [v], advantage=float(rng.standard_normal()), group=i // 2))
    return rows


@pytest.fixture(scope="module")
def tiny():
    cfg = ModelConfig.tiny().with_runtime(freeze_vision=True)
    _, params = init_params(cfg, seed=3)
    return cfg, params


def test_frozen_vision_embeddings_give_the_same_logps(tiny):
    cfg, params = tiny
    b = build_batch(cfg, _rows(cfg, np.random.default_rng(0)), micro_batches=1, token_buckets=[32],
                    vision_buckets=[64])
    mb = jax.tree.map(lambda x: jnp.asarray(x[0]), b)
    direct = token_logps(cfg, params, mb)
    emb = row_vision_embeds(cfg, params, mb["vision"])
    reused = token_logps(cfg, params, {k: v for k, v in mb.items() if k != "vision"}, vis_embeds=emb)
    np.testing.assert_allclose(np.asarray(reused), np.asarray(direct), atol=1e-6)
    # and the vision really matters: other pixels, other log-probs
    mb2 = dict(mb, vision=dict(mb["vision"], pixels=mb["vision"]["pixels"] * 0.0))
    assert np.abs(np.asarray(token_logps(cfg, params, mb2)) - np.asarray(direct)).max() > 1e-4


@pytest.mark.parametrize("loss", ["dgrpo", "drgrpo", "reg_grpo"])
def test_rl_loss_is_the_policy_loss_on_episode_tokens(tiny, loss):
    """rl_loss over 2 micro-batches sums to policy_loss over the whole batch (global token
    normaliser for token-mean losses, equal shares otherwise)."""
    cfg, params = tiny
    rows = _rows(cfg, np.random.default_rng(1))
    rl = load_config(None, [f"rl.loss={loss}", "rl.group_size=2", "rl.beta=0.0"]).rl
    b = jax.tree.map(jnp.asarray, build_batch(cfg, rows, micro_batches=2, token_buckets=[32], vision_buckets=[64]))
    old = jax.lax.map(lambda mb: token_logps(cfg, params, mb) - 0.05, b)   # an off-policy old policy
    b = dict(b, old_logp=old)
    ctx = {"token_count": jnp.sum(b["loss_mask"][:, :, 1:]), "num_micro": 2}
    fn = jax.jit(lambda p, mb, tc: rl_mod.rl_loss(cfg, rl, p, mb, {"token_count": tc, "num_micro": 2})[0])
    total = sum(float(fn(params, jax.tree.map(lambda x: x[m], b), ctx["token_count"])) for m in range(2))
    full = build_batch(cfg, rows, micro_batches=1, token_buckets=[32], vision_buckets=[64])
    fb = jax.tree.map(lambda x: jnp.asarray(x[0]), full)
    logp = jax.jit(lambda p, mb: token_logps(cfg, p, mb))(params, fb)
    ref, _ = policy_loss(loss, logp=logp, old_logp=old.reshape(logp.shape), advantages=fb["advantages"],
                         mask=fb["loss_mask"], group_size=2)
    np.testing.assert_allclose(total, float(ref), rtol=1e-5, atol=1e-7)


def test_sampler_logprobs_reach_the_update(tiny):
    """Rows carry the sampler's log-probs into the batch; the update reports the sampler/trainer
    gap over policy tokens (mean, and a max over every micro-batch), and ``rl.tis_cap`` weights the
    loss by the truncated importance ratio (= policy_loss with ``sampler_logp``)."""
    cfg, params = tiny
    rows = _rows(cfg, np.random.default_rng(2))
    b0 = build_batch(cfg, rows, micro_batches=2, token_buckets=[32], vision_buckets=[64])
    assert "sampler_logp" not in b0                      # rows without log-probs (SFT)
    logp = np.asarray(jax.lax.map(lambda mb: token_logps(cfg, params, mb), jax.tree.map(jnp.asarray, b0)))
    shift = np.where(np.asarray(b0["loss_mask"]) > 0, 0.01 * np.arange(logp.size).reshape(logp.shape) % 0.3, 0.0)
    flat_lp, flat_shift = logp.reshape(len(rows), -1), shift.reshape(len(rows), -1)
    for i, r in enumerate(rows):
        n = len(r.ids)
        r.logprobs = list(flat_lp[i, :n] - flat_shift[i, :n])
    b = jax.tree.map(jnp.asarray, build_batch(cfg, rows, micro_batches=2, token_buckets=[32], vision_buckets=[64]))
    real = np.asarray(b["attention_mask"]) > 0                 # padding stays 0
    np.testing.assert_allclose(np.asarray(b["sampler_logp"]), np.where(real, logp - shift, 0.0), atol=1e-6)
    mask = np.asarray(b["loss_mask"])
    for tis in (None, 1.5):
        rl = load_config(None, ["rl.loss=grpo", "rl.group_size=2"] + ([f"rl.tis_cap={tis}"] if tis else [])).rl
        ctx = {"token_count": jnp.sum(b["loss_mask"][:, :, 1:]), "num_micro": 2}
        loss, m = jax.jit(lambda p, mb: rl_mod.rl_loss(cfg, rl, p, mb, ctx))(params, jax.tree.map(lambda x: x[0], b))
        gap = np.abs(shift[0]) * mask[0]
        assert float(m["logp_mismatch_mean"]) == pytest.approx(gap.sum() / mask[0].sum(), rel=1e-4)
        assert float(m["logp_mismatch_max"]) == pytest.approx(gap.max(), rel=1e-4)
        ref, _ = policy_loss("grpo", logp=jnp.asarray(logp[0]), old_logp=jnp.asarray(logp[0]),
                             advantages=b["advantages"][0], mask=b["loss_mask"][0], group_size=2,
                             token_count=ctx["token_count"],
                             **({"sampler_logp": b["sampler_logp"][0], "is_cap": tis} if tis else {}))
        np.testing.assert_allclose(float(loss), float(ref), rtol=1e-5, atol=1e-7)
    # the step's metrics: ``*_max`` is the maximum over micro-batches, the rest their mean
    from vital_jax.trainers.optim import make_optimizer
    from vital_jax.trainers.step import TrainState, train_step

    rl = load_config(None, ["rl.loss=grpo", "rl.group_size=2"]).rl
    opt = make_optimizer(rl.optim, 1)
    _, got = jax.jit(lambda st, bb: train_step(lambda p, mb, c: rl_mod.rl_loss(cfg, rl, p, mb, c), opt, st, bb))(
        TrainState(jnp.zeros((), jnp.int32), params, opt.init(params)), b)
    assert float(got["logp_mismatch_max"]) == pytest.approx(float((np.abs(shift) * mask).max()), rel=1e-4)
    with pytest.raises(Exception, match="tis_cap"):
        load_config(None, ["rl.loss=reg_grpo", "rl.tis_cap=2"])


def test_episode_rows_mask_truncated_and_broken_episodes():
    ep = Episode(EpisodeRequest("q", "v.mp4"))
    ep._add("prompt", [1, 2, 3], 0)
    ep._add("assistant", [4, 5], 1, [-0.1, -0.2])
    row = rl_mod.episode_row(ep, 0.5, 0)
    assert list(row.loss_mask) == [0, 0, 0, 1, 1] and list(row.generated) == [0, 0, 0, 1, 1]
    ep.truncated = True
    assert sum(rl_mod.episode_row(ep, 0.5, 0).loss_mask) == 0
    assert sum(rl_mod.episode_row(ep, 0.5, 0, mask_truncated=False).loss_mask) == 2
    broken = Episode(EpisodeRequest("q", "v.mp4"))
    broken.end_reason = "video_error"
    row = rl_mod.episode_row(broken, 0.0, 0)
    assert len(row.ids) == 1 and sum(row.loss_mask) == 0 and not row.visuals


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    generate(out, SynthConfig(num=6, seed=5, min_seconds=20, max_seconds=22, size=32, eval_fraction=0.0))
    return out


def _fake_score(cfg, rec, ep):
    # rewards that vary within a group (a random policy scores 0 on the real rewards), but are a
    # pure function of the episode, so an exact resume reproduces them
    return {"total": float(sum(ep.ids[-3:]) % 5) / 4.0, "format": 0.0, "tool": 0.0}


def _cfg(suite, out, steps=3, extra=()):
    return load_config(None, [f"data.root={suite}", f"out_dir={out}", "stage=rl", f"rl.steps={steps}",
                              "rl.prompts_per_step=2", "rl.group_size=2", "rl.rollout_batch=4",
                              "rl.max_new_tokens=8", "rl.cache_length=512", "rl.max_turns=2",
                              "model.freeze_vision=true", "checkpoint.every=1", "checkpoint.async_save=false",
                              "data.token_buckets=[512]", "data.vision_buckets=[128]",
                              "data.vision.max_frames=8", "data.vision.max_pixels=3136",
                              "rl.optim.learning_rate=1e-3", "rl.mask_truncated=false", *extra])


def test_rl_run_resumes_exactly(suite, tmp_path, monkeypatch):
    monkeypatch.setattr(rl_mod, "score_episode", _fake_score)
    extra = ("rl.difficulty.enabled=true", "rl.dynamic_sampling=true", "rl.max_refills=1")
    full = rl_mod.run_rl(_cfg(suite, tmp_path / "full", extra=extra))
    assert full["stopped"] is None and full["steps"] == 3

    def stop_after_two(msg):
        if msg.startswith("rl step 2/"):
            signal.raise_signal(signal.SIGTERM)

    with LogLines(on_line=stop_after_two):
        part = rl_mod.run_rl(_cfg(suite, tmp_path / "part", extra=extra))
    assert part["stopped"] == "SIGTERM" and part["steps"] == 2
    resumed = rl_mod.run_rl(_cfg(suite, tmp_path / "part", extra=extra))
    assert resumed["steps"] == 3

    a = {r["step"]: r for r in read_jsonl(tmp_path / "full")}
    b = {r["step"]: r for r in read_jsonl(tmp_path / "part")}
    for key in ("rl/loss", "rl/reward_mean", "rl/adv_abs_mean", "rl/grad_norm"):
        for s in (1, 2, 3):
            assert b[s][key] == pytest.approx(a[s][key], rel=1e-6, abs=1e-9), (key, s)
    assert a[3]["rl/grad_norm"] > 0          # the update did something
    assert a[3]["rl/logp_mismatch_max"] < 1e-3   # the sampler's log-probs are the trainer's (f32)
    for key in ("rl/time_rollout_s", "rl/time_update_s", "rl/tool_call_rate", "rl/entropy", "rl/clip_fraction"):
        assert np.isfinite(a[3][key])
    # difficulty state travelled through the checkpoint
    from vital_jax.models.qwen2_5_vl import load_pretrained

    _, pa = load_pretrained(full["final"])
    _, pb = load_pretrained(resumed["final"])
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)


def test_reward_ignores_the_end_of_turn_token():
    """The policy's <|im_end|> is trained on but is not answer text: a well-formed two-turn
    response scores its format point with or without it."""
    from vital_jax.data.records import Record, Solution

    rec = Record(kind="rl", media_type="video", media="v.mp4", media_path="v.mp4", question="When?",
                 data_source="synthetic/charades", solution=Solution(interval=(1.0, 2.5)), duration=30.0)
    ep = Episode(EpisodeRequest("q", "v.mp4"))
    ep.texts = ['<think>a</think> <tool_call>{"name": "get_video_clip_frame", "arguments": '
                '{"start_time": 1, "end_time": 3}}</tool_call>', "<think>b</think> <answer>(1.00, 2.00)</answer><|im_end|>"]
    ep.end_reason = "eos"
    cfg = load_config(None, [])
    got = rl_mod.score_episode(cfg, rec, ep)
    assert got["format"] == 1.0 and got["hack"] == 0.0 and got["iou_raw"] == pytest.approx(2 / 3)
    ep.texts[1] += " trailing text"
    assert rl_mod.score_episode(cfg, rec, ep)["format"] == 0.0


def test_periodic_heldout_eval_gives_the_curve(suite, tmp_path):
    """rl.eval_every: greedy held-out episodes at step 0, every eval_every steps and at the end,
    scored as `vital eval` scores them; the points land in the curves and in metrics.jsonl.
    rl.log_rollouts=3: the first 3 episodes of each step, with reward parts and advantage."""
    import json

    extra = ("rl.eval_every=2", "rl.eval_limit=3", "data.eval_file=rl.jsonl", "checkpoint.every=0", "rl.log_rollouts=3")
    with LogLines() as log:
        res = rl_mod.run_rl(_cfg(suite, tmp_path / "run", steps=3, extra=extra))
    logs = log.lines
    curves = res["curves"]
    for name in ("score/heldout", "reward/heldout", "accuracy/heldout", "iou/heldout", "tool_call_rate/heldout"):
        assert [p[0] for p in curves[name]] == [0, 2, 3], name
        assert all(0.0 <= p[1] <= 4.0 for p in curves[name]), name
    logged = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1] * 3 + [2] * 3 + [3] * 3
    for r in logged:
        assert r["texts"] and np.isfinite(r["advantage"]) and "total" in r["reward"] and r["end_reason"], r
    assert sum(line.startswith("rl held-out at step") and "(n=3, greedy)" in line for line in logs) == 3
    rows = {r["step"]: r for r in read_jsonl(tmp_path / "run")}
    for s in (0, 2, 3):
        assert rows[s]["rl/heldout/n"] == 3 and np.isfinite(rows[s]["rl/heldout/score"]), s
    assert "rl/heldout/score" not in rows[1]
    with pytest.raises(rl_mod.ConfigError, match="data.eval_file"):
        rl_mod.run_rl(_cfg(suite, tmp_path / "bad", steps=1, extra=("rl.eval_every=1", "data.eval_file=nope.jsonl")))


def test_rollout_sampler_holds_every_rows_clip(suite, tmp_path):
    """The rollout's per-call visual budget covers a whole batch of clips when a clip has more
    tokens than the question video (more clip frames), not only the question videos; and it is
    sized from what the videos can give, not from the settings' ceiling."""
    cfg = _cfg(suite, tmp_path / "r", extra=("data.vision.max_frames=4", "data.vision.max_pixels=784",
                                             "data.vision.min_pixels=784", "data.vision.clip_max_frames=16",
                                             "data.vision.clip_max_pixels=3136"))
    tr = rl_mod.RLTrainer(cfg)
    # 32-px videos: a clip comes at 28x28 (one merged token a frame pair) whatever clip_max_pixels
    # allows, 16 frames -> 8 tokens; the question video, 4 frames -> 2 tokens
    clip_tokens = 16 // 2
    assert tr.rollouts.config.max_visual_tokens >= cfg.rl.rollout_batch * clip_tokens
    assert max(tr.rollouts.config.vision_buckets) < cfg.rl.rollout_batch * 16 // 2 * 3136 // (28 * 28) * 4
