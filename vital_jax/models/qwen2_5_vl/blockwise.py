"""Blockwise (flash-style) attention in plain JAX: no [L, L] score array in forward or backward.

Queries are cut into blocks of ``block_q`` rows (a Python loop: static shapes), and each query
block runs a ``lax.scan`` over key blocks of ``block_k`` with an online softmax (running max ``m``,
normaliser ``l``, unnormalised output). Causal attention scans only the key blocks up to the
query block's diagonal. The backward is a custom VJP that keeps only ``q, k, v``, the output and
the per-row log-sum-exp, and recomputes each score block (FlashAttention-2's recurrence), so
training memory grows linearly in the sequence length. Grouped-query attention reads each K/V
head once for its ``g`` query heads (no repeat).

What may attend to what is given by per-token metadata, never by a dense mask:
``seg_q [B, n]`` / ``seg_k [B, S]`` (a query sees a key only with an equal segment id: vision
windows and frames; padding keys get an id no query has) and, when ``causal``, ``pos_q [B, n]`` /
``pos_k [B, S]`` (a query sees keys at positions <= its own). A row that sees no key at all (a
padding query) outputs 0 and passes no gradient (the masked-softmax reference gives it the mean
of all values instead: both are meaningless, and no real query reads them).

Written by hand because nothing in JAX gives this on CPU: ``jax.nn.dot_product_attention``'s XLA
path materialises the scores, and the Pallas kernels (splash on TPU, cuDNN on GPU) do not run
here.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
_NEG = -0.7 * float(np.finfo(np.float32).max)


def _blocks(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def _pad_to(x: Array, axis: int, size: int, value=0) -> Array:
    extra = size - x.shape[axis]
    if extra == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths, constant_values=value)


class _Spec:
    """Static layout of one call: block edges and how many key blocks each query block scans."""

    def __init__(self, n: int, S: int, block_q: int, block_k: int, causal: bool):
        self.q_blocks = _blocks(n, block_q)
        self.bk = block_k
        self.nk = -(-S // block_k)
        self.S_pad = self.nk * block_k
        # causal: keys past the query block's last row are never visible (positions are the
        # row indices of a whole sequence in that case, see blockwise_attention)
        self.key_blocks = [min(self.nk, -(-q1 // block_k)) if causal else self.nk for _, q1 in self.q_blocks]


def _scores(qb, kb, scale, allowed):
    # qb [B, K, g, bq, d], kb [B, K, bk, d] -> [B, K, g, bq, bk] (float32)
    s = jnp.einsum("bkgqd,bksd->bkgqs", qb, kb, preferred_element_type=jnp.float32) * scale
    return jnp.where(allowed[:, None, None], s, _NEG)


def _allowed(seg_qb, seg_kb, pos_qb, pos_kb, causal):
    ok = seg_qb[:, :, None] == seg_kb[:, None, :]                           # [B, bq, bk]
    if causal:
        ok = ok & (pos_kb[:, None, :] <= pos_qb[:, :, None])
    return ok


def _key_block(x, j, bk, axis):
    return jax.lax.dynamic_slice_in_dim(x, j * bk, bk, axis=axis)


def _forward(q, k, v, seg_q, seg_k, pos_q, pos_k, spec: _Spec, scale: float, causal: bool):
    """o [B, K, g, n, d] (float32) and lse [B, K, g, n]."""
    B, K, g, n, d = q.shape
    outs, lses = [], []
    for (q0, q1), nk in zip(spec.q_blocks, spec.key_blocks):
        qb = q[:, :, :, q0:q1]
        sq, pq = seg_q[:, q0:q1], pos_q[:, q0:q1]

        def step(carry, j, qb=qb, sq=sq, pq=pq):
            m, l, acc = carry
            kb, vb = _key_block(k, j, spec.bk, 2), _key_block(v, j, spec.bk, 2)
            ok = _allowed(sq, _key_block(seg_k, j, spec.bk, 1), pq, _key_block(pos_k, j, spec.bk, 1), causal)
            s = _scores(qb, kb, scale, ok)
            m_new = jnp.maximum(m, s.max(-1))
            p = jnp.exp(s - m_new[..., None])
            corr = jnp.exp(m - m_new)
            l = l * corr + p.sum(-1)
            acc = acc * corr[..., None] + jnp.einsum("bkgqs,bksd->bkgqd", p.astype(vb.dtype), vb,
                                                     preferred_element_type=jnp.float32)
            return (m_new, l, acc), None

        bq = q1 - q0
        init = (jnp.full((B, K, g, bq), _NEG, jnp.float32), jnp.zeros((B, K, g, bq), jnp.float32),
                jnp.zeros((B, K, g, bq, d), jnp.float32))
        (m, l, acc), _ = jax.lax.scan(step, init, jnp.arange(nk))
        # a row that sees no key (a padding query) outputs 0 and gets lse = +big, so its backward
        # p = exp(s - lse) is 0: consistent with the constant output. (m + log(l) would round to
        # _NEG in float32 and give p = 1 on every masked key: gradients l times too large.)
        empty = m <= 0.5 * _NEG
        outs.append(jnp.where(empty[..., None], 0.0, acc / l[..., None]))
        lses.append(jnp.where(empty, -_NEG, m + jnp.log(l)))
    return jnp.concatenate(outs, axis=3), jnp.concatenate(lses, axis=3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9))
def _attend(q, k, v, seg_q, seg_k, pos_q, pos_k, spec, scale, causal):
    o, _ = _forward(q, k, v, seg_q, seg_k, pos_q, pos_k, spec, scale, causal)
    return o.astype(q.dtype)


def _attend_fwd(q, k, v, seg_q, seg_k, pos_q, pos_k, spec, scale, causal):
    o, lse = _forward(q, k, v, seg_q, seg_k, pos_q, pos_k, spec, scale, causal)
    o = o.astype(q.dtype)
    return o, (q, k, v, seg_q, seg_k, pos_q, pos_k, o, lse)


def _attend_bwd(spec, scale, causal, res, do):
    q, k, v, seg_q, seg_k, pos_q, pos_k, o, lse = res
    B, K, g, n, d = q.shape
    delta = jnp.sum(do.astype(jnp.float32) * o.astype(jnp.float32), axis=-1)   # [B, K, g, n]
    dk = jnp.zeros(k.shape, jnp.float32)
    dv = jnp.zeros(v.shape, jnp.float32)
    dqs = []
    for (q0, q1), nk in zip(spec.q_blocks, spec.key_blocks):
        qb, dob = q[:, :, :, q0:q1], do[:, :, :, q0:q1]
        lb, db = lse[:, :, :, q0:q1], delta[:, :, :, q0:q1]
        sq, pq = seg_q[:, q0:q1], pos_q[:, q0:q1]

        def step(carry, j, qb=qb, dob=dob, lb=lb, db=db, sq=sq, pq=pq):
            dq, dk, dv = carry
            kb, vb = _key_block(k, j, spec.bk, 2), _key_block(v, j, spec.bk, 2)
            ok = _allowed(sq, _key_block(seg_k, j, spec.bk, 1), pq, _key_block(pos_k, j, spec.bk, 1), causal)
            p = jnp.exp(_scores(qb, kb, scale, ok) - lb[..., None])                 # [B, K, g, bq, bk]
            dv_j = jnp.einsum("bkgqs,bkgqd->bksd", p, dob.astype(jnp.float32))
            dp = jnp.einsum("bkgqd,bksd->bkgqs", dob.astype(jnp.float32), vb.astype(jnp.float32))
            ds = p * (dp - db[..., None]) * scale
            dq = dq + jnp.einsum("bkgqs,bksd->bkgqd", ds, kb.astype(jnp.float32))
            dk_j = jnp.einsum("bkgqs,bkgqd->bksd", ds, qb.astype(jnp.float32))
            at = j * spec.bk
            dk = jax.lax.dynamic_update_slice_in_dim(dk, _key_block(dk, j, spec.bk, 2) + dk_j, at, axis=2)
            dv = jax.lax.dynamic_update_slice_in_dim(dv, _key_block(dv, j, spec.bk, 2) + dv_j, at, axis=2)
            return (dq, dk, dv), None

        init = (jnp.zeros(qb.shape, jnp.float32), dk, dv)
        (dq_b, dk, dv), _ = jax.lax.scan(step, init, jnp.arange(nk))
        dqs.append(dq_b)
    dq = jnp.concatenate(dqs, axis=3)
    return (dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None, None, None, None)


_attend.defvjp(_attend_fwd, _attend_bwd)


def blockwise_attention(q: Array, k: Array, v: Array, scale: float, *, seg_q: Array, seg_k: Array,
                        pos_q: Array | None = None, pos_k: Array | None = None, causal: bool = False,
                        block_q: int = 512, block_k: int = 512) -> Array:
    """Grouped attention without a score matrix. q [B, n, H, d]; k, v [B, K, S, d] (H a multiple
    of K); seg_q [B, n], seg_k [B, S] int; with ``causal``, pos_q [B, n] and pos_k [B, S] (default:
    row indices, a whole sequence). Returns [B, n, H, d] in q's dtype."""
    B, n, H, d = q.shape
    K, S = k.shape[1], k.shape[2]
    g = H // K
    if causal and pos_q is None:
        pos_q = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (B, n))
        pos_k = jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (B, S))
        exact_rows = True
    else:
        exact_rows = False
    if not causal:
        pos_q = jnp.zeros((B, n), jnp.int32)
        pos_k = jnp.zeros((B, S), jnp.int32)
    bk = min(block_k, S)
    spec = _Spec(n, S, min(block_q, n), bk, causal and exact_rows)
    # padding keys to a whole number of blocks: a segment no query has
    pad_seg = jnp.iinfo(jnp.int32).min
    k, v = _pad_to(k, 2, spec.S_pad), _pad_to(v, 2, spec.S_pad)
    seg_k = _pad_to(seg_k.astype(jnp.int32), 1, spec.S_pad, pad_seg)
    pos_k = _pad_to(pos_k.astype(jnp.int32), 1, spec.S_pad, np.iinfo(np.int32).max)
    qg = jnp.transpose(q.reshape(B, n, K, g, d), (0, 2, 3, 1, 4))               # [B, K, g, n, d]
    o = _attend(qg, k, v, seg_q.astype(jnp.int32), seg_k, pos_q.astype(jnp.int32), pos_k, spec,
                float(scale), bool(causal))
    return jnp.transpose(o, (0, 3, 1, 2, 4)).reshape(B, n, H, d)
