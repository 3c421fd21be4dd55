"""Attention implementations side by side: time of forward + backward and compiled temporary memory.

    python scripts/bench_attention.py [--lengths 512,2048,8192] [--reps 5]

For each sequence length, causal grouped attention with the shapes of one Qwen2.5-VL-7B layer
scaled down (28 query heads / 4 KV heads of 128 dims by default, batch 1) through
``runtime.attention`` = ``xla`` (the masked-softmax reference) and ``blockwise`` (flash-style,
:mod:`vital_jax.models.qwen2_5_vl.blockwise`). Prints JSON lines: ``{"impl", "length", "ms",
"temp_mib", "ratio_vs_xla"}``; the ratio compares times measured in this process (run it alone:
timings on a shared machine move). ``xla`` is skipped above ``--xla-max`` tokens (its [L, L]
scores no longer fit).
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
from vital_jax.models.qwen2_5_vl.modeling import causal_mask, xla_attention


def impls(d: int):
    scale = d ** -0.5
    return {
        "xla": lambda q, k, v, m: xla_attention(q, k, v, causal_mask(m), scale),
        "blockwise": lambda q, k, v, m: blockwise_attention(q, k, v, scale, seg_q=jnp.ones_like(m), seg_k=m,
                                                            causal=True),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="512,2048,8192")
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
    for L in (int(x) for x in args.lengths.split(",")):
        q = jnp.asarray(rng.normal(size=(1, L, H, d)), jnp.float32)
        k = jnp.asarray(rng.normal(size=(1, K, L, d)), jnp.float32)
        v = jnp.asarray(rng.normal(size=(1, K, L, d)), jnp.float32)
        m = jnp.ones((1, L), jnp.int32)
        base = None
        for name, fn in impls(d).items():
            if name == "xla" and L > args.xla_max:
                continue
            step = jax.jit(jax.grad(lambda q, k, v, m, fn=fn: jnp.sum(fn(q, k, v, m)), argnums=(0, 1, 2)))
            temp = step.lower(q, k, v, m).compile().memory_analysis().temp_size_in_bytes
            jax.block_until_ready(step(q, k, v, m))
            times = []
            for _ in range(args.reps):
                t = time.perf_counter()
                jax.block_until_ready(step(q, k, v, m))
                times.append(time.perf_counter() - t)
            ms = 1e3 * float(np.median(times))
            base = ms if name == "xla" else base
            print(json.dumps({"impl": name, "length": L, "ms": round(ms, 2), "temp_mib": round(temp / 2**20, 1),
                              "ratio_vs_xla": None if base is None else round(ms / base, 3)}), flush=True)


if __name__ == "__main__":
    main()
