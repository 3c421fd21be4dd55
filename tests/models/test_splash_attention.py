"""`runtime.attention="splash"` (the Pallas TPU kernel, in interpret mode on CPU): equal to the
masked-softmax reference in forward and gradients on the layouts the model uses (GQA, causal,
left padding, a length that is no multiple of the tile, frame segments), the same under a
(2, 2, 2) mesh as unsharded, and through the whole model."""

import jax
import jax.numpy as jnp
import numpy as np

from tests.models.test_blockwise_attention import _check, _qkv
from vital_jax.models.qwen2_5_vl.modeling import causal_mask, xla_attention
from vital_jax.models.qwen2_5_vl.splash import splash_attention


def _padded_causal(B=2, n=100, H=4, K=2, d=16, seed=0):
    q, k, v = _qkv(np.random.default_rng(seed), B, n, H, K, d)
    valid = np.ones((B, n), np.int32)
    valid[1, :9] = 0                                                     # a left-padded row
    return q, k, v, jnp.asarray(valid)


def test_causal_gqa_left_padding_equals_reference():
    q, k, v, valid = _padded_causal()
    d = q.shape[-1]
    rows = jnp.asarray(valid, jnp.float32)                                 # real queries

    def ref(q, k, v):
        return xla_attention(q, k, v, causal_mask(valid), d ** -0.5)

    def new(q, k, v):
        return splash_attention(q, k, v, d ** -0.5, seg_q=valid, seg_k=valid, causal=True)

    _check(ref, new, q, k, v, rows)


def test_frame_segments_equal_reference():
    rng = np.random.default_rng(1)
    n, H, d = 96, 2, 16
    q, k, v = _qkv(rng, 1, n, H, H, d)
    seg = jnp.asarray(np.repeat(np.arange(6), 16)[None], jnp.int32)        # 6 frames of 16 patches

    def ref(q, k, v):
        return xla_attention(q, k, v, (seg[:, :, None] == seg[:, None, :]), d ** -0.5)

    def new(q, k, v):
        return splash_attention(q, k, v, d ** -0.5, seg_q=seg, seg_k=seg, causal=False)

    _check(ref, new, q, k, v, jnp.ones((1, n), jnp.float32))


def test_sharded_over_rows_and_heads_equals_unsharded(mesh222):
    q, k, v, valid = _padded_causal(B=4, n=64, H=4, K=2)
    d = q.shape[-1]

    def f(q, k, v, valid):
        return splash_attention(q, k, v, d ** -0.5, seg_q=valid, seg_k=valid, causal=True)

    want = jax.jit(f)(q, k, v, valid)
    with jax.set_mesh(mesh222):
        sh = jax.NamedSharding(mesh222, jax.P(("data", "fsdp"), None, "tensor", None))
        got = jax.jit(f)(jax.device_put(q, sh), k, v, valid)
        hlo = jax.jit(f).lower(q, k, v, valid).as_text()
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert "manual_computation" in hlo                          # the kernel runs per shard (shard_map)
    assert "manual_computation" not in jax.jit(f).lower(q, k, v, valid).as_text()   # no mesh: a plain call


def test_model_logits_equal_xla():
    from vital_jax.models.qwen2_5_vl import ModelConfig, init_params
    from vital_jax.models.qwen2_5_vl.api import vision_arrays
    from vital_jax.models.qwen2_5_vl.modeling import encode_vision, model_logits

    cfg = ModelConfig.tiny(vocab_size=512)
    _, params = init_params(cfg, seed=0)
    rng = np.random.default_rng(3)
    ids = jnp.asarray(rng.integers(0, 200, size=(2, 40)), jnp.int32)
    mask = np.ones((2, 40), np.int32)
    mask[0, :6] = 0
    pos = jnp.broadcast_to(jnp.maximum(jnp.cumsum(jnp.asarray(mask), 1) - 1, 0)[None], (3, 2, 40))
    grid = np.array([[2, 8, 8]])
    va = vision_arrays(cfg, rng.normal(size=(int(np.prod(grid)), 3 * 2 * 14 * 14)).astype(np.float32), grid)
    out = {name: (model_logits(cfg.with_runtime(attention=name), params, ids, pos, jnp.asarray(mask)),
                  encode_vision(cfg.with_runtime(attention=name), params["vision"], va))
           for name in ("xla", "splash")}
    np.testing.assert_allclose(out["splash"][0][0, 6:], out["xla"][0][0, 6:], atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(out["splash"][0][1], out["xla"][0][1], atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(out["splash"][1], out["xla"][1], atol=2e-5, rtol=2e-5)
