"""Sampler benchmarks (numbers for the issue note; not tests).

1. decode tokens/s at batch 1 and 8 vs transformers ``generate()`` on the same weights (a 61M
   config: text 512 x 8 layers, vocab 32k, vision 256 x 4) and vs the memory-bandwidth roofline
   (bandwidth measured here with a 512 MB numpy copy); plus the decode-shaped matmul probe.
2. one tool turn (append a 256-token clip) at context 1k/4k/8k vs re-prefilling the context.
3. compile time of the bucket set.

    .venv/bin/python scripts/bench_sampler.py [--quick] [--skip-hf]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import types

import numpy as np


def bench_config():
    from vital_jax.models.qwen2_5_vl import ModelConfig, TextConfig, VisionConfig

    return ModelConfig(
        text=TextConfig(vocab_size=32000, hidden_size=512, intermediate_size=1536, num_layers=8, num_heads=8,
                        num_kv_heads=2, mrope_section=(8, 12, 12), max_position_embeddings=32768),
        vision=VisionConfig(depth=4, hidden_size=256, intermediate_size=768, num_heads=4, out_hidden_size=512,
                            fullatt_block_indexes=(1, 3)),
        image_token_id=31990, video_token_id=31991, vision_start_token_id=31992, vision_end_token_id=31993,
        eos_token_id=31994, pad_token_id=31995)


def bandwidth_gbs() -> float:
    a = np.ones(64 * 2**20, np.float64)  # 512 MB
    b = np.empty_like(a)
    best = 1e9
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t)
    # platform.md's convention: bytes copied / time (the read+write traffic is twice this)
    return a.nbytes / best / 1e9


def timeit(fn, n=5):
    fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def matmul_probe():
    import jax
    import jax.numpy as jnp
    import torch

    out = {}
    x = np.random.rand(8, 512).astype(np.float32)
    w = np.random.rand(512, 1536).astype(np.float32)
    w3 = w.reshape(512, 24, 64)
    flops = 2 * 8 * 512 * 1536
    xj, wj, w3j = jax.device_put(x), jax.device_put(w), jax.device_put(w3)
    f = jax.jit(lambda a, b: a @ b)
    out["jax 8x512x1536 (2D dot)"] = flops / timeit(lambda: f(xj, wj).block_until_ready(), 200) / 1e9
    g = jax.jit(lambda a, b: jnp.einsum("bd,dhk->bhk", a, b))
    out["jax 8x512x(24x64) einsum"] = flops / timeit(lambda: g(xj, w3j).block_until_ready(), 200) / 1e9
    wt = jax.device_put(np.ascontiguousarray(w.T))
    h = jax.jit(lambda a, b: jax.lax.dot_general(a, b, (((1,), (1,)), ((), ()))))
    out["jax 8x512x1536 (W^T layout)"] = flops / timeit(lambda: h(xj, wt).block_until_ready(), 200) / 1e9
    xt, wt_ = torch.from_numpy(x), torch.from_numpy(w)
    with torch.no_grad():
        out["torch 8x512x1536"] = flops / timeit(lambda: xt @ wt_, 200) / 1e9
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-hf", action="store_true")
    args = ap.parse_args()
    import jax

    from vital_jax.models.qwen2_5_vl import export_pretrained, init_params
    from vital_jax.sampling import Sampler, SamplerConfig, SamplingOptions, Segment

    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} cpus")
    bw = bandwidth_gbs()
    cfg = bench_config()
    _, params = init_params(cfg, seed=0)
    nbytes = sum(int(np.prod(a.shape)) * 4 for a in jax.tree.leaves(params))
    text_bytes = nbytes - sum(int(np.prod(a.shape)) * 4 for a in jax.tree.leaves(params["vision"]))
    # decode reads every text weight once per step; of the embedding table only one row per token
    step_bytes = text_bytes - (0 if cfg.text.tie_word_embeddings else cfg.text.vocab_size * cfg.text.hidden_size * 4)
    bound_ms = step_bytes / (bw * 1e9) * 1e3
    print(f"params {nbytes / 1e6:.0f} MB (text {text_bytes / 1e6:.0f} MB); bytes read per decode step "
          f"{step_bytes / 1e6:.0f} MB; copy bandwidth {bw:.1f} GB/s (512 MB numpy copy) -> roofline {bound_ms:.1f} ms/step")

    print("\n[matmul probe, GFLOP/s]")
    for k, v in matmul_probe().items():
        print(f"  {k}: {v:.1f}")

    steps = 32 if args.quick else 64
    prompt = 128
    print(f"\n[1] decode, prompt {prompt}, {steps} new tokens")
    rng = np.random.default_rng(0)
    results = {}
    for B in (1, 8):
        s = Sampler(cfg, params, SamplerConfig(batch_size=B, cache_length=prompt + steps + 8, chunk_buckets=(prompt,),
                                               vision_buckets=(64,), max_visual_tokens=16, decode_steps=steps))
        rows = [Segment(rng.integers(0, 30000, prompt)) for _ in range(B)]
        sp = s.sampling_params(SamplingOptions())
        budget = np.full(B, steps, np.int32)

        def one():
            st = s.prefill(rows)
            jax.block_until_ready(st.length)
            t = time.perf_counter()
            st, out = s.decode(st, sp, budget)
            return time.perf_counter() - t

        one()
        dt = min(one() for _ in range(3))
        results[B] = dt
        print(f"  ours B={B}: {dt / steps * 1e3:.1f} ms/step, {B * steps / dt:.0f} tokens/s"
              + (f", {bound_ms / (dt / steps * 1e3) * 100:.0f}% of roofline" if B == 1 else ""))
    if not args.skip_hf:
        import torch
        from transformers import Qwen2_5_VLForConditionalGeneration

        torch.set_num_threads(os.cpu_count() or 2)
        with tempfile.TemporaryDirectory() as d:
            export_pretrained(cfg, params, d)
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(d, dtype=torch.float32).eval()
        for B in (1, 8):
            ids = torch.from_numpy(rng.integers(0, 30000, (B, prompt)))
            kw = dict(max_new_tokens=steps, min_new_tokens=steps, do_sample=False, pad_token_id=cfg.pad_token_id)
            with torch.no_grad():
                model.generate(ids, **kw)
                t0 = time.perf_counter()
                model.generate(ids, max_new_tokens=1, min_new_tokens=1, do_sample=False, pad_token_id=cfg.pad_token_id)
                t_pre = time.perf_counter() - t0
                t0 = time.perf_counter()
                model.generate(ids, **kw)
                dt = time.perf_counter() - t0 - t_pre
            print(f"  transformers B={B}: {dt / (steps - 1) * 1e3:.1f} ms/step, {B * (steps - 1) / dt:.0f} tokens/s "
                  f"(ours / transformers tokens/s: {(B * steps / results[B]) / (B * (steps - 1) / dt):.2f}x)")

    print("\n[2] one tool turn: append a 256-token clip vs re-prefill, batch 1")
    grid = (8, 8, 16)  # 256 merged tokens
    clip = types.SimpleNamespace(pixel_values=rng.standard_normal((int(np.prod(grid)), 1176)).astype(np.float32),
                                 grid_thw=np.asarray(grid), second_per_grid_t=1.0, kind="video")
    clip_ids = np.concatenate([[cfg.vision_start_token_id], np.full(256, cfg.video_token_id),
                               [cfg.vision_end_token_id], rng.integers(0, 30000, 14)])
    ctxs = (1024, 4096) if args.quick else (1024, 4096, 8192)
    # one bucket per re-prefill size so the peers' way runs as one right-sized chunk (fair to them)
    s = Sampler(cfg, params, SamplerConfig(batch_size=1, cache_length=max(ctxs) + 512,
                                           chunk_buckets=(288,) + tuple(L + 288 for L in ctxs),
                                           vision_buckets=(1024,), max_visual_tokens=256, decode_steps=8))
    t0 = time.perf_counter()
    s.warmup()
    compile_s = time.perf_counter() - t0
    for L in ctxs:
        ctx = rng.integers(0, 30000, L)

        def append():
            st = s.prefill([Segment(ctx)])
            jax.block_until_ready(st.length)
            t = time.perf_counter()
            st = s.extend(st, [Segment(clip_ids, [clip])], lengths=np.asarray([L]))
            jax.block_until_ready(st.last_logits)
            return time.perf_counter() - t

        def reprefill():
            t = time.perf_counter()
            st = s.prefill([Segment(np.concatenate([ctx, clip_ids]), [clip])])
            jax.block_until_ready(st.last_logits)
            return time.perf_counter() - t

        append()
        a = min(append() for _ in range(3))
        reprefill()
        r = min(reprefill() for _ in range(2))
        print(f"  context {L}: append {a * 1e3:.0f} ms, re-prefill {r * 1e3:.0f} ms, speed-up {r / a:.1f}x")

    print(f"\n[3] compile (warm-up) of the bucket set: chunks {s.config.chunk_buckets}, vision "
          f"{s.config.vision_buckets}, decode {s.config.decode_steps}: {compile_s:.1f} s")


if __name__ == "__main__":
    main()
