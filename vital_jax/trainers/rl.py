"""RL with the tool loop: GRPO / DGRPO / DAPO / Dr.GRPO / GSPO / Reg-GRPO on VITAL's rewards.

One step::

    P prompts (grain, per-host shard)  ─► [difficulty augmentation: hint or perturbed frames]
      ─► rollout: G episodes per prompt through the KV-cached sampler + clip tool
         (the sampler reads the policy's params in place: no copy)
      ─► rewards (vital_jax.rl.reward per data_source)  ─► group advantages
      ─► [dynamic sampling: drop all-equal groups, roll out more prompts, up to max_refills]
      ─► update batch (episodes padded to static buckets; truncated episodes fully masked;
         observation tokens masked) ─► [ref log-probs if β > 0; old log-probs if > 1 update]
      ─► ``updates_per_rollout`` jitted train steps with the configured policy loss

With the vision tower frozen (VITAL's RL setting) the episode's visual inputs are encoded once
per step and the embeddings feed every later pass (ref, old, update), so no clip is encoded twice
in the update. (They are not taken from the sampler's cache: the sampler does not keep them.)

Random streams (rollout sampling, augmentation) are derived from ``(seed, step)``, so a resumed
run samples exactly what the uninterrupted run would have.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vital_jax.trainers.batch import Sequence_, batch_shardings, build_batch, global_pads, global_shapes
from vital_jax.trainers.common import Run, TrainingError, host_metrics, put_batch
from vital_jax.config.run_config import ConfigError, RunConfig, resolve_micro_batches
from vital_jax.trainers.loop import StepLoop
from vital_jax.trainers.sft import agent_vision, video_kwargs
from vital_jax.trainers.step import row_vision_embeds, token_logps

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- loss


def rl_loss(mcfg, rl, params, mb, ctx):
    """Policy loss of one micro-batch (whole groups), normalised for accumulation."""
    from vital_jax.rl.losses import POLICY_LOSSES, policy_loss

    logp, ent = token_logps(mcfg, params, mb, vis_embeds=mb.get("vis_embeds"), with_entropy=True,
                           only_loss_tokens=True)
    mask = mb["loss_mask"]
    old = mb["old_logp"] if "old_logp" in mb else jax.lax.stop_gradient(logp)
    declared = POLICY_LOSSES.info(rl.loss)       # what this loss takes (see vital_jax.rl.losses)
    options: dict[str, Any] = {}
    if rl.tis_cap is not None:      # truncated importance sampling for the sampler/trainer mismatch
        options.update(sampler_logp=mb["sampler_logp"], is_cap=rl.tis_cap)
    if declared["clip"] == "token":  # rl.epsilon is a per-token PPO range; GSPO keeps its own
        options["epsilon"] = rl.epsilon
        if rl.epsilon_high is not None:
            options["epsilon_high"] = rl.epsilon_high
    if rl.aggregation is not None:
        options["aggregation"] = rl.aggregation
    token_mean = (rl.aggregation or declared["aggregation"]) == "token_mean"
    if token_mean:
        options["token_count"] = ctx["token_count"]
    loss, metrics = policy_loss(rl.loss, logp=logp, old_logp=old, advantages=mb["advantages"], mask=mask,
                                group_size=rl.group_size, ref_logp=mb.get("ref_logp"), beta=rl.beta,
                                kl_estimator=rl.kl_estimator, **options)
    if not token_mean:
        loss = loss / ctx["num_micro"]   # a mean over rows/groups: micro-batches are equal shares
    metrics = dict(metrics)
    metrics["entropy"] = jnp.sum(ent * mask) / jnp.maximum(jnp.sum(mask), 1.0)
    metrics["policy_tokens"] = jnp.sum(mask)
    if "sampler_logp" in mb:
        # |log p_trainer - log p_sampler| of the rollout policy on its own tokens: numerical drift
        # between the KV-cached sampler and the training forward (verl's rollout_probs_diff)
        gap = jnp.abs(jax.lax.stop_gradient(old) - mb["sampler_logp"]) * mask
        metrics["logp_mismatch_mean"] = jnp.sum(gap) / jnp.maximum(jnp.sum(mask), 1.0)
        metrics["logp_mismatch_max"] = jnp.max(gap)
    metrics.pop("loss", None)
    return loss, metrics


def _logp_all(mcfg, params, batch):
    """Log-probs of every micro-batch's loss tokens (no gradient): ``[M, b, L]``, 0 elsewhere."""
    return jax.lax.map(lambda mb: token_logps(mcfg, params, mb, vis_embeds=mb.get("vis_embeds"),
                                              only_loss_tokens=True), batch)


def _embed_all(mcfg, params, vision):
    return jax.lax.map(lambda v: row_vision_embeds(mcfg, params, v), vision)


# --------------------------------------------------------------------------- rollouts


def solution_for_reward(rec) -> Any:
    sol = rec.solution
    if sol is None:
        raise ConfigError(f"{rec.file}: record {rec.index}: an RL record needs a solution")
    if sol.answer is not None and sol.interval is not None:
        return {"answer": sol.answer, "span": list(sol.interval)}
    return sol.answer if sol.answer is not None else list(sol.interval)


def _perturb(strength: float, sigma: float, seed: tuple):
    def fn(frames):
        from vital_jax.data.augment import add_frame_noise

        return add_frame_noise(frames, strength, np.random.default_rng(list(seed)), sigma=sigma)
    return fn


def make_requests(cfg: RunConfig, prompts, step: int, strengths: dict, mcfg=None) -> list:
    """EpisodeRequests for ``P`` prompt examples (augmented by the difficulty table); ``mcfg``:
    the model config, whose family decides how a perturbed video is patched."""
    from vital_jax.rollout.tool_loop import EpisodeRequest
    from vital_jax.data.augment import insert_hint
    from vital_jax.data.sft import prompt_question
    from vital_jax.video import load_video
    from vital_jax.video.errors import VideoError

    out = []
    d = cfg.rl.difficulty
    for i, ex in enumerate(prompts):
        rec = ex["record"]
        question = prompt_question(rec)
        s = strengths.get(_key(rec), 0.0) if d.enabled else 0.0
        visual = None
        if s > 0 and ex.get("hint"):
            question = insert_hint(question, ex["hint"], s)
        elif s < 0 and rec.is_video:
            try:
                visual = load_video(rec.media_path, **video_kwargs(cfg.data.vision, mcfg),
                                    frame_transform=_perturb(-s, d.noise_sigma, (cfg.seed, step, i)))
            except VideoError:
                visual = None   # the loop loads it again and reports the error in the episode
        out.append(EpisodeRequest(question, str(rec.media_path) if rec.is_video else None,
                                  use_tool=cfg.rl.use_tools, visual=visual))
    return out


def _key(rec) -> str:
    return f"{rec.file}:{rec.index}"


END_OF_TURN = "<|im_end|>"
# held-out metric -> curve group (``<group>/heldout`` sits next to ``<group>/train`` in the plots)
HELDOUT_CURVES = {"heldout/score": "score", "heldout/reward": "reward", "heldout/accuracy": "accuracy",
                  "heldout/miou": "iou", "heldout/tool_call_rate": "tool_call_rate"}


def score_episode(cfg: RunConfig, rec, ep) -> dict[str, float]:
    from vital_jax.rl.rewards import reward

    ok_calls = sum(1 for c in ep.tool_calls if c.ok)
    # the end-of-turn token is the policy's (it is trained on), but not part of the answer text:
    # scored as decoded with special tokens skipped, as verl/VITAL do
    turns = [t.removesuffix(END_OF_TURN).rstrip() for t in ep.texts]
    r = reward(rec.data_source, turns, solution_for_reward(rec), num_tool_calls=ok_calls,
               tool_bonus=cfg.rl.tool_bonus)
    if ep.end_reason == "video_error":
        r = {k: 0.0 for k in r}
    return r


def _heldout_path(cfg: RunConfig) -> Path:
    path = Path(cfg.data.root) / cfg.data.eval_file
    if not path.is_file():
        raise ConfigError(f"rl.eval_every={cfg.rl.eval_every} evaluates data.eval_file, but {path} does not "
                          f"exist (set rl.eval_every=0 or point data.eval_file at held-out records)")
    return path


def episode_row(ep, advantage: float, group: int, *, mask_truncated: bool = True) -> Sequence_:
    """Training row of an episode: over-long/truncated ones (unless ``mask_truncated`` is off) and
    broken ones are fully masked."""
    ids = list(ep.ids) or [0]
    mask = list(ep.loss_mask) if ep.ids else [0]
    if (ep.truncated and mask_truncated) or ep.end_reason == "video_error":
        mask = [0] * len(ids)
    gen = list(ep.loss_mask) if ep.ids else [0]
    return Sequence_(ids, mask, list(ep.visuals) if ep.ids else [], advantage, group, generated=gen,
                     logprobs=list(ep.logprobs) if ep.ids else [0.0])


# --------------------------------------------------------------------------- trainer


class RLTrainer:
    """Owns the jitted functions and host state of one RL run (use :func:`run_rl`)."""

    def __init__(self, cfg: RunConfig):
        from vital_jax.prompt import ChatRenderer
        from vital_jax.rl.difficulty import DifficultyTracker, Schedule
        from vital_jax.runs.checkpoint import TrainCheckpoints
        from vital_jax.trainers.optim import make_optimizer
        from vital_jax.trainers.step import TrainSteps, init_state

        hosts = jax.process_count()
        cfg = resolve_micro_batches(cfg, cfg.mesh.resolve(jax.device_count()), hosts)
        rl = cfg.rl
        if rl.prompts_per_step % (rl.micro_batches * hosts):
            raise ConfigError(f"rl.prompts_per_step {rl.prompts_per_step} must divide into "
                              f"{rl.micro_batches} micro-batches x {hosts} process(es) (micro-batches hold whole groups)")
        if rl.eval_every:
            _heldout_path(cfg)   # a missing file fails now, not after the model is built
        self.cfg = cfg
        self.run = Run.create(cfg)
        self.mcfg, self.mesh = self.run.model_cfg, self.run.mesh
        self.renderer = ChatRenderer(self.run.tok, prompts=cfg.data.vision.prompt)
        self.optimizer = make_optimizer(rl.optim, rl.steps, freeze_vision=self.mcfg.runtime.freeze_vision)
        self.state, self.state_sh = init_state(self.mcfg, self.optimizer, self.run.params, self.mesh)
        # the reference policy: a frozen copy of the initial params, only when the KL term is on
        self.ref_params = (jax.tree.map(jnp.copy, self.state.params) if rl.beta > 0 else None)
        self.run.params = None
        self._heldout_set = None
        self.rollouts = self.build_rollout()
        self.rollouts.params = self.policy_view(self.state.params)
        d = rl.difficulty
        self.tracker = DifficultyTracker(d.window, hint=Schedule(scale=d.hint_scale, max_strength=d.hint_max),
                                         perturb=Schedule(scale=d.perturb_scale, max_strength=d.perturb_max))
        self.strengths: dict[str, float] = {}
        self.ckpts = TrainCheckpoints(self.run.out / "checkpoints", keep=cfg.checkpoint.keep,
                                      async_save=cfg.checkpoint.async_save)
        self.curves: dict[str, list] = {"reward/train": [], "accuracy/train": [], "loss/rl": [], "iou/train": []}
        if rl.eval_every:
            self.curves.update({f"{k}/heldout": [] for k in HELDOUT_CURVES.values()})
        self._logp = jax.jit(functools.partial(_logp_all, self.mcfg))
        self._embed = jax.jit(functools.partial(_embed_all, self.mcfg))
        self.train = TrainSteps(functools.partial(rl_loss, self.mcfg, rl), self.optimizer, self.state_sh)

    # ---------------------------------------------------------------- rollout placement
    def agent(self, *, greedy: bool = False):
        """The tool loop's settings: training sampling, or greedy for the held-out episodes."""
        from vital_jax.rollout import AgentConfig, SamplingOptions

        rl = self.cfg.rl
        sampling = (SamplingOptions(temperature=0.0, max_new_tokens=rl.max_new_tokens) if greedy else
                    SamplingOptions(temperature=rl.temperature, top_p=rl.top_p,
                                    repetition_penalty=rl.repetition_penalty, max_new_tokens=rl.max_new_tokens))
        return AgentConfig(sampling=sampling, max_turns=rl.max_turns, **agent_vision(self.cfg.data.vision, self.mcfg))

    def build_rollout(self):
        """The rollout contract sized from every training (and held-out) record's budget: its
        prompt and what its video and the clip tool can show (headers only), with
        ``rl.cache_length`` as the context limit. A hint makes a prompt longer than budgeted;
        it then runs as one more prefill chunk, never a new shape."""
        from vital_jax.data.sft import prompt_question
        from vital_jax.rollout import EpisodeRequest, Rollout, request_budget

        rl = self.cfg.rl
        t0 = time.perf_counter()
        recs = self.records() + (self.heldout_set()[0] if rl.eval_every else [])
        agent = self.agent()
        budgets = [request_budget(self.renderer, EpisodeRequest(prompt_question(r), str(r.media_path) if r.is_video
                                                                else None, use_tool=rl.use_tools), agent) for r in recs]
        log.info(f"rl: {len(budgets)} records budgeted in {time.perf_counter() - t0:.1f} s")
        return Rollout.sized(self.mcfg, self.state.params, self.renderer, budgets, batch_size=rl.rollout_batch,
                             max_turns=rl.max_turns, max_new_tokens=rl.max_new_tokens, cache_length=rl.cache_length,
                             mesh=self.rollout_mesh())

    def rollout_mesh(self):
        """Each process rolls out its own prompts, so its sampler lives on a mesh of its *local*
        devices (the global mesh would make every decode a cross-host program)."""
        if jax.process_count() == 1:
            return self.mesh
        from vital_jax.sharding import make_mesh

        return make_mesh(*self.cfg.mesh.resolve(jax.local_device_count()), devices=jax.local_devices())

    def policy_view(self, params):
        """The policy params as the sampler sees them: the same buffers; with several processes, a
        zero-copy view of this process's shards on the local mesh. Valid while no parameter is split
        across processes (fsdp x tensor within one host), which the check below enforces."""
        if jax.process_count() == 1:
            return params
        local = self.rollouts.mesh

        def view(x):
            sh = jax.sharding.NamedSharding(local, x.sharding.spec)
            shards = x.addressable_shards
            if sh.shard_shape(x.shape) != shards[0].data.shape:
                raise TrainingError(f"parameter of shape {x.shape} is split across processes "
                                    f"({x.sharding.spec}); rollouts need fsdp x tensor within one host")
            return jax.make_array_from_single_device_arrays(x.shape, sh, [s.data for s in shards])
        return jax.tree.map(view, params)

    # ---------------------------------------------------------------- data
    def records(self):
        from vital_jax.data.records import load_records

        root = Path(self.cfg.data.root)
        recs = []
        for f in self.cfg.data.rl_files:
            recs += load_records(root / f, root, kind="rl")
        if not recs:
            raise ConfigError(f"data.rl_files {list(self.cfg.data.rl_files)} under {root}: no RL records")
        return recs

    def iterator(self):
        from vital_jax.data.pipeline import PipelineConfig, rl_iterator

        from vital_jax.data.records import load_records

        root = Path(self.cfg.data.root)
        images = [r for f in self.cfg.data.image_files for r in load_records(root / f, root, kind="rl")]
        return rl_iterator(self.records(), PipelineConfig(seed=self.cfg.data.seed, shuffle=self.cfg.data.shuffle),
                           prompts_per_batch=self.cfg.rl.prompts_per_step // jax.process_count(),
                           group_size=self.cfg.rl.group_size, image_records=images or None)

    # ---------------------------------------------------------------- host state
    def host_state(self) -> dict:
        return {"curves": self.curves, "difficulty": self.tracker.state_dict(),
                "strengths": self.strengths}

    def load_host_state(self, host: dict) -> None:
        self.curves = host.get("curves", self.curves)
        if "difficulty" in host:
            self.tracker.load_state_dict(host["difficulty"])
        self.strengths = dict(host.get("strengths", {}))

    # ---------------------------------------------------------------- held-out curve
    def heldout_set(self):
        """``(records, samples)`` of the first ``rl.eval_limit`` entries of ``data.eval_file``: the
        records drive the episodes and rewards, the eval module's samples the task metrics."""
        if self._heldout_set is None:
            from vital_jax.data.records import load_records
            from vital_jax.eval.benchmarks import load_benchmark

            root = Path(self.cfg.data.root)
            path = _heldout_path(self.cfg)
            recs = load_records(path, root, kind="rl")
            samples = load_benchmark("synthetic", path)     # any MTVR file: accuracy / mIoU / score
            n = self.cfg.rl.eval_limit
            recs, samples = recs[:n], samples[:n]
            if not recs or len(recs) != len(samples):
                raise ConfigError(f"{path}: {len(recs)} records but {len(samples)} samples to evaluate")
            self._heldout_set = (recs, samples)
        return self._heldout_set

    def heldout(self) -> dict[str, float]:
        """Greedy episodes of the current policy on the held-out records (tools as in training),
        scored as ``vital eval`` scores them (:func:`vital_jax.eval.scoring.score` on the same
        prediction rows) plus the mean training reward. Every process runs the whole (small) set:
        greedy decoding gives the same numbers on each, so no gathering is needed."""
        from vital_jax.eval.runner import prediction_row
        from vital_jax.eval.scoring import score

        t0 = time.perf_counter()
        recs, samples = self.heldout_set()
        reqs = make_requests(self.cfg, [{"record": r} for r in recs], 0, {}, self.mcfg)   # no strengths: no augmentation
        self.rollouts.params = self.policy_view(self.state.params)
        eps = self.rollouts.run(reqs, self.agent(greedy=True), seed=self.cfg.seed)
        rows = {s.id: prediction_row(s, ep, self.run.tok, {}) for s, ep in zip(samples, eps)}
        m = score("synthetic", samples, rows)["metrics"]
        reward = float(np.mean([score_episode(self.cfg, r, ep)["total"] for r, ep in zip(recs, eps)]))
        return {"heldout/score": float(m["score"]), "heldout/accuracy": float(m["accuracy"]),
                "heldout/miou": float(m["miou"]), "heldout/reward": reward, "heldout/n": float(len(samples)),
                # episodes with at least one tool call (as the training metric counts them)
                "heldout/tool_call_rate": float(np.mean([len(ep.tool_calls) > 0 for ep in eps])),
                "time_heldout_s": time.perf_counter() - t0}

    def record_heldout(self, step: int, m: dict[str, float]) -> None:
        for key, curve in HELDOUT_CURVES.items():
            self.curves.setdefault(f"{curve}/heldout", []).append([step, m[key]])   # runs resumed from before a curve existed
        log.info(f"rl held-out at step {step} (n={int(m['heldout/n'])}, greedy): score {m['heldout/score']:.3f} | "
                 f"acc {m['heldout/accuracy']:.3f} | miou {m['heldout/miou']:.3f} | reward {m['heldout/reward']:.3f} "
                 f"| tools {m['heldout/tool_call_rate']:.2f} "
                 f"| {m['time_heldout_s']:.1f} s")

    # ---------------------------------------------------------------- rollout
    def rollout(self, prompts, step: int, attempt: int):
        G = self.cfg.rl.group_size
        reqs = [r for r in make_requests(self.cfg, prompts, step, self.strengths, self.mcfg) for _ in range(G)]
        self.rollouts.params = self.policy_view(self.state.params)   # the policy's live buffers, no copy
        base = (self.cfg.seed * 1_000_003 + step * 1009 + attempt * 101 + jax.process_index() * 7919) % 2**31
        return self.rollouts.run(reqs, self.agent(), seed=base)

    def score(self, prompts, eps):
        G = self.cfg.rl.group_size
        recs = [p["record"] for p in prompts]
        comps = [score_episode(self.cfg, recs[i // G], ep) for i, ep in enumerate(eps)]
        rewards = np.asarray([c["total"] for c in comps], np.float32).reshape(len(recs), G)
        return comps, rewards

    def step(self, it, step: int) -> dict[str, float]:
        from vital_jax.rl.advantages import advantages, zero_variance_groups

        rl = self.cfg.rl
        P = rl.prompts_per_step // jax.process_count()
        t0 = time.perf_counter()
        batch = next(it)
        prompts = list(batch.prompts)
        eps = self.rollout(prompts, step, 0)
        t_roll = time.perf_counter() - t0
        t1 = time.perf_counter()
        comps, rewards = self.score(prompts, eps)
        t_reward = time.perf_counter() - t1
        all_rewards = _gather_rows(rewards)
        zero_frac = float(np.mean(np.asarray(zero_variance_groups(all_rewards))))
        if rl.dynamic_sampling:
            prompts, eps, comps, rewards, extra = self._refill(it, step, prompts, eps, comps, rewards)
            t_roll += extra
        adv = np.asarray(advantages(rl.advantage, rewards), np.float32)        # [P, G]
        if rl.log_rollouts and jax.process_index() == 0:
            self.log_rollouts(step, prompts, eps, comps, adv)
        if rl.difficulty.enabled:
            decisions = self.tracker.step(all_rewards)
            # decisions come for the global batch; this host's prompts are its slice
            lo = jax.process_index() * P
            for p, dec in zip(prompts, decisions[lo:lo + P]):
                sign = 1.0 if dec.kind == "hint" else (-1.0 if dec.kind == "perturb" else 0.0)
                self.strengths[_key(p["record"])] = sign * float(dec.strength)
        t2 = time.perf_counter()
        rows = [episode_row(ep, float(adv.reshape(-1)[i]), i // rl.group_size, mask_truncated=rl.mask_truncated)
                for i, ep in enumerate(eps)]
        metrics = self.update(rows)
        t_update = time.perf_counter() - t2
        metrics.update(_mean_over_processes(self._rollout_metrics(prompts, eps, comps, rewards, adv)))
        gen_tokens = sum(int(np.sum(ep.loss_mask)) for ep in eps)
        metrics.update(zero_variance_group_fraction=zero_frac, time_rollout_s=t_roll, time_reward_s=t_reward,
                       time_update_s=t_update, step_time_s=time.perf_counter() - t0,
                       rollout_tokens_per_s=gen_tokens / max(t_roll, 1e-9))
        return metrics

    def log_rollouts(self, step, prompts, eps, comps, adv) -> None:
        """Append the step's first ``rl.log_rollouts`` episodes to ``<out_dir>/rollouts.jsonl``."""
        from vital_jax.jsonl import cut_partial_line

        G = self.cfg.rl.group_size
        path = self.run.out / "rollouts.jsonl"
        cut_partial_line(path)         # a run killed mid-write, resumed
        with open(path, "a") as f:
            for i, ep in enumerate(eps[:self.cfg.rl.log_rollouts]):
                rec = prompts[i // G]["record"]
                f.write(json.dumps({"step": step + 1, "record": _key(rec), "group": i // G, "texts": list(ep.texts),
                                    "tool_calls": [c.name for c in ep.tool_calls], "end_reason": ep.end_reason,
                                    "reward": comps[i], "advantage": float(adv.reshape(-1)[i])}) + "\n")

    def _refill(self, it, step, prompts, eps, comps, rewards):
        """DAPO dynamic sampling: keep groups whose rewards differ; refill from new prompts."""
        from vital_jax.rl.advantages import zero_variance_groups

        G = self.cfg.rl.group_size
        P = len(prompts)
        extra = 0.0

        def split(ps, es, cs, rs):
            keep = ~np.asarray(zero_variance_groups(rs))
            groups = [(ps[i], es[i * G:(i + 1) * G], cs[i * G:(i + 1) * G], rs[i]) for i in range(len(ps))]
            return [g for g, k in zip(groups, keep) if k], [g for g, k in zip(groups, keep) if not k]

        good, flat = split(prompts, eps, comps, rewards)
        for attempt in range(1, self.cfg.rl.max_refills + 1):
            if len(good) >= P:
                break
            t = time.perf_counter()
            more = list(next(it).prompts)
            m_eps = self.rollout(more, step, attempt)
            m_comps, m_rewards = self.score(more, m_eps)
            extra += time.perf_counter() - t
            g2, f2 = split(more, m_eps, m_comps, m_rewards)
            good += g2
            flat += f2
        chosen = (good + flat)[:P]   # too few informative groups: pad with all-equal ones (A = 0)
        prompts = [g[0] for g in chosen]
        eps = [e for g in chosen for e in g[1]]
        comps = [c for g in chosen for c in g[2]]
        rewards = np.stack([g[3] for g in chosen])
        return prompts, eps, comps, rewards, extra

    def update(self, rows) -> dict[str, float]:
        rl, cfg = self.cfg.rl, self.cfg
        np_batch = build_batch(self.mcfg, rows, micro_batches=rl.micro_batches, token_buckets=cfg.data.token_buckets,
                               vision_buckets=cfg.data.vision_buckets,
                               **global_pads(cfg.data.token_buckets, cfg.data.vision_buckets, rows))
        sh = batch_shardings(self.mesh, global_shapes(np_batch))
        batch = put_batch(np_batch, sh)
        with jax.set_mesh(self.mesh):
            if self.mcfg.runtime.freeze_vision and "vision" in batch:
                batch["vis_embeds"] = self._embed(self.state.params, batch.pop("vision"))
            if self.ref_params is not None:
                batch["ref_logp"] = self._logp(self.ref_params, batch)
            if rl.updates_per_rollout > 1:
                batch["old_logp"] = self._logp(self.state.params, batch)
            bsh = jax.tree.map(lambda x: x.sharding, batch)
            out = []
            for _ in range(rl.updates_per_rollout):
                self.state, m = self.train(self.state, batch, bsh)
                out.append(host_metrics(m))
        self.rollouts.params = self.policy_view(self.state.params)
        m = {k: float((np.max if k.endswith("_max") else np.mean)([o[k] for o in out])) for k in out[0]}
        m["skipped"] = float(max(o["skipped"] for o in out))
        return m

    def _rollout_metrics(self, prompts, eps, comps, rewards, adv) -> dict[str, float]:
        G = self.cfg.rl.group_size
        out: dict[str, float] = {"reward_mean": float(np.mean(rewards)), "reward_std": float(np.std(rewards)),
                                 "adv_mean": float(np.mean(adv)), "adv_std": float(np.std(adv)),
                                 "adv_abs_mean": float(np.mean(np.abs(adv)))}
        for key in ("format", "tool", "accuracy", "iou", "iou_raw", "hack"):
            vals = [c[key] for c in comps if key in c]
            if vals:
                out[f"reward_{key}"] = float(np.mean(vals))
        by_task: dict[str, list] = {}
        for i, c in enumerate(comps):
            rec = prompts[i // G]["record"]
            by_task.setdefault(str(rec.extra.get("task", rec.data_source)), []).append(c)
        for task, cs in by_task.items():
            for key in ("accuracy", "iou_raw"):
                vals = [c[key] for c in cs if key in c]
                if vals:
                    out[f"{task}/{key.replace('_raw', '')}"] = float(np.mean(vals))
        calls = [len(ep.tool_calls) for ep in eps]
        ok = sum(1 for ep in eps for c in ep.tool_calls if c.ok)
        out["tool_call_rate"] = float(np.mean([n > 0 for n in calls]))
        out["tool_calls_per_episode"] = float(np.mean(calls))
        out["tool_call_validity"] = ok / max(1, sum(calls))
        reasons = Counter(ep.end_reason for ep in eps)
        for r, n in reasons.items():
            out[f"end/{r}"] = n / len(eps)
        out["truncated_fraction"] = float(np.mean([ep.truncated for ep in eps]))
        out["response_tokens"] = float(np.mean([sum(ep.loss_mask) for ep in eps]))
        return out


def _mean_over_processes(metrics: dict[str, float]) -> dict[str, float]:
    """Rollout metrics of every process averaged (each process scored its own episodes; keys
    one process lacks, e.g. an end reason it never saw, average over those that have them)."""
    if jax.process_count() == 1:
        return metrics
    import json

    from jax.experimental import multihost_utils

    blob = np.frombuffer(json.dumps(metrics).encode(), np.uint8)
    n = int(np.max(multihost_utils.process_allgather(np.asarray([blob.size]))))
    padded = np.zeros(n, np.uint8)
    padded[:blob.size] = blob
    every = np.asarray(multihost_utils.process_allgather(padded)).reshape(jax.process_count(), n)
    dicts = [json.loads(bytes(row).rstrip(b"\0").decode()) for row in every]
    keys = sorted({k for d in dicts for k in d})
    return {k: float(np.nanmean([d[k] for d in dicts if k in d])) for k in keys}


def _gather_rows(x: np.ndarray) -> np.ndarray:
    """All processes' rows of a host array, in process order (identical on every host)."""
    if jax.process_count() == 1:
        return x
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def run_rl(cfg: RunConfig, *, resume: bool = True) -> dict:
    """Train with RL; returns ``{"final", "steps", "curves", "stopped", "out_dir"}``."""
    from vital_jax.trainers.step import abstract_state

    tr = RLTrainer(cfg)
    rl = cfg.rl
    loop = StepLoop(cfg, tr.run, tr.ckpts, kind="rl", total=rl.steps,
                    keys={"reward_mean": "reward", "reward_accuracy": "acc", "loss": "loss",
                          "tool_call_rate": "tools", "time_rollout_s": "rollout s"},
                    line=lambda step, m: (f"rl step {step}/{rl.steps} | reward {m['reward_mean']:.3f} | acc "
                                          f"{m.get('reward_accuracy', float('nan')):.3f} | loss {m['loss']:.4f} | "
                                          f"tools {m['tool_call_rate']:.2f} | rollout {m['time_rollout_s']:.1f} s "
                                          f"update {m['time_update_s']:.1f} s"))
    it = tr.iterator()
    start = 0
    if resume:
        got = tr.ckpts.restore(abstract_state(tr.mcfg, tr.optimizer, tr.state_sh), data_iterator=it)
        if got is not None:
            start, tr.state, host = got
            tr.load_host_state(host)
            tr.rollouts.params = tr.policy_view(tr.state.params)
            loop.resumed(start, host)
    step = start
    if rl.eval_every and start == 0:   # the starting point of the held-out curve (a resume has it)
        m0 = tr.heldout()
        tr.record_heldout(0, m0)
        tr.run.writer.write(0, m0, prefix="rl/")
    with loop:
        while step < rl.steps:
            m = tr.step(it, step)
            step += 1
            if rl.eval_every and (step % rl.eval_every == 0 or step == rl.steps):
                m.update(tr.heldout())
                tr.record_heldout(step, m)
            tr.curves["reward/train"].append([step, m["reward_mean"]])
            tr.curves["loss/rl"].append([step, m["loss"]])
            if "reward_accuracy" in m:
                tr.curves["accuracy/train"].append([step, m["reward_accuracy"]])
            if "reward_iou_raw" in m:
                tr.curves["iou/train"].append([step, m["reward_iou_raw"]])
            if "tool_call_rate" in m:
                tr.curves.setdefault("tool_call_rate/train", []).append([step, m["tool_call_rate"]])
            if loop.after_step(step, tr.state, m, it, tr.host_state):
                break
    return loop.finish(step, tr.state, it, tr.host_state, tr.curves)
