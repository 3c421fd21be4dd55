"""``vital demo``: the whole method end to end on the synthetic suite, on a laptop.

    synthetic videos ─► tokenizer + tiny Qwen2.5-VL (or Qwen3-VL) ─► SFT on tool trajectories
      ─► RL (DGRPO, tool loop, frozen vision; held-out score every rl_eval_every steps)
      ─► eval on held-out videos, tools / no tools, for the SFT and the RL model, and the blind
         control (RL, tools, every frame blanked) ─► report.{json,md} + PNG curves

The report does not stop at point estimates: each ``eval.{sft,rl}.{tools,no_tools}`` cell (and
``eval.blind``) has ``n`` and a 95 % bootstrap interval per metric (``ci``), and
``eval.paired`` holds RL − SFT, tools − no tools and RL − blind on the same samples with paired
intervals (:mod:`vital_jax.eval.stats`). ``eval_limit=null`` evaluates every held-out sample.

Everything runs through the public pieces (``run_sft``, ``run_rl``, ``evaluate``,
``write_report``), with the same code paths as a pod run. The default (2000 short videos, textual
timestamps, 1 merged token a frame pair, the compact prompt set, 1500 x 16 SFT rows of tool
trajectories and no-tool CoT, 30 RL steps with dynamic sampling, five evaluations of 200 held-out
samples) takes about 17 minutes on 2 CPU cores (the bound is 25); ``--quick`` is the CI setting (a couple of minutes, numbers are not meaningful there, only
the structure). ``model_hidden=128 model_layers=4`` (and ``model_heads``, ``vision_hidden``, ...)
try a larger model than ``ModelConfig.tiny``; ``model_family=qwen3_vl`` runs it all with a tiny
Qwen3-VL (16 px patches, DeepStack, timestamps as text) instead of Qwen2.5-VL; ``frames``, ``frame_pixels``, ``clip_frames``,
``clip_pixels`` and ``text_timestamps`` set what the model sees (``data.vision`` of both stages;
the checkpoints carry it and the evaluation reads it back).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Literal

from vital_jax.config.run_config import (Bool, ConfigError, Float, Int, RunConfig, Section, Str, apply_overrides,
                                         from_dict, load_config, to_dict)

log = logging.getLogger(__name__)


class DemoConfig(Section):
    """The demo's embedded settings (``vital demo key=value`` overrides them)."""

    # Many short videos: variety per pass is the lever (each training video is seen about once).
    # Generating one costs ~0.02 s; 10 % of them (~500 records) are held out.
    videos: Int = 2000
    min_seconds: Float = 20.0
    max_seconds: Float = 30.0
    frame_size: Int = 64
    eval_fraction: Float = 0.1
    # 24k SFT rows (compact prompts, ~0.35 s a step here): the held-out grounding is read from the
    # frames' text timestamps; 600 x 8 rows of VITAL's long prompts read nothing (blind = tools)
    sft_steps: Int = 1500
    sft_batch: Int = 16
    sft_lr: Float = 3e-3
    rl_steps: Int = 30
    rl_prompts: Int = 8
    rl_group: Int = 8
    # 1e-3 and 5e-4 undo what SFT taught (held-out score 0.25 -> 0.16 in 15 steps at 5e-4);
    # 2e-5 does not move a 64-wide model; 3e-3 at T = 1 breaks the format
    rl_lr: Float = 1e-4
    rl_temperature: Float = 0.7       # VITAL samples at 1.0; a 64-wide model's samples are noise there
    max_new_tokens: Int = 64          # per turn: the SFT turns are ~55 and ~35 tokens
    eval_limit: Int | None = 200
    eval_batch: Int = 8
    seed: Int = 0
    # tool trajectories and no-tool CoT, so the no-tools prompt is trained too (a fair comparison)
    sft_files: tuple[Str, ...] = ("sft_tool.jsonl", "sft_cot.jsonl")
    # The model family: Qwen2.5-VL, or Qwen3-VL (its tiny test model; a video's time is always
    # written as text, frames are patched at 16 px)
    model_family: Literal["qwen2_5_vl", "qwen3_vl"] = "qwen2_5_vl"
    # Model size. None keeps ModelConfig.tiny's value (text 64 wide x 2 layers, 4 heads / 2 KV,
    # MLP 128; vision 32 wide x 4 blocks); any other size is initialised once into out/init and
    # SFT starts from there. Heads default to width / 16, KV heads to heads / 2, MLPs to 2 x width.
    model_hidden: Int | None = None
    model_layers: Int | None = None
    model_heads: Int | None = None
    model_kv_heads: Int | None = None
    model_intermediate: Int | None = None
    vision_hidden: Int | None = None
    vision_depth: Int | None = None
    # What the model sees (data.vision; written into each checkpoint, read back by eval).
    # Small frames and few tokens: a question-video frame pair costs frame_pixels / 28^2 merged
    # tokens plus its "<t seconds>" text; the clip tool returns up to clip_frames frames.
    frames: Int = 16
    frame_pixels: Int = 28 * 28
    clip_frames: Int = 16
    clip_pixels: Int = 28 * 28
    text_timestamps: Bool = True
    # the prompt texts (data.vision.prompt): "compact" (a few words) or "vital" (VITAL's prompts
    # with Qwen2.5's tool schema, ~300 more tokens a tool row for the model to read past)
    prompt: Str = "compact"
    # RL extras: DAPO dynamic sampling (drop all-equal groups) and updates per rollout batch
    rl_dynamic_sampling: Bool = True
    rl_updates_per_rollout: Int = 1
    # Held-out score over RL steps (rl.eval_every / rl.eval_limit): greedy episodes at step 0,
    # every rl_eval_every steps and at the end. 0 turns it off.
    rl_eval_every: Int = 5
    rl_eval_limit: Int | None = 64


QUICK = DemoConfig(videos=10, min_seconds=20.0, max_seconds=24.0, eval_fraction=0.3, sft_steps=4, sft_batch=4,
                   rl_steps=2, rl_prompts=2, rl_group=2, max_new_tokens=24, eval_limit=4, eval_batch=4)


_MODEL_KNOBS = ("model_hidden", "model_layers", "model_heads", "model_kv_heads", "model_intermediate",
                "vision_hidden", "vision_depth")


def custom_model(demo: DemoConfig) -> bool:
    """Whether the demo asks for a model other than ``ModelConfig.tiny``."""
    return any(getattr(demo, k) is not None for k in _MODEL_KNOBS)


def demo_model_config(demo: DemoConfig, base):
    """``base`` (the tiny config for the demo's tokenizer) resized by the demo's model knobs."""
    t, v = base.text, base.vision
    hidden = demo.model_hidden or t.hidden_size
    heads = demo.model_heads or (t.num_heads if demo.model_hidden is None else max(1, hidden // 16))
    kv = demo.model_kv_heads or (t.num_kv_heads if demo.model_heads is None and demo.model_hidden is None
                                 else max(1, heads // 2))
    if hidden % heads or (hidden // heads) % 2:
        raise ConfigError(f"model_hidden {hidden} must be an even multiple of model_heads {heads}")
    half = hidden // heads // 2                 # rotary pairs, split 1 : 1.5 : 1.5 as in Qwen2.5-VL
    sec_t = max(1, half // 4)
    sec_h = (half - sec_t) // 2
    mrope = (sec_t, sec_h, half - sec_t - sec_h)
    inter = demo.model_intermediate or (t.intermediate_size if demo.model_hidden is None else 2 * hidden)
    text = dataclasses.replace(t, hidden_size=hidden, num_layers=demo.model_layers or t.num_layers,
                               num_heads=heads, num_kv_heads=kv, intermediate_size=inter, mrope_section=mrope)
    vh = demo.vision_hidden or v.hidden_size
    depth = demo.vision_depth or v.depth
    vheads = v.num_heads if demo.vision_hidden is None else max(1, vh // 16)
    blocks = {}   # which tower blocks are special, kept inside a changed depth
    if hasattr(v, "fullatt_block_indexes"):      # Qwen2.5-VL: full-attention blocks
        blocks["fullatt_block_indexes"] = v.fullatt_block_indexes if demo.vision_depth is None \
            else tuple(range(1, depth, 2)) or (depth - 1,)
    if hasattr(v, "deepstack_visual_indexes"):   # Qwen3-VL: blocks feeding DeepStack
        blocks["deepstack_visual_indexes"] = tuple(i for i in v.deepstack_visual_indexes if i < depth) or (depth - 1,)
    vision = dataclasses.replace(v, hidden_size=vh, num_heads=vheads, depth=depth,
                                 intermediate_size=v.intermediate_size if demo.vision_hidden is None else 2 * vh,
                                 out_hidden_size=hidden, **blocks)
    return base.replace(text=text, vision=vision)


def init_model(demo: DemoConfig, out: Path) -> Path | None:
    """A freshly initialised model of the demo's size + the small tokenizer in ``out/init``
    (None when the demo uses the stock tiny model, which SFT builds itself). Written afresh on
    every call, so a rerun into the same folder with another size never starts from a stale one."""
    if not custom_model(demo):
        return None
    init = out / "init"
    import jax

    from vital_jax.models.families import export_pretrained, family_module
    from vital_jax.models.qwen2_5_vl.config import ConfigError as ModelConfigError
    from vital_jax.prompt import train_small_tokenizer
    from vital_jax.trainers.common import synthetic_corpus, tiny_config_for

    tok = train_small_tokenizer(synthetic_corpus(), vocab_size=1024)   # as build_tokenizer does
    try:
        cfg = demo_model_config(demo, tiny_config_for(tok, demo.model_family))
    except ModelConfigError as e:
        raise ConfigError(f"demo model size: {e}") from None
    _, params = family_module(demo.model_family).init_params(cfg, seed=demo.seed)
    n = sum(x.size for x in jax.tree.leaves(params))
    log.info(f"model: text {cfg.text.hidden_size} wide x {cfg.text.num_layers} layers ({cfg.text.num_heads} heads), "
        f"vision {cfg.vision.hidden_size} wide x {cfg.vision.depth}; {n / 1e6:.2f} M parameters -> {init}")
    export_pretrained(cfg, params, init)
    tok.save(init)
    return init


def demo_vision(demo: DemoConfig):
    """The demo's ``data.vision`` (:class:`VisionInputConfig`)."""
    from vital_jax.config.run_config import VisionInputConfig

    return VisionInputConfig(max_frames=demo.frames, min_pixels=demo.frame_pixels, max_pixels=demo.frame_pixels,
                             clip_max_frames=demo.clip_frames, clip_max_pixels=demo.clip_pixels,
                             text_timestamps=demo.text_timestamps, prompt=demo.prompt)


def _patches_per_group(demo: DemoConfig, pixels: int) -> int:
    from vital_jax.models.families import family_module
    from vital_jax.video.sampling import smart_resize

    pkg = family_module(demo.model_family)
    proc = pkg.vision_processing(pkg.ModelConfig.tiny())
    h, w = smart_resize(demo.frame_size, demo.frame_size, factor=proc.factor, min_pixels=pixels, max_pixels=pixels)
    return (h // proc.patch_size) * (w // proc.patch_size)


def vision_patches(demo: DemoConfig) -> int:
    """Vision patches of the longest row (the question video's frames plus the largest clip), a
    multiple of 4: the vision bucket, so the tower encodes no padding it does not need."""
    n = _patches_per_group(demo, demo.frame_pixels) * math.ceil(demo.frames / 2) + \
        _patches_per_group(demo, demo.clip_pixels) * math.ceil(demo.clip_frames / 2)
    return max(4, -(-n // 4) * 4)


# Text tokens of the longest SFT tool row, visual pads aside (demo tokenizer; the "<t seconds>"
# stamps of 16 question + 16 clip frames included), measured on the default suite: 361 with the
# compact prompts, 642 with VITAL's. Rows are padded to their bucket, so a tight bucket is time.
_ROW_TEXT_TOKENS = {"compact": 361, "vital": 642}


def token_buckets(demo: DemoConfig) -> tuple[tuple[int, ...], int]:
    """(SFT token buckets, RL cache length): short CoT rows get a 256 bucket; the longest tool row
    (its text, the stamps of more frames, the visual pads merged 2x2, a 32-token margin) sets
    the other. An RL episode is that row with both turns at ``max_new_tokens``."""
    def up(n, k):
        return -(-n // k) * k

    stamps = 7 * (max(0, math.ceil(demo.frames / 2) - 8) + max(0, math.ceil(demo.clip_frames / 2) - 8))
    row = up(_ROW_TEXT_TOKENS.get(demo.prompt, 642) + stamps + vision_patches(demo) // 4 + 32, 64)
    return tuple(sorted({256, row})), up(row + demo.max_new_tokens, 128)


def _yaml(x) -> str:
    return "null" if x is None else str(x)


def stage_configs(demo: DemoConfig, out: Path, init: Path | None = None) -> tuple[RunConfig, RunConfig]:
    """The SFT and RL run configs of the demo (written next to the runs, usable with vital train).
    ``init``: the model SFT starts from (None: a fresh tiny preset of the demo's family)."""
    data = out / "data"
    vision = to_dict(demo_vision(demo))
    sft_buckets, cache = token_buckets(demo)
    common = {"seed": demo.seed, "data": {"root": str(data), "seed": demo.seed, "token_buckets": list(sft_buckets),
                                          "vision_buckets": [vision_patches(demo)], "vision": vision},
              "mesh": {"data": -1}, "checkpoint": {"every": 0, "keep": 1}}
    tiny = "tiny" if demo.model_family == "qwen2_5_vl" else f"{demo.model_family}_tiny"
    sft = from_dict(RunConfig, apply_overrides({**common, "name": "demo-sft", "stage": "sft",
                                                "out_dir": str(out / "sft")}, [
        *([f"model.init_from={init}"] if init is not None else [f"model.preset={tiny}"]),
        "data.sft_files=[" + ", ".join(demo.sft_files) + "]",
        f"sft.steps={demo.sft_steps}", f"sft.batch_size={demo.sft_batch}",
        f"sft.optim.learning_rate={demo.sft_lr}", "sft.optim.warmup_steps=" + str(min(20, demo.sft_steps // 10)),
        "sft.optim.schedule=cosine", "sft.optim.final_lr_fraction=0.1"]))
    rl = from_dict(RunConfig, apply_overrides({**common, "name": "demo-rl", "stage": "rl", "out_dir": str(out / "rl")}, [
        f"model.init_from={out / 'sft' / 'final'}", "model.freeze_vision=true",
        f"rl.steps={demo.rl_steps}", f"rl.prompts_per_step={demo.rl_prompts}", f"rl.group_size={demo.rl_group}",
        f"rl.rollout_batch={demo.rl_prompts * demo.rl_group}", f"rl.max_new_tokens={demo.max_new_tokens}",
        f"data.token_buckets=[{sft_buckets[-1]}, {cache}]", "rl.loss=dgrpo", "rl.advantage=dgrpo", "rl.beta=0.0",
        "rl.max_turns=2", f"rl.cache_length={cache}",
        f"rl.optim.learning_rate={demo.rl_lr}", f"rl.temperature={demo.rl_temperature}",
        f"rl.dynamic_sampling={str(demo.rl_dynamic_sampling).lower()}",
        f"rl.updates_per_rollout={demo.rl_updates_per_rollout}",
        f"rl.eval_every={demo.rl_eval_every}", f"rl.eval_limit={_yaml(demo.rl_eval_limit)}"]))
    return sft, rl


def _evaluate(run_dir: Path, demo: DemoConfig, data: Path, out: Path, use_tools: bool,
              blind: bool = False) -> tuple[dict, dict[str, dict[str, float]]]:
    """``evaluate``'s metrics of one cell, and its per-sample values (``sample_values``, read back
    from the predictions it wrote) for the intervals."""
    from vital_jax.rollout.tool_loop import AgentConfig
    from vital_jax.eval.benchmarks import load_benchmark
    from vital_jax.eval.predictions import read_predictions
    from vital_jax.eval.runner import evaluate
    from vital_jax.eval.scoring import sample_values, score
    from vital_jax.models.families import load_pretrained
    from vital_jax.prompt import load_tokenizer
    from vital_jax.rollout import SamplingOptions
    from vital_jax.config.run_config import vision_settings
    from vital_jax.trainers.sft import agent_vision, clip_kwargs, video_kwargs

    cfg, params = load_pretrained(run_dir)
    tok = load_tokenizer(run_dir)
    samples = load_benchmark("synthetic", data / "eval.jsonl")
    # what the model was trained to see: the checkpoint's settings, else the demo's own
    v = vision_settings(run_dir, default=demo_vision(demo))
    agent = AgentConfig(sampling=SamplingOptions(temperature=0.0, max_new_tokens=demo.max_new_tokens), max_turns=2,
                        **agent_vision(v, cfg))
    result = evaluate(cfg, params, tok, "synthetic", samples, out_dir=out, use_tools=use_tools,
                      batch_size=demo.eval_batch, video_root=data, agent_config=agent, video_kwargs=video_kwargs(v, cfg),
                      clip_kwargs=clip_kwargs(v, cfg), limit=demo.eval_limit, seed=demo.seed, blind=blind)
    used = samples[:demo.eval_limit] if demo.eval_limit is not None else samples
    rows = score("synthetic", used, read_predictions(result["predictions"])[0], return_rows=True)["rows"]
    return result, sample_values(used, rows)


def _cell(result: dict, values: dict[str, dict[str, float]]) -> dict[str, Any]:
    """A report cell: the eval's headline metrics (as ``metrics.json`` and ``vital score`` give
    them), ``n`` samples, and ``ci``: the bootstrap interval of each over samples."""
    from vital_jax.eval.stats import interval

    m = result.get("metrics", {})
    cell: dict[str, Any] = {k: float(m[k]) if m.get(k) is not None else math.nan for k in _METRICS}
    cell["n"] = int(result.get("samples", 0))
    cell["ci"], cell["n_metric"] = {}, {}
    for k in _METRICS:
        iv = interval(values[k])
        cell["ci"][k], cell["n_metric"][k] = iv["ci"], iv["n"]
        # the interval is of the mean of these values: it must be the number in the table
        if iv["n"] and math.isfinite(cell[k]) and abs(iv["mean"] - cell[k]) > 1e-6:
            raise ValueError(f"{result.get('predictions')}: per-sample {k} averages {iv['mean']:.6f}, "
                             f"the eval's {k} is {cell[k]:.6f}")
    return cell


def _paired(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> dict[str, Any]:
    """``a − b`` on the same samples: score at the top level, accuracy and mIoU nested."""
    from vital_jax.eval.stats import paired

    return {**paired(a["score"], b["score"]), "accuracy": paired(a["accuracy"], b["accuracy"]),
            "miou": paired(a["miou"], b["miou"])}


_METRICS = ("accuracy", "miou", "score")
# report name -> (cell a, cell b): the paper's claims, and the blind control
PAIRS = {"rl_minus_sft_tools": (("rl", "tools"), ("sft", "tools")),
         "tools_minus_no_tools_rl": (("rl", "tools"), ("rl", "no_tools")),
         "tools_minus_no_tools_sft": (("sft", "tools"), ("sft", "no_tools")),
         "rl_tools_minus_blind": (("rl", "tools"), ("rl", "blind"))}


def _line(cell: dict) -> str:
    return "  ".join(f"{k} {cell[k]:.3f} [{cell['ci'][k][0]:.3f}, {cell['ci'][k][1]:.3f}]" for k in _METRICS) + \
        f"  n {cell['n']}"


def run_demo(out: str | Path, demo: DemoConfig = DemoConfig()) -> dict[str, Any]:
    from vital_jax.data.synthetic import SynthConfig, generate
    from vital_jax.config.run_config import dump_config
    from vital_jax.runs.report import write_report
    from vital_jax.trainers.rl import run_rl
    from vital_jax.trainers.sft import run_sft

    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data = out / "data"
    if not (data / "manifest.json").is_file():
        log.info(f"[1/5] synthetic suite: {demo.videos} videos -> {data}")
        generate(data, SynthConfig(num=demo.videos, seed=demo.seed, min_seconds=demo.min_seconds,
                                   max_seconds=demo.max_seconds, size=demo.frame_size,
                                   eval_fraction=demo.eval_fraction))
    timings["synth_s"] = time.perf_counter() - t0
    init = init_model(demo, out)
    sft_cfg, rl_cfg = stage_configs(demo, out, init)
    dump_config(sft_cfg, out / "sft.yaml")
    dump_config(rl_cfg, out / "rl.yaml")

    t = time.perf_counter()
    log.info(f"[2/5] SFT: {demo.sft_steps} steps x {demo.sft_batch} records of {', '.join(demo.sft_files)}")
    sft = run_sft(sft_cfg)
    timings["sft_s"] = time.perf_counter() - t
    if sft["stopped"]:      # a signal: the checkpoint is saved; the next stage must not start
        return {"stopped": f"SFT stopped ({sft['stopped']}) at step {sft['steps']}"}
    t = time.perf_counter()
    log.info(f"[3/5] RL (DGRPO, tool loop): {demo.rl_steps} steps x {demo.rl_prompts} prompts x {demo.rl_group} rollouts")
    rl = run_rl(rl_cfg)
    timings["rl_s"] = time.perf_counter() - t
    if rl["stopped"]:
        return {"stopped": f"RL stopped ({rl['stopped']}) at step {rl['steps']}"}

    from vital_jax.eval import stats

    evals: dict[str, Any] = {}
    raw: dict[str, dict] = {}
    values: dict[tuple[str, str], dict] = {}
    t = time.perf_counter()
    log.info("[4/5] evaluation on held-out videos (greedy), and the blind control")
    runs = [(stage, mode, res) for stage, res in (("sft", sft), ("rl", rl)) for mode in ("tools", "no_tools")]
    for stage, mode, res in runs + [("rl", "blind", rl)]:
        # blind: the RL model with tools, every frame it sees blanked (does it read the video?)
        folder = f"{stage}_tools_blind" if mode == "blind" else f"{stage}_{mode}"
        m, values[stage, mode] = _evaluate(Path(res["final"]), demo, data, out / "eval" / folder,
                                           mode != "no_tools", blind=mode == "blind")
        raw[f"{stage}.{mode}"] = {k: m.get(k) for k in ("tools", "status", "per_task", "samples")}
        cell = _cell(m, values[stage, mode])
        if mode == "blind":
            evals["blind"] = cell
        else:
            evals.setdefault(stage, {})[mode] = cell
        log.info(f"  {stage:3s} {mode:8s} " + _line(cell))
    evals["paired"] = {name: _paired(values[a], values[b]) for name, (a, b) in PAIRS.items()}
    evals["bootstrap"] = {"confidence": stats.CONFIDENCE, "method": "percentile", "resamples": stats.N_RESAMPLES,
                          "seed": stats.SEED, "unit": "sample", "library": "scipy.stats.bootstrap"}
    for name, d in evals["paired"].items():
        log.info(f"  {name}: score {d['mean']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] (n {d['n']}, paired)")
    timings["eval_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0

    log.info("[5/5] report")
    curves = {f"{name}": pts for name, pts in rl["curves"].items() if pts}
    curves.update({f"{name.split('/')[0] if '/' in name else name}/sft": pts
                   for name, pts in sft["curves"].items() if pts})
    report = {"title": "vital demo: SFT -> RL (DGRPO, tool loop) on the synthetic suite",
              "eval": evals, "eval_details": raw, "timings": timings,
              "settings": {"demo": to_dict(demo), "sft": to_dict(sft_cfg), "rl": to_dict(rl_cfg)},
              "runs": {"sft": sft["out_dir"], "rl": rl["out_dir"]}}
    paths = write_report(out, report, curves=curves)
    log.info(f"report: {paths['markdown']}  (json: {paths['json']})")
    return {"report": report, "paths": paths}


# --------------------------------------------------------------------------- command


def add_arguments(p) -> None:
    p.description = (__doc__ or "").strip().splitlines()[0]
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="CI-sized run (minutes; numbers not meaningful)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="demo settings, e.g. sft_steps=500")


def run(args) -> int:
    from vital_jax.cli import CommandError
    from vital_jax.trainers.common import TrainingError

    base = QUICK if args.quick else DemoConfig()
    try:
        demo = from_dict(DemoConfig, apply_overrides(to_dict(base), args.overrides))
    except ConfigError as e:
        raise CommandError(str(e)) from None
    try:
        res = run_demo(args.out, demo)
    except (ConfigError, TrainingError) as e:
        raise CommandError(str(e)) from None
    if res.get("stopped"):
        print(f"{res['stopped']}; rerun the same command to resume")
        return 0
    print(json.dumps(res["report"]["eval"], indent=1))
    print(f"report: {res['paths']['markdown']}")
    return 0


__all__ = ["DemoConfig", "QUICK", "custom_model", "demo_model_config", "init_model", "load_config", "run_demo",
           "stage_configs"]
