"""``runtime.attention="splash"``: JAX's Pallas splash-attention kernel for TPU.

``jax.experimental.pallas.ops.tpu.splash_attention`` with the masks our layouts need: causal plus
segment ids for the training decoder (a left-padded row's padding is its own segment), segment
ids alone for the vision tower's frames. Grouped-query attention runs the MQA kernel once per KV
head (its ``g`` query heads share the K/V block), vmapped over KV heads and rows. Under a mesh
(``jax.set_mesh``) the call is a ``shard_map`` over rows (``data`` x ``fsdp``) and KV heads
(``tensor``), so each device runs the kernel on its own shard.

Off TPU the kernel runs in Pallas interpret mode: correct and slow, for parity tests on CPU. The
sampler's cached calls (a chunk at per-row offsets into the KV cache) have no splash mask; they
run :mod:`~vital_jax.models.qwen2_5_vl.blockwise` instead.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

Array = jax.Array
# sequence lengths are padded to a multiple of this (the kernel's smallest tile on TPU)
ALIGN = 128


@functools.lru_cache(maxsize=64)
def _kernel(n: int, g: int, causal: bool, block: int, interpret: bool):
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    head = sm.CausalMask((n, n)) if causal else sm.FullMask((n, n))
    sizes = sk.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                          block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
    # the kernel holds its mask tables as arrays: made concrete even when first built inside a
    # trace, so the cached kernel never carries a tracer into the next one
    with jax.ensure_compile_time_eval():
        return sk.make_splash_mqa(mask=sm.MultiHeadMask([head] * g), head_shards=1, q_seq_shards=1,
                                  block_sizes=sizes, interpret=interpret)


def _local(q, k, v, seg_q, seg_k, *, scale: float, causal: bool):
    """One device's rows and KV heads: q [b, n, H, d], k/v [b, K, n, d], seg [b, n] -> [b, n, H, d]."""
    from jax.experimental.pallas.ops.tpu.splash_attention.splash_attention_kernel import SegmentIds

    b, n, H, d = q.shape
    K = k.shape[1]
    g = H // K
    npad = -(-n // ALIGN) * ALIGN
    block = next(x for x in (512, 256, 128) if npad % x == 0)
    pad = npad - n
    if pad:
        # filler rows share segment -1: they see each other (no empty softmax), no real row sees them
        q = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0)))
        k = jnp.pad(k, ((0, 0), (0, 0), (0, pad), (0, 0)))
        v = jnp.pad(v, ((0, 0), (0, 0), (0, pad), (0, 0)))
        seg_q = jnp.pad(seg_q, ((0, 0), (0, pad)), constant_values=-1)
        seg_k = jnp.pad(seg_k, ((0, 0), (0, pad)), constant_values=-1)
    kernel = _kernel(npad, g, causal, block, jax.default_backend() != "tpu")
    qg = jnp.transpose((q * jnp.asarray(scale, q.dtype)).reshape(b, npad, K, g, d), (0, 2, 3, 1, 4))  # [b, K, g, n, d]

    def one(qh, kh, vh, sq, sk):
        return kernel(qh, kh, vh, segment_ids=SegmentIds(q=sq, kv=sk))

    o = jax.vmap(jax.vmap(one, in_axes=(0, 0, 0, None, None)))(qg, k, v, seg_q.astype(jnp.int32),
                                                              seg_k.astype(jnp.int32))
    return jnp.transpose(o, (0, 3, 1, 2, 4)).reshape(b, npad, H, d)[:, :n].astype(q.dtype)


def splash_attention(q: Array, k: Array, v: Array, scale: float, *, seg_q: Array, seg_k: Array,
                     causal: bool) -> Array:
    """Self-attention through the splash kernel. q [B, n, H, d]; k, v [B, K, n, d]; seg_q, seg_k
    [B, n] int (a query sees a key only with an equal id; with ``causal`` also only keys at or
    before it). Returns [B, n, H, d]."""
    fn = functools.partial(_local, scale=float(scale), causal=bool(causal))
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return fn(q, k, v, seg_q, seg_k)
    r, heads = row_head_specs(mesh, q.shape[0], k.shape[1])
    return jax.shard_map(fn, mesh=mesh, in_specs=(P(r, None, heads, None), P(r, heads, None, None),
                                                  P(r, heads, None, None), P(r, None), P(r, None)),
                         out_specs=P(r, None, heads, None), check_vma=False)(q, k, v, seg_q, seg_k)


def row_head_specs(mesh, rows: int, kv_heads: int):
    """How a kernel's ``shard_map`` splits its call: rows over the mesh's (data, fsdp) axes and KV
    heads over ``tensor``, each only where the size divides (else that axis stays whole).
    Returns (rows spec entry or None, heads spec entry or None)."""
    sizes = dict(mesh.shape)
    axes = tuple(a for a in ("data", "fsdp") if sizes.get(a, 1) > 1)
    axes = axes if axes and rows % _prod(sizes[a] for a in axes) == 0 else ()
    heads = "tensor" if sizes.get("tensor", 1) > 1 and kv_heads % sizes["tensor"] == 0 else None
    return axes or None, heads


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out
