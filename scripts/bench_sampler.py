"""Sampler benchmarks: JSON lines for ``vital bench`` (stdout), a readable log on stderr.

    .venv/bin/python scripts/bench_sampler.py [--quick] [--json] [--skip-hf]

All on one 61M-parameter Qwen2.5-VL config (text 512 x 8 layers, vocab 32k, vision 256 x 4, f32;
245 MB of weights, well above the ~105 MB L3), random weights, greedy decoding. Every ratio
compares timings taken in this process, the two sides interleaved rep by rep; each side keeps its
best rep (noise from other processes only ever slows a rep down); all reps are in ``raw``.

- ``decode_speedup_vs_hf_generate``: our decode tokens/s / transformers ``generate()`` tokens/s
  at batch 8 (same weights exported to an HF checkpoint; prefill subtracted on both sides: ours
  times the decode call alone, theirs ``generate(n) - generate(1)``). Skipped with ``--skip-hf``.
- ``decode_fraction_of_roofline``: at batch 1, the time to read the bytes one decode step must
  read (every text weight except the embedding table, plus the KV window attention reads) at
  the read-only bandwidth measured here (``np.add.reduce`` over 512 MB), / our measured ms per
  step (raw: the same at the numpy-copy convention of platform.md, which counts half the traffic).
- ``tool_turn_speedup_vs_reprefill_4k``: at a 4096-token context, re-prefilling context + a
  256-token video clip turn from scratch (in 512-token chunks, the fastest way measured here) /
  appending the turn to the KV cache (both include encoding the clip).
- ``tool_turn_cost_ratio_8k_vs_1k``: appending that turn at 8192 context / at 1024, with KV
  windows sized to the contexts (raw: the 1k append in the 8k window, i.e. attention over the
  whole cache as before KV buckets).
- ``recompiles_after_warmup``: XLA compilations while a realistic mixed workload runs after
  ``Sampler.warmup()`` (prefills of several lengths, sampled and greedy decodes, clip appends at
  several contexts, a rewind) on a sampler with the default KV buckets; should be 0.
- ``sampler_warmup_compile_s``: that warm-up's wall time (raw: compiles, programs; without
  ``--quick`` also the same config with one whole-cache KV window).

``--quick`` (under ~4 minutes on 2 quiet CPU cores) uses fewer reps and decode steps and skips
the 1k/8k re-prefills; it keeps the 1k, 4k and 8k appends. ``--json`` is accepted for the
``vital bench`` contract (stdout is JSON lines either way).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import types

import numpy as np

CONTEXT = {"model": "61M bench_config (f32)"}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def emit(name: str, value, unit: str, baseline: str, raw: dict, **extra):
    print(json.dumps({"name": name, "value": value, "unit": unit, "baseline": baseline, "raw": raw,
                      **CONTEXT, **extra}), flush=True)


def bench_config():
    from vital_jax.models.qwen2_5_vl import ModelConfig, TextConfig, VisionConfig

    return ModelConfig(
        text=TextConfig(vocab_size=32000, hidden_size=512, intermediate_size=1536, num_layers=8, num_heads=8,
                        num_kv_heads=2, mrope_section=(8, 12, 12), max_position_embeddings=32768),
        vision=VisionConfig(depth=4, hidden_size=256, intermediate_size=768, num_heads=4, out_hidden_size=512,
                            fullatt_block_indexes=(1, 3)),
        image_token_id=31990, video_token_id=31991, vision_start_token_id=31992, vision_end_token_id=31993,
        eos_token_id=31994, pad_token_id=31995)


class Bandwidth:
    """Memory bandwidth probes on 512 MB buffers, best of every call so far (the machine may be
    busier during some probes than others): ``copy`` = bytes copied / time (platform.md's
    convention; the read + write traffic is twice this), ``read`` = bytes summed / time."""

    def __init__(self):
        self.copy = self.read = 0.0

    def probe(self, reps: int = 5) -> None:
        a = np.ones(64 * 2**20, np.float64)
        b = np.empty_like(a)
        for _ in range(reps):
            self.copy = max(self.copy, a.nbytes / timed(lambda: np.copyto(b, a)) / 1e9)
            self.read = max(self.read, a.nbytes / timed(lambda: np.add.reduce(a)) / 1e9)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def r3(xs):
    return [round(float(x), 4) for x in xs]


def matmul_probe():
    """GFLOP/s of a decode-shaped matmul, JAX vs torch (human log only, full runs)."""
    import jax
    import torch

    x = np.random.rand(8, 512).astype(np.float32)
    w = np.random.rand(512, 1536).astype(np.float32)
    flops = 2 * 8 * 512 * 1536
    xj, wj = jax.device_put(x), jax.device_put(w)
    f = jax.jit(lambda a, b: a @ b)
    f(xj, wj).block_until_ready()
    ours = min(timed(lambda: f(xj, wj).block_until_ready()) for _ in range(200))
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    with torch.no_grad():
        theirs = min(timed(lambda: xt @ wt) for _ in range(200))
    log(f"  matmul 8x512x1536 GFLOP/s: jax {flops / ours / 1e9:.1f}, torch {flops / theirs / 1e9:.1f}")


def kv_bytes(cfg, batch: int, slots: int) -> int:
    t = cfg.text
    return 2 * t.num_layers * batch * t.num_kv_heads * slots * t.head_dim * 4


# ------------------------------------------------------------------------------------------------
# 1. decode vs transformers generate() and vs the bandwidth roofline
# ------------------------------------------------------------------------------------------------
def bench_decode(cfg, params, args, bw: Bandwidth, step_bytes: int):
    import jax

    from vital_jax.rollout import Sampler, SamplerConfig, SamplingOptions, Segment

    steps, prompt, reps = (32, 128, 3) if args.quick else (64, 128, 5)
    rng = np.random.default_rng(0)
    ours, rows_of, samplers = {}, {}, {}
    for B in (1, 8):
        s = Sampler(cfg, params, SamplerConfig(batch_size=B, cache_length=prompt + steps + 8, chunk_buckets=(prompt,),
                                               vision_buckets=(64,), max_visual_tokens=16, decode_steps=steps))
        samplers[B] = s
        rows_of[B] = [Segment(rng.integers(0, 30000, prompt)) for _ in range(B)]
        ours[B] = []

    def run_ours(B):
        s = samplers[B]
        st = s.prefill(rows_of[B])
        jax.block_until_ready(st.length)
        sp = s.sampling_params(SamplingOptions())
        t = time.perf_counter()
        st, out = s.decode(st, sp, np.full(B, steps, np.int32), lengths=np.full(B, prompt))
        dt = time.perf_counter() - t
        assert all(len(x) == steps for x in out.tokens)
        return dt

    hf = None
    if not args.skip_hf:
        import torch
        from transformers import Qwen2_5_VLForConditionalGeneration

        from vital_jax.models.qwen2_5_vl import export_pretrained

        torch.set_num_threads(os.cpu_count() or 2)
        with tempfile.TemporaryDirectory() as d:
            export_pretrained(cfg, params, d)
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(d, dtype=torch.float32).eval()
        hf_ids = {B: torch.from_numpy(np.stack([np.asarray(r.ids) for r in rows_of[B]])) for B in (1, 8)}
        hf = {B: [] for B in (1, 8)}

        def run_hf(B):
            kw = {"do_sample": False, "pad_token_id": cfg.pad_token_id}
            with torch.no_grad():
                pre = timed(lambda: model.generate(hf_ids[B], max_new_tokens=1, min_new_tokens=1, **kw))
                full = timed(lambda: model.generate(hf_ids[B], max_new_tokens=steps, min_new_tokens=steps, **kw))
            return full - pre  # steps - 1 decode forwards

    for B in (1, 8):
        run_ours(B)                                    # compile + warm
        if hf is not None:
            run_hf(B)
        for _ in range(reps):                          # interleaved
            ours[B].append(run_ours(B))
            if hf is not None:
                hf[B].append(run_hf(B))
            if B == 1:
                bw.probe(2)                            # the roofline's bandwidth, same conditions
        ms = min(ours[B]) / steps * 1e3
        log(f"  ours B={B}: {ms:.1f} ms/step, {B * steps / min(ours[B]):.0f} tokens/s"
            + ("" if hf is None else f"; transformers: {min(hf[B]) / (steps - 1) * 1e3:.1f} ms/step, "
               f"{B * (steps - 1) / min(hf[B]):.0f} tokens/s"))

    common = {"prompt": prompt, "new_tokens": steps, "reps": reps}
    if hf is not None:
        ours_tps = 8 * steps / min(ours[8])
        hf_tps = 8 * (steps - 1) / min(hf[8])
        emit("decode_speedup_vs_hf_generate", round(ours_tps / hf_tps, 3), "x",
             "transformers generate() tokens/s, same weights, batch 8, greedy, prefill subtracted",
             {"ours_decode_s": r3(ours[8]), "hf_decode_s": r3(hf[8]), "ours_tokens_per_s": round(ours_tps, 1),
              "hf_tokens_per_s": round(hf_tps, 1), "hf_decode_forwards": steps - 1,
              "ours_tokens_per_s_b1": round(steps / min(ours[1]), 1),
              "hf_tokens_per_s_b1": round((steps - 1) / min(hf[1]), 1), **common}, batch=8)
    s1 = samplers[1]
    window = max(k[-1] for k in s1.calls if k[0] == "decode")     # the KV slots each step reads
    kvb = kv_bytes(cfg, 1, window)
    bound_ms = (step_bytes + kvb) / (bw.copy * 1e9) * 1e3
    ms = min(ours[1]) / steps * 1e3
    log(f"  roofline at batch 1: {(step_bytes + kvb) / 1e6:.0f} MB per step at {bw.copy:.1f} GB/s (copy) = "
        f"{bound_ms:.1f} ms; ours {ms:.1f} ms -> {bound_ms / ms:.2f} (read-only bandwidth {bw.read:.1f} GB/s: "
        f"{(step_bytes + kvb) / (bw.read * 1e6) / ms:.2f})")
    # headline against the read bandwidth: a decode step only reads its weights, and the copy
    # figure (bytes copied / s) counts half the traffic of a copy, so it gave fractions above 1
    read_frac = (step_bytes + kvb) / (bw.read * 1e6) / ms
    emit("decode_fraction_of_roofline", round(read_frac, 3), "fraction",
         "bytes one decode step reads (text weights except the embedding table + the KV window) at the "
         "measured read-only bandwidth (np.add.reduce over 512 MB); raw has the numpy-copy convention",
         {"ours_ms_per_step": round(ms, 3), "roofline_ms_per_step": round(bound_ms, 3),
          "weight_bytes_per_step": step_bytes, "kv_bytes_per_step": kvb, "kv_window_slots": window,
          "copy_bandwidth_gbs": round(bw.copy, 2), "read_bandwidth_gbs": round(bw.read, 2),
          "fraction_at_copy_bandwidth": round(bound_ms / ms, 3),
          "ours_decode_s": r3(ours[1]),
          **({} if hf is None else {"hf_ms_per_step": round(min(hf[1]) / (steps - 1) * 1e3, 3)}), **common},
         batch=1)


# ------------------------------------------------------------------------------------------------
# 2. a tool turn: append a 256-token clip vs re-prefill, at 1k / 4k / 8k context
# ------------------------------------------------------------------------------------------------
def clip_turn(cfg, rng):
    grid = (8, 8, 16)  # 1024 patches -> 256 merged tokens
    clip = types.SimpleNamespace(pixel_values=rng.standard_normal((int(np.prod(grid)), 1176)).astype(np.float32),
                                 grid_thw=np.asarray(grid), second_per_grid_t=1.0, kind="video")
    ids = np.concatenate([[cfg.vision_start_token_id], np.full(256, cfg.video_token_id),
                          [cfg.vision_end_token_id], rng.integers(0, 30000, 14)])
    return clip, ids


def _turns_at(s, ctx, turn, clip_ids, clip, reps: int, reprefill: bool, wide: bool):
    """Timed appends of ``turn`` at context ``len(ctx)`` (each forgotten by a rewind, untimed,
    so the next lands at the same context), interleaved with re-prefills of context + turn; with
    ``wide`` also appends that claim an 8192-token context (the host may over-state lengths), so
    they run in the 8k KV window: the cost when attention read the whole cache."""
    import jax

    from vital_jax.rollout import Segment

    L, T = len(ctx), len(clip_ids)
    state = s.prefill([Segment(ctx)])
    jax.block_until_ready(state.length)
    box = {"state": state}

    def append(claimed=L):
        st = s.extend(box["state"], turn, lengths=np.asarray([claimed]))
        jax.block_until_ready(st.last_logits)
        box["state"] = st

    def back():
        box["state"] = s.rewind(box["state"], [T])
        jax.block_until_ready(box["state"].length)

    def again():
        st = s.prefill([Segment(np.concatenate([ctx, clip_ids]), [clip])])
        jax.block_until_ready(st.last_logits)

    appends, reprefills, wides = [], [], []
    for claimed, out in ((L, appends), (8192, wides)) if wide else ((L, appends),):
        append(claimed)                                  # compile + warm
        back()
        for _ in range(reps):
            out.append(timed(lambda c=claimed: append(c)))
            back()
            if reprefill and out is appends:   # compiled by the set-up (same chunk and window)
                reprefills.append(timed(again))
    return appends, reprefills, wides


def bench_tool_turn(cfg, params, args):

    from vital_jax.rollout import Sampler, SamplerConfig, Segment

    rng = np.random.default_rng(1)
    clip, clip_ids = clip_turn(cfg, rng)
    T = len(clip_ids)                                   # 272 tokens, one 288 chunk
    ctxs = (1024, 4096, 8192)
    reprefill_ctxs = (4096,) if args.quick else ctxs
    reps = 3 if args.quick else 5
    assert T <= 288                                     # the turn is one 288 chunk
    # chunks: the turn (288); prefills run in 512-token chunks, the fastest re-prefill measured
    # here (a 4096-token context + the turn: 8.3 s in 512-token chunks, 10.4 s in 256, 13 s in
    # 1024, 10.7 s as one 4384 chunk). KV windows: each context + the turn's chunk.
    chunks = (288, 512)
    s = Sampler(cfg, params, SamplerConfig(batch_size=1, cache_length=max(ctxs) + 512, chunk_buckets=chunks,
                                           kv_buckets=tuple(L + 288 for L in ctxs), vision_buckets=(1024,),
                                           max_visual_tokens=256, decode_steps=8))
    log(f"  chunks {s.config.chunk_buckets}, KV windows {s.config.kv_windows}")
    turn = [Segment(clip_ids, [clip])]
    appends: dict = {}
    reprefills: dict = {}
    wide: list = []
    for L in ctxs:
        ctx = rng.integers(0, 30000, L)
        appends[L], rp, w = _turns_at(s, ctx, turn, clip_ids, clip, reps, L in reprefill_ctxs, L == 1024)
        msg = f"  context {L}: append {min(appends[L]) * 1e3:.0f} ms"
        if rp:
            reprefills[L] = rp
            msg += f", re-prefill {min(rp) * 1e3:.0f} ms, speed-up {min(rp) / min(appends[L]):.1f}x"
        if w:
            wide = w
            msg += f" (in the 8k window: {min(w) * 1e3:.0f} ms)"
        log(msg)

    a4, r4 = min(appends[4096]), min(reprefills[4096])
    emit("tool_turn_speedup_vs_reprefill_4k", round(r4 / a4, 2), "x",
         "re-prefilling the 4096-token context + the turn from scratch (512-token chunks, clip encoded)",
         {"append_s": r3(appends[4096]), "reprefill_s": r3(reprefills[4096]), "turn_tokens": T,
          "clip_tokens": 256, "reps": reps}, context=4096, batch=1)
    raw = {f"append_s_{L // 1024}k": r3(appends[L]) for L in ctxs}
    raw.update({"append_s_1k_in_8k_window": r3(wide), "kv_windows": list(s.config.kv_windows), "turn_tokens": T,
                "reps": reps})
    raw.update({f"speedup_vs_reprefill_{L // 1024}k": round(min(reprefills[L]) / min(appends[L]), 2)
                for L in reprefill_ctxs})
    emit("tool_turn_cost_ratio_8k_vs_1k", round(min(appends[8192]) / min(appends[1024]), 2), "x",
         "the same 256-token clip turn appended at 1024-token context (KV windows sized to each context)",
         raw, batch=1)


# ------------------------------------------------------------------------------------------------
# 3. warm-up, then a mixed workload that must compile nothing
# ------------------------------------------------------------------------------------------------
def mixed_workload(cfg, s, clip, clip_ids, quick: bool):
    """Episodes of 2 rows: prefills of several lengths (over the largest chunk too), greedy and
    sampled decodes, text and clip turns at several contexts (one row or both), a rewind."""
    from vital_jax.rollout import SamplingOptions, Segment

    rng = np.random.default_rng(2)
    turn = Segment(clip_ids, [clip])
    greedy = SamplingOptions(max_new_tokens=24)
    sampled = SamplingOptions(temperature=1.0, top_p=0.9, repetition_penalty=1.05, max_new_tokens=40,
                              stop_token_ids=(cfg.eos_token_id,))

    def text(n):
        return Segment(rng.integers(0, 30000, n))

    episodes = ((40, 90), (2300, 150)) if quick else ((40, 90), (2300, 150), (1500, 700))
    for ep, (n0, n1) in enumerate(episodes):
        st = s.prefill([text(n0), text(n1)], seeds=ep)
        st, _ = s.generate(st, greedy)
        st = s.extend(st, [text(9), text(20)])
        st, out = s.generate(st, [sampled, greedy])
        st = s.rewind(st, [min(5, len(out.tokens[0])), 0])
        st = s.extend(st, [turn, None])
        st, _ = s.generate(st, sampled, max_new_tokens=[10, 17])
        st = s.extend(st, [turn, turn] if ep else [text(3), turn])
        st, _ = s.generate(st, greedy)


def bench_recompiles(cfg, params, args):
    from vital_jax.rollout import Sampler, SamplerConfig
    from vital_jax.testing import CompileCounter

    rng = np.random.default_rng(3)
    clip, clip_ids = clip_turn(cfg, rng)
    base = {"batch_size": 2, "cache_length": 4096, "chunk_buckets": (32, 128, 512), "vision_buckets": (1024, 2048),
            "max_visual_tokens": 512, "decode_steps": 16}
    s = Sampler(cfg, params, SamplerConfig(**base))
    with CompileCounter() as warm:
        t = time.perf_counter()
        s.warmup()
        warm_s = time.perf_counter() - t
    progs = s.config.programs()
    log(f"  default KV windows {s.config.kv_windows}: warm-up {warm_s:.1f} s, {warm.count} compiles "
        f"({len(progs)} chunk/decode programs)")
    single = None
    if not args.quick:
        s1 = Sampler(cfg, params, SamplerConfig(**base, kv_buckets=()))
        with CompileCounter() as cc1:
            single = timed(s1.warmup)
        log(f"  one whole-cache KV window: warm-up {single:.1f} s, {cc1.count} compiles")
        del s1
    with CompileCounter() as cc:
        t = time.perf_counter()
        mixed_workload(cfg, s, clip, clip_ids, args.quick)
        work_s = time.perf_counter() - t
    calls = {"/".join(map(str, k)): v for k, v in sorted(s.calls.items()) if v}
    log(f"  mixed workload {work_s:.1f} s: {cc.count} compiles after warm-up; calls {calls}")
    emit("recompiles_after_warmup", cc.count, "compiles", "0: no compilation after Sampler.warmup() (design rule)",
         {"workload_s": round(work_s, 2), "calls": calls, "kv_windows": list(s.config.kv_windows)}, batch=2)
    raw = {"compiles": warm.count, "programs": len(progs), "kv_windows": list(s.config.kv_windows),
           "chunk_buckets": list(s.config.chunk_buckets), "vision_buckets": list(s.config.vision_buckets)}
    if single is not None:
        raw.update({"single_window_warmup_s": round(single, 2), "single_window_compiles": cc1.count})
    emit("sampler_warmup_compile_s", round(warm_s, 2), "s",
         "none (absolute); raw has the same config with one whole-cache KV window (full runs)", raw, batch=2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer reps and steps (< ~4 min on 2 quiet cores)")
    ap.add_argument("--json", action="store_true", help="JSON lines on stdout (always; for vital bench)")
    ap.add_argument("--skip-hf", action="store_true", help="no transformers baseline")
    args = ap.parse_args()
    from vital_jax.host_alloc import keep_freed_memory

    keep_freed_memory()   # XLA's per-run temp block reused, not re-faulted (both sides of a comparison)
    import jax

    from vital_jax.models.qwen2_5_vl import init_params

    t0 = time.perf_counter()
    CONTEXT.update({"jax": jax.__version__, "platform": jax.devices()[0].platform, "cpus": os.cpu_count(),
                    "quick": args.quick})
    log(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} cpus")
    bw = Bandwidth()
    bw.probe()
    cfg = bench_config()
    _, params = init_params(cfg, seed=0)
    nbytes = sum(int(np.prod(a.shape)) * 4 for a in jax.tree.leaves(params))
    text_bytes = nbytes - sum(int(np.prod(a.shape)) * 4 for a in jax.tree.leaves(params["vision"]))
    # decode reads every text weight once per step; of the embedding table only one row per token
    step_bytes = text_bytes - (0 if cfg.text.tie_word_embeddings else cfg.text.vocab_size * cfg.text.hidden_size * 4)
    log(f"params {nbytes / 1e6:.0f} MB (text {text_bytes / 1e6:.0f} MB); weight bytes per decode step "
        f"{step_bytes / 1e6:.0f} MB; bandwidth {bw.copy:.1f} GB/s copy, {bw.read:.1f} GB/s read")
    if not args.quick:
        matmul_probe()
    for title, fn in (("[1] decode (batch 1 and 8)", lambda: bench_decode(cfg, params, args, bw, step_bytes)),
                      ("[2] tool turn: append a 256-token clip vs re-prefill", lambda: bench_tool_turn(cfg, params, args)),
                      ("[3] warm-up and recompiles", lambda: bench_recompiles(cfg, params, args))):
        log(f"\n{title}")
        t = time.perf_counter()
        fn()
        log(f"  ({time.perf_counter() - t:.0f} s)")
    log(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
