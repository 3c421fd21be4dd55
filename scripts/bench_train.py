"""Training speed: SFT train-step MFU on the 61M config, and the RL step time split (tiny + mid).

    .venv/bin/python scripts/bench_train.py [--quick] [--json] [--only mfu,rl_tiny,rl_mid]

Prints one JSON object per line on stdout (``name``, ``value``, ``unit``, ``baseline`` where the
value is a comparison, ``raw`` timings, context keys); progress goes to stderr. ``--json`` is
accepted for the ``vital bench`` contract (the output is JSON lines either way).

1. ``train_step_mfu``: the trainer's own jitted SFT step (``vital_jax.trainers.step``: token
   log-probs, masked cross-entropy, gradient, global-norm clip, AdamW, the non-finite guard;
   state donated) on the model of ``scripts/bench_model.py`` (~61M parameters, f32: text 512 x 8
   layers, vocab 32000, vision 256 x 4) with batch 2 x 768 tokens, one (4, 16, 16) video per row
   (256 merged tokens), built by ``train.batch.build_batch``. MFU = analytic model FLOPs per step
   (3 x forward, ``bench_model.model_flops``, the lm head counted on the loss positions only:
   the trainers' head skips position chunks without a loss token, see
   ``modeling.target_logprobs``) / median step time / the GEMM peak measured in this
   process (2048^3 f32 matmul, best of runs before and after the steps, max of jitted JAX and
   torch). Same runtime options as bench_model: unrolled layers, no remat, banded full-attention
   vision blocks (frame block 256).
   Also: step time, tokens/s, compile time, and XLA compiles in the steps after the first (0).

2. ``rl_step_time_tiny`` / ``rl_step_time_mid``: a few steps of the real RL trainer
   (``run_rl``: DGRPO, clip tool loop, frozen vision) on a small synthetic suite, from a freshly
   initialised model (a random policy: answers are noise and rarely call the tool, so episodes
   mostly run to ``max_new_tokens``; the rollout cost is the sampler's). The split (rollout /
   reward / update seconds, generated tokens/s) is read back from the run's ``metrics.jsonl``;
   the value is the mean step time over the steps after the first (which compiles);
   ``steady_step_s`` leaves out the later steps that compiled too (the sampler compiles a tool-turn
   bucket the first time an episode calls the tool), ``raw.compiles_per_step`` counts them. One
   token bucket (640 = the cache length), so the update never recompiles. "tiny" is
   ``ModelConfig.tiny`` with the synthetic tokenizer (0.27M parameters); "mid" is text 512 x 6
   layers (MLP 1536, 8 / 2 heads), vision 256 x 4, same tokenizer (vocab 721): 23M parameters.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "scripts"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from vital_jax.testing import CompileCounter, LogLines


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def emit(name, value, unit, **kw):
    print(json.dumps({"name": name, "value": value, "unit": unit, **kw}), flush=True)


# --------------------------------------------------------------------------- 1. SFT step MFU


def mid_model_config():
    """bench_model.py's model as a vital_jax ModelConfig (its HF config, built without torch)."""
    from vital_jax.models.qwen2_5_vl.config import ModelConfig, TextConfig, VisionConfig

    return ModelConfig(
        text=TextConfig(vocab_size=32000, hidden_size=512, intermediate_size=1536, num_layers=8, num_heads=8,
                        num_kv_heads=2, mrope_section=(8, 12, 12), max_position_embeddings=4096,
                        tie_word_embeddings=False),
        vision=VisionConfig(depth=4, hidden_size=256, intermediate_size=512, num_heads=4, out_hidden_size=512,
                            window_size=112, fullatt_block_indexes=(1, 3)),
        image_token_id=31990, video_token_id=31991, vision_start_token_id=31992, vision_end_token_id=31993,
        eos_token_id=31994, pad_token_id=31995)


class _Video:
    kind = "video"
    second_per_grid_t = 1.0

    def __init__(self, grid, patch_dim, rng):
        self.grid_thw = np.asarray(grid)
        self.pixel_values = rng.standard_normal((int(np.prod(grid)), patch_dim)).astype(np.float32)


def sft_rows(cfg, batch: int, seq: int, grid, seed: int = 0):
    """``batch`` rows of ``seq`` tokens: text, one video, text; loss on the text after the video."""
    from vital_jax.trainers.batch import Sequence_

    rng = np.random.default_rng(seed)
    n_vis = int(np.prod(grid)) // cfg.vision.merge_unit
    rows = []
    for b in range(batch):
        head = 40 + 30 * b
        tail = seq - head - n_vis - 2
        video = [cfg.vision_start_token_id] + [cfg.video_token_id] * n_vis + [cfg.vision_end_token_id]
        ids = list(rng.integers(10, 30000, size=head)) + video + list(rng.integers(10, 30000, size=tail))
        mask = [0] * (head + n_vis + 2) + [1] * tail
        rows.append(Sequence_(ids, mask, [_Video(grid, cfg.vision.patch_dim, rng)]))
    return rows


def bench_mfu(quick: bool) -> None:
    import bench_model as bm
    import jax
    import torch

    from vital_jax.models.qwen2_5_vl import init_params
    from vital_jax.models.qwen2_5_vl.vision_layout import (
        max_frame_patches,
        vision_layout,
    )
    from vital_jax.sharding import make_mesh
    from vital_jax.trainers.batch import batch_shardings, build_batch, global_shapes
    from vital_jax.trainers.common import put_batch
    from vital_jax.config.run_config import OptimConfig
    from vital_jax.trainers.optim import make_optimizer
    from vital_jax.trainers.step import TrainSteps, init_state, sft_loss

    torch.set_num_threads(os.cpu_count() or 2)
    batch_n, seq, grid = bm.BATCH, bm.SEQ, bm.GRID
    steps = 3 if quick else 8
    t0 = time.perf_counter()
    grids = np.asarray([grid] * batch_n)
    cfg = mid_model_config().with_runtime(scan_layers=False, remat="none", vision_frame_block=max_frame_patches(grids))
    _, params = init_params(cfg, seed=0)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    optimizer = make_optimizer(OptimConfig(learning_rate=1e-5, schedule="constant"), 100)
    state, state_sh = init_state(cfg, optimizer, params, mesh)
    del params
    np_batch = build_batch(cfg, sft_rows(cfg, batch_n, seq, grid), micro_batches=1, token_buckets=[seq],
                           vision_buckets=[int(np.prod(grid))])
    sh = batch_shardings(mesh, global_shapes(np_batch))
    train = TrainSteps(lambda p, mb, ctx: sft_loss(cfg, p, mb, ctx["token_count"]), optimizer, state_sh)
    flops = bm.model_flops(cfg, vision_layout(grids, cfg.vision))
    # the lm head is work only on positions with a loss token (the trainers' head skips chunks
    # without one); counting every row would credit the step with FLOPs it never had to run
    targets = float(np_batch["loss_mask"][..., 1:].sum())
    lm_head_needed = flops["lm_head"] * targets / (batch_n * seq)
    step_flops = 3 * (flops["total"] - flops["lm_head"] + lm_head_needed)
    setup_s = time.perf_counter() - t0
    before_peaks = bm.gemm_peaks(torch, 3 if quick else 7)
    log(f"mfu: {n_params / 1e6:.1f}M params, setup {setup_s:.1f} s; compiling the train step")

    times, tokens = [], 0.0
    with jax.set_mesh(mesh):
        with CompileCounter() as first:
            t = time.perf_counter()
            batch = put_batch(np_batch, sh)
            state, m = train(state, batch, sh)
            jax.block_until_ready((state, m))
            first_s = time.perf_counter() - t
        tokens = float(m["tokens"])
        log(f"mfu: first step {first_s:.1f} s ({first.count} compiles, {first.seconds:.1f} s)")
        with CompileCounter() as after:
            # one more untimed step: the second run of the donated-state program still faults its
            # buffers in (~2x the steady step time here)
            state, m = train(state, put_batch(np_batch, sh), sh)
            jax.block_until_ready((state, m))
            for i in range(steps):
                t = time.perf_counter()
                batch = put_batch(np_batch, sh)
                state, m = train(state, batch, sh)
                jax.block_until_ready((state, m))
                times.append(time.perf_counter() - t)
                log(f"mfu: step {i + 2}: {times[-1]:.2f} s, loss {float(m['loss']):.3f}")
    del state, batch
    after_peaks = bm.gemm_peaks(torch, 3 if quick else 7)
    peaks = {k: max(v, before_peaks[k]) for k, v in after_peaks.items()}   # best of the runs before and after
    peak = max(peaks["jax"], peaks["torch"])
    step_s = statistics.median(times)
    achieved = step_flops / step_s / 1e9
    ctx = {"batch": [batch_n, seq], "video_grid": list(grid), "params": n_params,
           "runtime": {"scan_layers": False, "remat": "none", "vision_frame_block": cfg.runtime.vision_frame_block,
                       "dtype": "float32"},
           "optimizer": "AdamW + global-norm clip", "steps_timed": steps}
    emit("train_step_mfu", achieved / peak, "fraction",
         baseline="GEMM peak measured in this run (2048^3 f32 matmul, best of runs before and after the steps, max of jitted JAX and torch)",
         raw={"step_times_s": [round(x, 4) for x in times], "first_step_s": round(first_s, 3),
              "gemm_peak_gflops": {k: round(v, 2) for k, v in peaks.items()}},
         achieved_gflops=achieved, peak_gflops=peak, model_flops_per_step=step_flops, step_time_s=step_s,
         tokens_per_s=batch_n * seq / step_s, compile_s=first.seconds,
         recompiles_after_first_step=after.count, **ctx)
    emit("train_step_time_s", step_s, "s", raw={"step_times_s": [round(x, 4) for x in times]},
         tokens_per_s=batch_n * seq / step_s, loss_tokens_per_s=tokens / step_s, **ctx)
    emit("train_step_compile_s", first.seconds, "s",
         raw={"first_step_s": first_s, "compiles": first.count, "setup_s": setup_s})
    emit("train_step_recompiles_after_warmup", after.count, "compiles",
         note=f"XLA compiles during {steps + 1} train steps after the first")


# --------------------------------------------------------------------------- 2. RL step split


def mid_rl_model(tok):
    from vital_jax.models.qwen2_5_vl.config import TextConfig, VisionConfig
    from vital_jax.trainers.common import tiny_config_for

    return tiny_config_for(tok).replace(
        text=TextConfig(vocab_size=tok.vocab_size, hidden_size=512, intermediate_size=1536, num_layers=6,
                        num_heads=8, num_kv_heads=2, mrope_section=(8, 12, 12), max_position_embeddings=4096),
        vision=VisionConfig(depth=4, hidden_size=256, intermediate_size=512, num_heads=4, out_hidden_size=512,
                            window_size=56, fullatt_block_indexes=(1, 3)))


def rl_overrides(kind: str, data: Path, out: Path, quick: bool) -> list[str]:
    steps = {"tiny": 4 if quick else 6, "mid": 3 if quick else 5}[kind]
    P, G = (4, 4) if kind == "tiny" else (2, 4)
    return [f"data.root={data}", f"out_dir={out}", "stage=rl", f"rl.steps={steps}",
            f"rl.prompts_per_step={P}", f"rl.group_size={G}", f"rl.rollout_batch={P * G}",
            "rl.max_new_tokens=64", "rl.max_turns=2", "rl.cache_length=640", "rl.loss=dgrpo",
            "rl.advantage=dgrpo", "rl.beta=0.0", "rl.temperature=1.0", "rl.optim.learning_rate=1e-5",
            "model.freeze_vision=true", "data.token_buckets=[640]", "data.vision_buckets=[256]",
            "checkpoint.every=0", "checkpoint.async_save=false", "checkpoint.keep=1", "log_every=1"]


def bench_rl(kind: str, data: Path, work: Path, quick: bool) -> None:
    import jax

    from vital_jax.models.qwen2_5_vl import export_pretrained, init_params
    from vital_jax.trainers.common import build_tokenizer
    from vital_jax.config.run_config import load_config
    from vital_jax.runs.metrics import read_jsonl
    from vital_jax.trainers.rl import run_rl

    out = work / f"rl_{kind}"
    overrides = rl_overrides(kind, data, out, quick)
    t0 = time.perf_counter()
    if kind == "mid":
        tok = build_tokenizer(load_config(None, ["model.preset=tiny"]))
        mcfg = mid_rl_model(tok)
        _, params = init_params(mcfg, seed=0)
        init = work / "mid_init"
        export_pretrained(mcfg, jax.device_get(params), init)
        tok.save(init)
        del params
        overrides.append(f"model.init_from={init}")
    else:
        overrides.append("model.preset=tiny")
    cfg = load_config(None, overrides)
    compiles_at: dict[int, int] = {}   # step -> compiles so far, when the trainer logs that step

    def on_log(msg: str) -> None:
        log(f"rl {kind}: {msg}")
        if msg.startswith("rl step "):
            compiles_at[int(msg.split()[2].split("/")[0])] = counter.count

    with CompileCounter() as counter, LogLines(on_line=on_log):
        run_rl(cfg, resume=False)
    wall = time.perf_counter() - t0
    rows = [r for r in read_jsonl(out) if "rl/step_time_s" in r]
    if len(rows) < 2:
        raise RuntimeError(f"rl {kind}: {len(rows)} logged steps in {out}/metrics.jsonl, need >= 2")
    later = rows[1:]

    def col(key):
        return [float(r[f"rl/{key}"]) for r in rows]

    def mean_later(key):
        return float(np.mean([float(r[f"rl/{key}"]) for r in later]))

    steps_seen = sorted(compiles_at)
    per_step = [compiles_at[k] - compiles_at.get(k - 1, 0) for k in steps_seen]   # step 1: from the start
    recompiles = sum(per_step[1:])
    # steps after the first that compiled nothing (the sampler compiles a tool-turn bucket the
    # first time an episode calls the tool, which can be in any step)
    steady = [float(r["rl/step_time_s"]) for r, n in zip(rows[1:], per_step[1:]) if n == 0]
    rl = cfg.rl
    step_s = mean_later("step_time_s")
    gen_per_step = mean_later("response_tokens") * rl.prompts_per_step * rl.group_size
    ctx = {"model": _model_summary(out), "prompts_per_step": rl.prompts_per_step, "group_size": rl.group_size,
           "rollout_batch": rl.rollout_batch, "max_new_tokens": rl.max_new_tokens, "max_turns": rl.max_turns,
           "cache_length": rl.cache_length, "token_buckets": list(cfg.data.token_buckets), "steps": len(rows),
           "policy": "random init (fresh)"}
    raw = {"step_time_s": col("step_time_s"), "rollout_s": col("time_rollout_s"), "reward_s": col("time_reward_s"),
           "update_s": col("time_update_s"), "rollout_tokens_per_s": col("rollout_tokens_per_s"),
           "response_tokens": col("response_tokens"), "compiles_per_step": per_step, "run_wall_s": round(wall, 2)}
    emit(f"rl_step_time_{kind}", step_s, "s", raw=raw,
         rollout_s=mean_later("time_rollout_s"), reward_s=mean_later("time_reward_s"),
         update_s=mean_later("time_update_s"), rollout_tokens_per_s=mean_later("rollout_tokens_per_s"),
         generated_tokens_per_step=gen_per_step, tokens_per_s=gen_per_step / step_s,
         first_step_s=raw["step_time_s"][0], compiles_after_first_step=recompiles,
         steady_step_s=float(np.mean(steady)) if steady else None,
         tool_call_rate=mean_later("tool_call_rate"),
         note="mean over the steps after the first; split and tokens from the run's metrics.jsonl", **ctx)
    emit(f"rl_rollout_tokens_per_s_{kind}", mean_later("rollout_tokens_per_s"), "tokens/s",
         raw={"rollout_tokens_per_s": raw["rollout_tokens_per_s"]}, note="generated tokens / rollout seconds")


def _model_summary(run_dir: Path) -> dict:
    """Sizes of the model the run trained (read from its exported final/config.json)."""
    import jax

    from vital_jax.models.qwen2_5_vl import modeling
    from vital_jax.models.qwen2_5_vl.config import ModelConfig

    cfg = ModelConfig.from_hf_dict(json.loads((run_dir / "final" / "config.json").read_text()))
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(modeling.abstract_params(cfg)))
    t, v = cfg.text, cfg.vision
    text = f"{t.hidden_size}x{t.num_layers} (MLP {t.intermediate_size}, {t.num_heads}/{t.num_kv_heads} heads)"
    return {"params": n, "text": text, "vocab": t.vocab_size, "vision": f"{v.hidden_size}x{v.depth}"}


def make_suite(out: Path, quick: bool) -> Path:
    from vital_jax.data.synthetic import SynthConfig, generate

    t = time.perf_counter()
    generate(out, SynthConfig(num=8 if quick else 16, seed=0, min_seconds=20, max_seconds=40, size=64,
                              eval_fraction=0.0))
    log(f"synthetic suite: {time.perf_counter() - t:.1f} s")
    return out


# --------------------------------------------------------------------------- main


PARTS = ("mfu", "rl_tiny", "rl_mid")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps (about 3 min on 2 quiet cores)")
    ap.add_argument("--json", action="store_true", help="JSON lines on stdout (always; for vital bench)")
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    args = ap.parse_args()
    from vital_jax.host_alloc import keep_freed_memory

    keep_freed_memory()   # XLA's per-run temp block reused, not re-faulted (both sides of a comparison)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        ap.error(f"--only: unknown {bad}; known: {list(PARTS)}")
    t_start = time.perf_counter()
    if "mfu" in parts:
        bench_mfu(args.quick)
    rl = [p for p in parts if p.startswith("rl_")]
    if rl:
        with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
            data = make_suite(Path(tmp) / "data", args.quick)
            for p in rl:
                bench_rl(p.removeprefix("rl_"), data, Path(tmp), args.quick)
    emit("bench_train_wall_s", time.perf_counter() - t_start, "s", quick=args.quick, parts=parts)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
