"""Attention implementations side by side: time and compiled temporary memory.

    python scripts/bench_attention.py [--lengths 512,2048,8192] [--cache 1024,4096] [--reps 5]

Two call sites of ``runtime.attention``, causal grouped attention (8 query heads / 2 KV heads of
64 dims by default, batch 1):

- ``train``: forward + backward over a whole sequence, as the trainers' step runs it: ``xla`` is
  the model's own path (:func:`modeling.xla_causal_attention`: query chunks that skip the keys
  after them), ``blockwise`` is :mod:`vital_jax.models.qwen2_5_vl.blockwise`;
- ``decode`` / ``append``: forward of 1 / 128 query rows written at the middle of a KV cache of
  ``--cache`` slots (the sampler's :class:`modeling.SlotMask`): ``xla`` materialises the
  [n, S] mask and scores, ``blockwise`` scans the cache in key blocks.

- ``vision``: the tiny model's whole vision tower, forward + backward, at ``--vision`` patches
  (16 frames; compiled temporary memory only): ``xla`` materialises each full-attention
  block's [N, N] frame mask and scores, ``blockwise`` scans key blocks with segment ids.

Prints JSON lines ``{"site", "impl", "length", "rows", "ms", "temp_mib", "ratio_vs_xla"}``; the
ratio compares times measured in this process (run it alone: timings on a shared machine move).
``xla`` training is skipped above ``--xla-max`` tokens (its scores no longer fit).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from vital_jax.bench.readme_table import machine_info
from vital_jax.models.qwen2_5_vl.blockwise import blockwise_attention
from vital_jax.models.qwen2_5_vl.modeling import SlotMask, xla_attention, xla_causal_attention


def impls(d: int):
    scale = d ** -0.5
    return {
        "xla": lambda q, k, v, m: jnp.swapaxes(xla_causal_attention(q, k, v, m, scale), 1, 2),
        "blockwise": lambda q, k, v, m: blockwise_attention(q, k, v, scale, seg_q=jnp.ones_like(m), seg_k=m,
                                                            causal=True),
    }


def cache_impls(d: int):
    scale = d ** -0.5

    def blockwise(q, k, v, length):
        B, n, S = q.shape[0], q.shape[1], k.shape[2]
        pos_q = length[:, None] + jnp.arange(n, dtype=jnp.int32)[None]
        return blockwise_attention(q, k, v, scale, seg_q=jnp.ones((B, n), jnp.int32), seg_k=jnp.ones((B, S), jnp.int32),
                                   pos_q=pos_q, pos_k=jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (B, S)),
                                   causal=True)
    return {
        "xla": lambda q, k, v, length: xla_attention(q, k, v, SlotMask(length).dense(q.shape[1], k.shape[2]), scale),
        "blockwise": blockwise,
    }


def _time(fn, args, reps: int) -> tuple[float, float]:
    """(median ms, compiled temporary MiB) of jitted ``fn(*args)``."""
    temp = fn.lower(*args).compile().memory_analysis().temp_size_in_bytes
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times)), temp / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="512,2048,8192")
    ap.add_argument("--cache", default="1024,4096")
    ap.add_argument("--vision", default="4096,16384,65536", help="vision tower patches (compile only)")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--xla-max", type=int, default=8192)
    args = ap.parse_args()
    H, K, d = args.heads, args.kv_heads, args.head_dim
    print(json.dumps({"machine": machine_info(), "devices": str(jax.devices()),
                      "heads": H, "kv_heads": K, "head_dim": d}))
    rng = np.random.default_rng(0)

    def line(site, name, L, rows, ms, temp, base):
        print(json.dumps({"site": site, "impl": name, "length": L, "rows": rows, "ms": round(ms, 3),
                          "temp_mib": round(temp, 1), "ratio_vs_xla": None if base is None else round(ms / base, 3)}),
              flush=True)

    for L in (int(x) for x in args.lengths.split(",") if x):
        q = jnp.asarray(rng.normal(size=(1, L, H, d)), jnp.float32)
        k = jnp.asarray(rng.normal(size=(1, K, L, d)), jnp.float32)
        v = jnp.asarray(rng.normal(size=(1, K, L, d)), jnp.float32)
        m = jnp.ones((1, L), jnp.int32)
        base = None
        for name, fn in impls(d).items():
            if name == "xla" and L > args.xla_max:
                continue
            step = jax.jit(jax.grad(lambda q, k, v, m, fn=fn: jnp.sum(fn(q, k, v, m)), argnums=(0, 1, 2)))
            ms, temp = _time(step, (q, k, v, m), args.reps)
            base = ms if name == "xla" else base
            line("train", name, L, L, ms, temp, base)
    for S in (int(x) for x in args.cache.split(",") if x):
        for n, site in ((1, "decode"), (128, "append")):
            q = jnp.asarray(rng.normal(size=(4, n, H, d)), jnp.float32)
            k = jnp.asarray(rng.normal(size=(4, K, S, d)), jnp.float32)
            v = jnp.asarray(rng.normal(size=(4, K, S, d)), jnp.float32)
            length = jnp.full((4,), S // 2, jnp.int32)
            base = None
            for name, fn in cache_impls(d).items():
                ms, temp = _time(jax.jit(fn), (q, k, v, length), args.reps * 4)
                base = ms if name == "xla" else base
                line(site, name, S, n, ms, temp, base)
    vision_memory([int(x) for x in args.vision.split(",") if x])


def vision_memory(sizes) -> None:
    from vital_jax.models.qwen2_5_vl import ModelConfig, init_params
    from vital_jax.models.qwen2_5_vl.api import vision_arrays
    from vital_jax.models.qwen2_5_vl.modeling import encode_vision

    cfg = ModelConfig.tiny(vocab_size=512)
    params = init_params(cfg, seed=0)[1]["vision"]
    for N in sizes:
        side = int(round((N / 16) ** 0.5))
        grid = (16, side, side)
        va = vision_arrays(cfg, np.zeros((16 * side * side, 3 * 2 * 14 * 14), np.float32), np.asarray([grid]))
        for impl in ("xla", "blockwise"):
            c = cfg.with_runtime(attention=impl)
            f = jax.jit(jax.grad(lambda p, va, c=c: jnp.sum(encode_vision(c, p, va) ** 2)))
            temp = f.lower(params, va).compile().memory_analysis().temp_size_in_bytes / 2**20
            print(json.dumps({"site": "vision", "impl": impl, "length": 16 * side * side, "rows": side * side,
                              "ms": None, "temp_mib": round(temp, 1), "ratio_vs_xla": None}), flush=True)


if __name__ == "__main__":
    main()
