"""Supervised fine-tuning on (tool-)CoT trajectories.

Data: records of kind ``cot`` / ``tool_cot`` (``vital_jax.data.records``) through the grain
pipeline (per-host shard, shuffle, exact resume). Each example is featurised on the host: the
question video (and for Tool-CoT the clip the trajectory asked for) decoded and patchified, the
conversation rendered with the chat template, loss mask 1 on assistant tokens only — the tool
observation (caption + clip tokens) is masked out, as VITAL trains.

Per step: ``batch_size`` rows (global) in ``micro_batches`` accumulation steps; one jitted train
step (see step.py) with the state donated; checkpoints every ``checkpoint.every`` steps and on
SIGTERM/SIGINT; ``--resume`` continues from the latest readable checkpoint with the same next
batch.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any

import jax

from vital_jax.trainers.batch import Sequence_, batch_shardings, build_batch, global_pads, global_shapes
from vital_jax.trainers.common import Run, host_metrics, put_batch
from vital_jax.config.run_config import ConfigError, RunConfig, VisionInputConfig, resolve_micro_batches
from vital_jax.trainers.loop import StepLoop


def _processing(mcfg) -> dict:
    """``load_video``/``load_clip``'s ``processing`` for the model's family; nothing when it is
    the default (Qwen2.5-VL's), so option dicts (and eval folders' settings) stay as they were."""
    if mcfg is None:
        return {}
    from vital_jax.models.families import package_of
    from vital_jax.video import Processing

    p = package_of(mcfg).vision_processing(mcfg)
    return {} if p == Processing() else {"processing": p}


def with_family(vision: dict, mcfg) -> dict:
    """:func:`agent_vision`-style keywords (``video_kwargs``, ``clip_kwargs``,
    ``text_timestamps``) completed for the model's family: its pixel processing unless given,
    and timestamps as text where the family always writes them so."""
    proc = _processing(mcfg)
    return {**vision, "video_kwargs": {**proc, **(vision.get("video_kwargs") or {})},
            "clip_kwargs": {**proc, **(vision.get("clip_kwargs") or {})},
            "text_timestamps": bool(vision.get("text_timestamps")) or _family_timestamps(mcfg)}


def _family_timestamps(mcfg) -> bool:
    if mcfg is None:
        return False
    from vital_jax.models.families import package_of

    return bool(package_of(mcfg).TEXT_TIMESTAMPS)


def text_timestamps(v: VisionInputConfig, mcfg=None) -> bool:
    """Whether videos are written with each group's time as text: asked for, or how the model's
    family always writes them (Qwen3-VL)."""
    return v.text_timestamps or _family_timestamps(mcfg)


def video_kwargs(v: VisionInputConfig, mcfg=None) -> dict:
    """``load_video`` options of ``v`` for model config ``mcfg``'s family."""
    return dict(max_frames=v.max_frames, min_pixels=v.min_pixels, max_pixels=v.max_pixels, **_processing(mcfg))


def clip_kwargs(v: VisionInputConfig, mcfg=None) -> dict:
    """``load_clip`` options of ``v`` for model config ``mcfg``'s family."""
    return dict(max_frames=v.clip_max_frames, min_pixels=min(v.min_pixels, v.clip_max_pixels),
                max_pixels=v.clip_max_pixels, timestamps=v.timestamps, **_processing(mcfg))


def agent_vision(v: VisionInputConfig, mcfg=None) -> dict:
    """:class:`vital_jax.rollout.AgentConfig` keyword arguments for ``v`` and the model's family:
    rollouts, held-out episodes and evaluation see videos and prompts exactly as SFT featurises
    them."""
    return dict(video_kwargs=video_kwargs(v, mcfg), clip_kwargs=clip_kwargs(v, mcfg),
                text_timestamps=text_timestamps(v, mcfg), prompts=v.prompt)


@dataclasses.dataclass(frozen=True)
class SFTFeatures:
    """grain map: example -> example + ``seq`` (a :class:`Sequence_`), or ``error`` (dropped)."""

    renderer: Any
    vision: VisionInputConfig
    model: Any = None
    """The model config (its family's pixel processing and timestamp rule); None: Qwen2.5-VL's."""

    def __call__(self, ex: dict) -> dict:
        from vital_jax.data.sft import tokenize_sft
        from vital_jax.prompt import Vision
        from vital_jax.video import load_clip, load_video
        from vital_jax.video.errors import VideoError

        rec = ex["record"]
        try:
            visual = load_video(rec.media_path, **video_kwargs(self.vision, self.model)) if rec.is_video else None
            clip = None
            if rec.kind == "tool_cot" and rec.tool.tool_params is not None:   # a clip, not a text observation
                s, e = rec.tool.tool_params
                clip = load_clip(rec.media_path, s, e, **clip_kwargs(self.vision, self.model))
        except VideoError as e:
            return {**ex, "error": f"{rec.file}: record {rec.index}: {e}"}
        stamps = text_timestamps(self.vision, self.model)
        r = tokenize_sft(ex, self.renderer, None if visual is None else Vision.of(visual, text_timestamps=stamps),
                         None if clip is None else Vision.of(clip, text_timestamps=stamps))
        visuals = [v for v in (visual, clip) if v is not None]
        return {**ex, "seq": Sequence_(list(r.ids), list(r.loss_mask), visuals)}


def sft_records(cfg: RunConfig) -> list:
    from vital_jax.data.records import load_records

    root = Path(cfg.data.root)
    out = []
    for f in cfg.data.sft_files:
        out += load_records(root / f, root)
    if not out:
        raise ConfigError(f"data.sft_files {list(cfg.data.sft_files)} under {root}: no records")
    return out


def _check_batch(cfg: RunConfig) -> int:
    n, m, hosts = cfg.sft.batch_size, cfg.sft.micro_batches, jax.process_count()
    if n % (m * hosts):
        raise ConfigError(f"sft.batch_size {n} must divide into {m} micro-batches on {hosts} process(es)")
    return n // hosts


def run_sft(cfg: RunConfig, *, resume: bool = True) -> dict:
    """Train; returns ``{"final": path, "steps": n, "curves": {...}, "stopped": reason|None}``."""
    from vital_jax.data.pipeline import PipelineConfig, sft_iterator
    from vital_jax.prompt import ChatRenderer
    from vital_jax.runs.checkpoint import TrainCheckpoints
    from vital_jax.trainers.optim import make_optimizer, schedule
    from vital_jax.trainers.step import TrainSteps, abstract_state, init_state

    cfg = resolve_micro_batches(cfg, cfg.mesh.resolve(jax.device_count()), jax.process_count())
    per_host = _check_batch(cfg)
    records = sft_records(cfg)          # a bad data file fails now, before the model is built
    run = Run.create(cfg)
    mcfg, mesh = run.model_cfg, run.mesh
    renderer = ChatRenderer(run.tok, prompts=cfg.data.vision.prompt)
    it = sft_iterator(records, PipelineConfig(seed=cfg.data.seed, shuffle=cfg.data.shuffle),
                      batch_size=per_host, load=SFTFeatures(renderer, cfg.data.vision, mcfg))
    optimizer = make_optimizer(cfg.sft.optim, cfg.sft.steps, freeze_vision=mcfg.runtime.freeze_vision)
    state, state_sh = init_state(mcfg, optimizer, run.params, mesh)
    run.params = None
    ckpts = TrainCheckpoints(run.out / "checkpoints", keep=cfg.checkpoint.keep, async_save=cfg.checkpoint.async_save)
    curves: dict[str, list] = {"loss": [], "grad_norm": []}
    loop = StepLoop(cfg, run, ckpts, kind="sft", total=cfg.sft.steps,
                    keys={"loss": "loss", "grad_norm": "grad", "tokens_per_s": "tok/s"},
                    line=lambda step, m: (f"sft step {step}/{cfg.sft.steps} | loss {m['loss']:.4f} | grad "
                                          f"{m['grad_norm']:.3f} | {m['step_time_s']:.2f} s (data "
                                          f"{m['data_time_s']:.2f} s) | {m['tokens_per_s']:.0f} tok/s"))
    start = 0
    if resume:
        got = ckpts.restore(abstract_state(mcfg, optimizer, state_sh), data_iterator=it)
        if got is not None:
            start, state, host = got
            curves = host.get("curves", curves)
            loop.resumed(start, host)
    train = TrainSteps(functools.partial(_sft_loss, mcfg), optimizer, state_sh)
    lr = schedule(cfg.sft.optim, cfg.sft.steps)
    step = start
    with loop, jax.set_mesh(mesh):
        while step < cfg.sft.steps:
            t0 = time.perf_counter()
            batch = next(it)
            t_data = time.perf_counter() - t0
            rows = [ex["seq"] for ex in batch["examples"]]
            np_batch = build_batch(mcfg, rows, micro_batches=cfg.sft.micro_batches,
                                   token_buckets=cfg.data.token_buckets, vision_buckets=cfg.data.vision_buckets,
                                   **global_pads(cfg.data.token_buckets, cfg.data.vision_buckets, rows))
            sh = batch_shardings(mesh, global_shapes(np_batch))
            state, metrics = train(state, put_batch(np_batch, sh), sh)
            m = host_metrics(metrics)
            step += 1
            dt = time.perf_counter() - t0
            # "tokens" is already global (a sum over the sharded batch), averaged over micro-batches
            m.update(step_time_s=dt, data_time_s=t_data, tokens_per_s=m["tokens"] * cfg.sft.micro_batches / dt,
                     learning_rate=float(lr(step - 1)))
            curves["loss"].append([step, m["loss"]])
            curves["grad_norm"].append([step, m["grad_norm"]])
            if loop.after_step(step, state, m, it, lambda: {"curves": curves}):
                break
    return loop.finish(step, state, it, lambda: {"curves": curves}, curves)


def _sft_loss(mcfg, params, mb, ctx):
    from vital_jax.trainers.step import sft_loss

    return sft_loss(mcfg, params, mb, ctx["token_count"])
