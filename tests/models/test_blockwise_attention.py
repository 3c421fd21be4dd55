"""`runtime.attention="blockwise"`: equal to the masked-softmax reference (forward and gradients)
on the layouts the model uses, and without an [L, L] array: compiled temporary memory grows
about linearly in the sequence length where the reference grows quadratically."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vital_jax.models.qwen2_5_vl.blockwise import blockwise_attention
from vital_jax.models.qwen2_5_vl.modeling import causal_mask, xla_attention


def _qkv(rng, B, n, H, K, d, S=None):
    S = n if S is None else S
    return (jnp.asarray(rng.normal(size=(B, n, H, d)), jnp.float32),
            jnp.asarray(rng.normal(size=(B, K, S, d)), jnp.float32),
            jnp.asarray(rng.normal(size=(B, K, S, d)), jnp.float32))


def _check(f_ref, f_new, q, k, v, rows):
    """Outputs on ``rows`` [B, n] (queries that see a key) and the gradients of a loss on them."""
    w = jnp.asarray(np.random.default_rng(1).normal(size=q.shape), jnp.float32) * rows[..., None, None]
    np.testing.assert_allclose(f_new(q, k, v) * rows[..., None, None], f_ref(q, k, v) * rows[..., None, None],
                               atol=2e-5, rtol=2e-5)
    g_ref = jax.grad(lambda *a: jnp.sum(f_ref(*a) * w), argnums=(0, 1, 2))(q, k, v)
    g_new = jax.grad(lambda *a: jnp.sum(f_new(*a) * w), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(g_new, g_ref):
        np.testing.assert_allclose(a, b, atol=5e-5, rtol=5e-5)


@pytest.mark.parametrize("n,block", [(37, 8), (64, 16), (20, 512)])
def test_causal_gqa_with_left_padding_equals_reference(n, block):
    rng = np.random.default_rng(0)
    B, H, K, d = 2, 4, 2, 8
    q, k, v = _qkv(rng, B, n, H, K, d)
    valid = np.ones((B, n), np.int32)
    valid[1, :5] = 0                                      # a left-padded row
    rows = jnp.asarray(np.cumsum(valid, axis=1) > 0, jnp.float32)   # queries that see a key
    valid = jnp.asarray(valid)

    def ref(q, k, v):
        return xla_attention(q, k, v, causal_mask(valid), d ** -0.5)

    def new(q, k, v):
        return blockwise_attention(q, k, v, d ** -0.5, seg_q=jnp.ones_like(valid), seg_k=valid, causal=True,
                                   block_q=block, block_k=block)

    _check(ref, new, q, k, v, rows)


def test_rows_that_see_no_key_output_zero_and_pass_no_gradient():
    """Padding queries of a left-padded row see no key: output 0 and zero gradient, even when a
    loss weights them (it once gave p = 1 on every masked key in the backward: gradients l times
    too large, while the forward looked right)."""
    rng = np.random.default_rng(5)
    B, n, H, K, d = 2, 24, 4, 2, 8
    q, k, v = _qkv(rng, B, n, H, K, d)
    valid = np.ones((B, n), np.int32)
    valid[1, :7] = 0
    valid = jnp.asarray(valid)

    def f(q, k, v):
        return blockwise_attention(q, k, v, d ** -0.5, seg_q=jnp.ones_like(valid), seg_k=valid, causal=True,
                                   block_q=8, block_k=8)

    np.testing.assert_array_equal(f(q, k, v)[1, :7], 0.0)
    empty = jnp.zeros((B, n)).at[1, :7].set(1.0)
    g = jax.grad(lambda *a: jnp.sum(f(*a) * empty[..., None, None]), argnums=(0, 1, 2))(q, k, v)
    for x in g:
        np.testing.assert_array_equal(x, 0.0)


@pytest.mark.parametrize("n", [1, 12])
def test_cache_slots_equal_reference(n):
    """The sampler's calls over a KV cache (decode n = 1, an appended chunk n > 1): rows at their
    own write offsets, positions as metadata, several key blocks; as xla with SlotMask.dense."""
    from vital_jax.models.qwen2_5_vl.modeling import SlotMask

    rng = np.random.default_rng(3)
    B, H, K, d, S = 3, 4, 2, 8, 70
    q, k, v = _qkv(rng, B, n, H, K, d, S=S)
    length = jnp.asarray([0, 17, 50], jnp.int32)
    mask = SlotMask(length)

    def ref(q, k, v):
        return xla_attention(q, k, v, mask.dense(n, S), d ** -0.5)

    def new(q, k, v):
        pos_q = length[:, None] + jnp.arange(n)[None]
        pos_k = jnp.broadcast_to(jnp.arange(S), (B, S))
        return blockwise_attention(q, k, v, d ** -0.5, seg_q=jnp.ones((B, n), jnp.int32),
                                   seg_k=jnp.ones((B, S), jnp.int32), pos_q=pos_q, pos_k=pos_k, causal=True,
                                   block_q=8, block_k=16)

    _check(ref, new, q, k, v, jnp.ones((B, n), jnp.float32))


def test_segments_equal_reference():
    """Vision: non-causal, a query sees the keys of its own segment (windows or frames), padding
    rows (-1) only each other."""
    rng = np.random.default_rng(2)
    N, H, d = 70, 2, 8
    seg = np.repeat(np.arange(9), 8)[:N].astype(np.int32)
    seg[64:] = -1
    q, k, v = _qkv(rng, 1, N, H, H, d)
    seg = jnp.asarray(seg)[None]

    def ref(q, k, v):
        return xla_attention(q, k, v, seg[:, :, None] == seg[:, None, :], d ** -0.5)

    def new(q, k, v):
        return blockwise_attention(q, k, v, d ** -0.5, seg_q=seg, seg_k=seg, block_q=16, block_k=32)

    _check(ref, new, q, k, v, jnp.ones((1, N), jnp.float32))


def test_model_forward_and_grad_equal_xla(monkeypatch, caplog):
    """The decoder (causal, whole sequence) and the vision tower's frame attention through the
    runtime switch: logits and parameter gradients equal the xla path's. ``auto`` runs blockwise
    from its length thresholds (lowered here) and ``cudnn`` falls back to xla off a GPU, logging
    why."""
    import logging

    from vital_jax.models.qwen2_5_vl import ModelConfig, init_params, modeling
    from vital_jax.models.qwen2_5_vl.api import vision_arrays
    from vital_jax.models.qwen2_5_vl.modeling import encode_vision, model_logits

    cfg0 = ModelConfig.tiny(vocab_size=512)
    assert cfg0.runtime.attention == "auto"
    assert [modeling._impl(cfg0, "sequence", n) for n in (2047, 2048)] == ["xla", "blockwise"]
    assert [modeling._impl(cfg0, "cache", n) for n in (4095, 4096)] == ["xla", "blockwise"]
    monkeypatch.setattr(modeling, "AUTO_BLOCKWISE_FROM", {"sequence": 16, "cache": 16})

    cfg = ModelConfig.tiny(vocab_size=512)
    _, params = init_params(cfg, seed=0)
    rng = np.random.default_rng(3)
    ids = jnp.asarray(rng.integers(0, 200, size=(2, 40)), jnp.int32)
    mask = np.ones((2, 40), np.int32)
    mask[0, :6] = 0
    pos = jnp.broadcast_to(jnp.maximum(jnp.cumsum(jnp.asarray(mask), 1) - 1, 0)[None], (3, 2, 40))
    grid = np.array([[4, 8, 8]])
    pixels = rng.normal(size=(int(np.prod(grid)), 3 * 2 * 14 * 14)).astype(np.float32)
    va = vision_arrays(cfg, pixels, grid)
    out = {}
    for name in ("xla", "blockwise", "auto", "cudnn"):
        c = cfg.with_runtime(attention=name)

        def loss(p, c=c):
            lg = model_logits(c, p, ids, pos, jnp.asarray(mask))
            return jnp.sum(lg[0, 6:] ** 2) + jnp.sum(lg[1] ** 2) + jnp.sum(encode_vision(c, p["vision"], va) ** 2)

        with caplog.at_level(logging.WARNING, logger="vital_jax.models.qwen2_5_vl.modeling"):
            out[name] = jax.jit(jax.value_and_grad(loss))(params)
    np.testing.assert_allclose(out["blockwise"][0], out["xla"][0], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(out["blockwise"][1]), jax.tree.leaves(out["xla"][1])):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4)
    for got, want in (("auto", "blockwise"), ("cudnn", "xla")):   # the same path: the same numbers
        np.testing.assert_array_equal(out[got][0], out[want][0])
    assert any("attention cudnn -> xla: the backend is cpu" in r.getMessage() for r in caplog.records)


def _temp_bytes(fn, L):
    q = jax.ShapeDtypeStruct((1, L, 2, 16), jnp.float32)
    kv = jax.ShapeDtypeStruct((1, 1, L, 16), jnp.float32)
    valid = jax.ShapeDtypeStruct((1, L), jnp.int32)
    f = jax.jit(jax.grad(lambda q, k, v, m: jnp.sum(fn(q, k, v, m)), argnums=(0, 1, 2)))
    return f.lower(q, kv, kv, valid).compile().memory_analysis().temp_size_in_bytes


def test_training_memory_grows_linearly():
    """Compiled temporary memory of attention's forward + backward, 2k -> 8k tokens: x4 (linear)
    at most x6 for blockwise; the reference materialises [L, L] and grows ~x16."""
    def new(q, k, v, m):
        return blockwise_attention(q, k, v, 0.25, seg_q=jnp.ones_like(m), seg_k=m, causal=True)

    def ref(q, k, v, m):
        return xla_attention(q, k, v, causal_mask(m), 0.25)

    b2, b8 = _temp_bytes(new, 2048), _temp_bytes(new, 8192)
    r2, r8 = _temp_bytes(ref, 2048), _temp_bytes(ref, 8192)
    print(f"blockwise {b2 / 2**20:.1f} -> {b8 / 2**20:.1f} MiB, xla {r2 / 2**20:.1f} -> {r8 / 2**20:.1f} MiB")
    assert b8 / b2 <= 6 and r8 / r2 >= 12 and b8 < r8 / 8
