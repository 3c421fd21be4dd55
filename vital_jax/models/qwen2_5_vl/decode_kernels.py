"""``runtime.decode_attention``: the sampler's decode steps (one new token per row over the KV
cache) through the decode kernels JAX ships, chosen by name.

- ``"auto"`` (the default): the cache rule of ``runtime.attention`` (``modeling._impl``), as for
  the sampler's prefill and tool-clip appends.
- ``"xla"`` / ``"blockwise"``: that implementation for decode steps, whatever ``runtime.attention``
  says.
- ``"gpu_decode"``: ``jax.experimental.pallas.ops.gpu.decode_attention.gqa`` (Pallas/Triton
  split-K flash decoding). Its layout is ours: one dense key block per (row, KV head) with a valid
  length per row, so the cache goes in as it is (the kernel takes k as [B, S, K, d] and swaps it
  back to [B, K, S, d]; XLA folds the two transposes).
- ``"tpu_paged"``: ``jax.experimental.pallas.ops.tpu.paged_attention`` (Pallas TPU). It reads pages
  [K, pages, page, d] with the KV heads outermost. Our cache is [B, K, S, d] per layer, so each
  call transposes the layer's window to [K, B, S, d] (a copy of the window per layer and step)
  and hands it over as B * S / page pages, row ``b`` owning pages ``b * S / page + i``. A
  heads-major cache [layers, K, B, S, d] would make that a free reshape; it is not done.
  ``ragged_paged_attention`` would need a copy too (K and V interleaved, [pages, page, 2K, d]).

Prefill and appends (several queries per row) keep the ``runtime.attention`` rule. Off their
device both kernels run in Pallas interpret mode, for parity tests on CPU: the GPU one is exact
in f32; TPU interpret mode rounds the kernel's matmul inputs to bfloat16, as a TPU's default
precision does. Under a mesh each runs in a ``shard_map`` over rows and KV heads (as splash).

Registered functions take q [B, H, d] (one query per row), the layer's cache k, v [B, K, S, d],
``lengths`` [B] int32 (row ``b`` sees slots ``[0, lengths[b])``) and the softmax scale, and return
[B, H, d].
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from vital_jax.models.qwen2_5_vl.splash import row_head_specs
from vital_jax.registry import Registry

Array = jax.Array

DECODE_KERNELS: Registry = Registry("decode attention kernel")
# names runtime.decode_attention takes besides the kernels: they pick the modeling paths
DECODE_PATHS = ("auto", "xla", "blockwise")


def check_name(name: str) -> str:
    """The canonical ``runtime.decode_attention`` name; KeyError listing the known ones."""
    if isinstance(name, str) and name.strip().lower() in DECODE_PATHS:
        return name.strip().lower()
    try:
        return DECODE_KERNELS.canonical(name)
    except KeyError:
        raise KeyError(f"unknown decode attention {name!r}; known: "
                       f"{', '.join(DECODE_PATHS + tuple(DECODE_KERNELS.names()))}") from None


def _largest_divisor(n: int, options) -> int | None:
    return next((x for x in options if n % x == 0), None)


def _gpu_local(q, k, v, lengths, *, scale: float):
    from jax.experimental.pallas.ops.gpu import decode_attention as gda

    S = k.shape[2]
    # split-K: S into up to 16 splits of a multiple of 16 slots, each scanned in blocks of up to 128
    splits = next((s for s in range(16, 0, -1) if S % (16 * s) == 0), None)
    if splits is None:
        raise ValueError(f"decode_attention gpu_decode: cache length {S} needs a multiple of 16")
    block_k = _largest_divisor(S // splits, (128, 64, 32, 16))
    o = gda.gqa(q, jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2), kv_seq_len=lengths, sm_scale=float(scale),
                block_k=block_k, k_splits=splits, interpret=jax.default_backend() != "gpu")
    return o.astype(q.dtype)   # its final normalisation adds a float32 eps: bf16 in, f32 out


def _tpu_local(q, k, v, lengths, *, scale: float):
    from jax.experimental.pallas import tpu as pltpu
    from jax.experimental.pallas.ops.tpu.paged_attention import paged_attention

    B, K, S, d = k.shape
    page = _largest_divisor(S, (128, 64, 32, 16))
    if page is None:
        raise ValueError(f"decode_attention tpu_paged: cache length {S} needs a multiple of 16")
    per_row = S // page
    per_block = _largest_divisor(per_row, (8, 4, 2, 1))             # up to 8 pages of keys per step
    pages_k = jnp.swapaxes(k, 0, 1).reshape(K, B * per_row, page, d)  # the copy the module doc names
    pages_v = jnp.swapaxes(v, 0, 1).reshape(K, B * per_row, page, d)
    index = (jnp.arange(B, dtype=jnp.int32)[:, None] * per_row + jnp.arange(per_row, dtype=jnp.int32)[None])
    call = functools.partial(paged_attention, (q * jnp.asarray(scale, q.dtype)), pages_k, pages_v,
                             lengths.astype(jnp.int32), index, pages_per_compute_block=per_block)
    if jax.default_backend() == "tpu":
        return call()
    with pltpu.force_tpu_interpret_mode():
        return call()


def _sharded(local, q: Array, k: Array, v: Array, lengths: Array, scale: float) -> Array:
    """``local`` per device under a mesh: rows over (data, fsdp), KV heads over tensor."""
    fn = functools.partial(local, scale=float(scale))
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return fn(q, k, v, lengths)
    P = jax.sharding.PartitionSpec
    rows, heads = row_head_specs(mesh, q.shape[0], k.shape[1])
    return jax.shard_map(fn, mesh=mesh, in_specs=(P(rows, heads, None), P(rows, heads, None, None),
                                                  P(rows, heads, None, None), P(rows)),
                         out_specs=P(rows, heads, None), check_vma=False)(q, k, v, lengths)


@DECODE_KERNELS.register("gpu_decode")
def gpu_decode(q: Array, k: Array, v: Array, lengths: Array, scale: float) -> Array:
    """Pallas GPU split-K flash decoding over the dense cache: o = softmax(q k^T * scale over
    slots [0, length)) v, per row and query head (its KV head = head // (H / K))."""
    return _sharded(_gpu_local, q, k, v, lengths, scale)


@DECODE_KERNELS.register("tpu_paged")
def tpu_paged(q: Array, k: Array, v: Array, lengths: Array, scale: float) -> Array:
    """Pallas TPU paged attention over the cache viewed as pages: o = softmax(q k^T * scale over
    slots [0, length)) v, per row and query head (its KV head = head // (H / K))."""
    return _sharded(_tpu_local, q, k, v, lengths, scale)
