"""``vital demo``: the whole method end to end on the synthetic suite, on a laptop.

    synthetic videos ─► tokenizer + tiny Qwen2.5-VL ─► SFT on tool trajectories
      ─► RL (DGRPO, tool loop, frozen vision) ─► eval on held-out videos, tools / no tools,
         for the SFT and the RL model ─► report.{json,md} + PNG curves

Everything runs through the public pieces (``run_sft``, ``run_rl``, ``evaluate``,
``write_report``), with the same code paths as a pod run. The default sizes target about
15 minutes on 2 CPU cores; ``--quick`` is the CI setting (a couple of minutes, numbers are not
meaningful there, only the structure).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

from vital_jax.train.config import ConfigError, RunConfig, apply_overrides, from_dict, load_config, to_dict


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoConfig:
    videos: int = 96
    min_seconds: float = 30.0
    max_seconds: float = 60.0
    frame_size: int = 64
    eval_fraction: float = 0.2
    sft_steps: int = 300
    sft_batch: int = 8
    sft_lr: float = 2e-3
    rl_steps: int = 30
    rl_prompts: int = 4
    rl_group: int = 4
    rl_lr: float = 2e-5
    rl_temperature: float = 0.5       # VITAL samples at 1.0; a 64-wide model's samples are noise there
    max_new_tokens: int = 192         # the SFT first turn alone is ~110 tokens with the small tokenizer
    eval_limit: int | None = 48
    eval_batch: int = 8
    seed: int = 0


QUICK = DemoConfig(videos=10, min_seconds=20.0, max_seconds=24.0, eval_fraction=0.3, sft_steps=4, sft_batch=4,
                   rl_steps=2, rl_prompts=2, rl_group=2, max_new_tokens=24, eval_limit=4, eval_batch=4)


def stage_configs(demo: DemoConfig, out: Path) -> tuple[RunConfig, RunConfig]:
    """The SFT and RL run configs of the demo (written next to the runs, usable with vital train)."""
    data = out / "data"
    common = {"seed": demo.seed, "data": {"root": str(data), "seed": demo.seed, "token_buckets": [768],
                                          "vision_buckets": [256]},
              "mesh": {"data": -1}, "checkpoint": {"every": 0, "keep": 1}}
    sft = from_dict(RunConfig, apply_overrides({**common, "name": "demo-sft", "stage": "sft",
                                                "out_dir": str(out / "sft")}, [
        f"sft.steps={demo.sft_steps}", f"sft.batch_size={demo.sft_batch}",
        f"sft.optim.learning_rate={demo.sft_lr}", "sft.optim.warmup_steps=" + str(min(20, demo.sft_steps // 10)),
        "sft.optim.schedule=cosine", "sft.optim.final_lr_fraction=0.1"]))
    rl = from_dict(RunConfig, apply_overrides({**common, "name": "demo-rl", "stage": "rl", "out_dir": str(out / "rl")}, [
        f"model.init_from={out / 'sft' / 'final'}", "model.freeze_vision=true",
        f"rl.steps={demo.rl_steps}", f"rl.prompts_per_step={demo.rl_prompts}", f"rl.group_size={demo.rl_group}",
        f"rl.rollout_batch={demo.rl_prompts * demo.rl_group}", f"rl.max_new_tokens={demo.max_new_tokens}",
        "data.token_buckets=[768, 1024]", "rl.loss=dgrpo", "rl.advantage=dgrpo", "rl.beta=0.0", "rl.max_turns=2", "rl.cache_length=1024",
        f"rl.optim.learning_rate={demo.rl_lr}", f"rl.temperature={demo.rl_temperature}"]))
    return sft, rl


def _evaluate(run_dir: Path, demo: DemoConfig, data: Path, out: Path, use_tools: bool, log) -> dict:
    from vital_jax.agent.loop import AgentConfig
    from vital_jax.eval.benchmarks import load_benchmark
    from vital_jax.eval.runner import evaluate
    from vital_jax.models.qwen2_5_vl import load_pretrained
    from vital_jax.prompt import load_tokenizer
    from vital_jax.sampling import SamplingOptions
    from vital_jax.train.config import VisionInputConfig
    from vital_jax.train.sft import clip_kwargs, video_kwargs

    cfg, params = load_pretrained(run_dir)
    tok = load_tokenizer(run_dir)
    samples = load_benchmark("synthetic", data / "eval.jsonl")
    v = VisionInputConfig()
    agent = AgentConfig(sampling=SamplingOptions(temperature=0.0, max_new_tokens=demo.max_new_tokens), max_turns=2,
                        video_kwargs=video_kwargs(v), clip_kwargs=clip_kwargs(v))
    return evaluate(cfg, params, tok, "synthetic", samples, out_dir=out, use_tools=use_tools,
                    batch_size=demo.eval_batch, video_root=data, agent_config=agent, video_kwargs=video_kwargs(v),
                    clip_kwargs=clip_kwargs(v), limit=demo.eval_limit, seed=demo.seed, log=log)


def _summary(metrics: dict) -> dict[str, float]:
    m = metrics.get("metrics", {})
    return {k: float(m.get(k, math.nan)) if m.get(k) is not None else math.nan for k in ("accuracy", "miou", "score")}


def run_demo(out: str | Path, demo: DemoConfig = DemoConfig(), *, log=print) -> dict[str, Any]:
    from vital_jax.data.synthetic import SynthConfig, generate
    from vital_jax.train.config import dump_config
    from vital_jax.train.report import write_report
    from vital_jax.train.rl import run_rl
    from vital_jax.train.sft import run_sft

    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data = out / "data"
    if not (data / "manifest.json").is_file():
        log(f"[1/5] synthetic suite: {demo.videos} videos -> {data}")
        generate(data, SynthConfig(num=demo.videos, seed=demo.seed, min_seconds=demo.min_seconds,
                                   max_seconds=demo.max_seconds, size=demo.frame_size,
                                   eval_fraction=demo.eval_fraction))
    timings["synth_s"] = time.perf_counter() - t0
    sft_cfg, rl_cfg = stage_configs(demo, out)
    dump_config(sft_cfg, out / "sft.yaml")
    dump_config(rl_cfg, out / "rl.yaml")

    t = time.perf_counter()
    log(f"[2/5] SFT: {demo.sft_steps} steps x {demo.sft_batch} tool trajectories")
    sft = run_sft(sft_cfg, log=log)
    timings["sft_s"] = time.perf_counter() - t
    t = time.perf_counter()
    log(f"[3/5] RL (DGRPO, tool loop): {demo.rl_steps} steps x {demo.rl_prompts} prompts x {demo.rl_group} rollouts")
    rl = run_rl(rl_cfg, log=log)
    timings["rl_s"] = time.perf_counter() - t

    evals: dict[str, dict] = {}
    raw: dict[str, dict] = {}
    t = time.perf_counter()
    log("[4/5] evaluation on held-out videos (greedy)")
    for stage, res in (("sft", sft), ("rl", rl)):
        evals[stage] = {}
        for mode in ("tools", "no_tools"):
            m = _evaluate(Path(res["final"]), demo, data, out / "eval" / f"{stage}_{mode}", mode == "tools", log)
            raw[f"{stage}.{mode}"] = {k: m.get(k) for k in ("tools", "status", "per_task", "samples")}
            evals[stage][mode] = _summary(m)
            log(f"  {stage:3s} {mode:8s} " + "  ".join(f"{k} {v:.3f}" for k, v in evals[stage][mode].items()))
    timings["eval_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0

    log("[5/5] report")
    curves = {f"{name}": pts for name, pts in rl["curves"].items() if pts}
    curves.update({f"{name.split('/')[0] if '/' in name else name}/sft": pts
                   for name, pts in sft["curves"].items() if pts})
    report = {"title": "vital demo: SFT -> RL (DGRPO, tool loop) on the synthetic suite",
              "eval": evals, "eval_details": raw, "timings": timings,
              "settings": {"demo": dataclasses.asdict(demo), "sft": to_dict(sft_cfg), "rl": to_dict(rl_cfg)},
              "runs": {"sft": sft["out_dir"], "rl": rl["out_dir"]}}
    paths = write_report(out, report, curves=curves)
    log(f"report: {paths['markdown']}  (json: {paths['json']})")
    return {"report": report, "paths": paths}


# --------------------------------------------------------------------------- command


def add_arguments(p) -> None:
    p.description = (__doc__ or "").strip().splitlines()[0]
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="CI-sized run (minutes; numbers not meaningful)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="demo settings, e.g. sft_steps=500")


def run(args) -> int:
    from vital_jax.cli import CommandError
    from vital_jax.train.common import TrainingError

    base = QUICK if args.quick else DemoConfig()
    try:
        demo = from_dict(DemoConfig, apply_overrides(to_dict(base), args.overrides))
    except ConfigError as e:
        raise CommandError(str(e)) from None
    try:
        res = run_demo(args.out, demo)
    except (ConfigError, TrainingError) as e:
        raise CommandError(str(e)) from None
    print(json.dumps(res["report"]["eval"], indent=1))
    print(f"report: {res['paths']['markdown']}")
    return 0


__all__ = ["DemoConfig", "QUICK", "load_config", "run_demo", "stage_configs"]
