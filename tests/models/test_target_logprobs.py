"""The training log-probs' lm head (``modeling.target_logprobs``): chunked over positions, and
chunks without a wanted position skipped. Checked against a NumPy log-softmax of the plain
logits, for values, entropies and gradients, with ragged chunks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vital_jax.models.qwen2_5_vl import ModelConfig, init_params, modeling
from vital_jax.models.qwen2_5_vl.config import ConfigError

B, N = 2, 37          # 37 positions: chunks of 8 leave a ragged last one


@pytest.fixture(scope="module")
def case():
    cfg = ModelConfig.tiny()
    _, params = init_params(cfg, seed=3)
    rng = np.random.default_rng(0)
    h = jnp.asarray(rng.standard_normal((B, N, cfg.text.hidden_size)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, cfg.text.vocab_size, (B, N)), jnp.int32)
    where = np.zeros((B, N), bool)
    where[0, 30:] = True          # row 0: a response at the end
    where[1, 5:9] = True          # row 1: a short span that straddles the chunk edge at 8
    where[1, 33] = True
    return cfg, params, h, targets, jnp.asarray(where)


def _reference(cfg, params, h, targets):
    logits = np.asarray(modeling.lm_logits(cfg, params, h), np.float64)
    z = logits - logits.max(-1, keepdims=True)
    logsm = z - np.log(np.exp(z).sum(-1, keepdims=True))
    logp = np.take_along_axis(logsm, np.asarray(targets)[..., None], -1)[..., 0]
    ent = -(np.exp(logsm) * logsm).sum(-1)
    return logp, ent


@pytest.mark.parametrize("chunk", [0, 8, 128])
def test_all_positions_match_log_softmax(case, chunk):
    cfg, params, h, targets, _ = case
    cfg = cfg.with_runtime(logits_chunk=chunk)
    logp, ent = jax.jit(lambda p, h: modeling.target_logprobs(cfg, p, h, targets, with_entropy=True))(params, h)
    ref_logp, ref_ent = _reference(cfg, params, h, targets)
    np.testing.assert_allclose(np.asarray(logp), ref_logp, atol=2e-5)
    np.testing.assert_allclose(np.asarray(ent), ref_ent, atol=2e-5)


def test_chunks_are_static_and_bounded():
    assert modeling._logit_chunks(37, 8) == [(0, 8), (8, 16), (16, 24), (24, 32), (32, 37)]
    assert modeling._logit_chunks(37, 0) == [(0, 37)]
    assert modeling._logit_chunks(100, 128) == [(0, 100)]
    chunks = modeling._logit_chunks(32768, 128)          # long rows: at most 16 chunks, grown to 2048
    assert len(chunks) == 16 and chunks[0] == (0, 2048) and chunks[-1][1] == 32768


def test_wanted_positions_values_and_gradients(case):
    cfg, params, h, targets, where = case
    cfg = cfg.with_runtime(logits_chunk=8)
    ref_logp, ref_ent = _reference(cfg, params, h, targets)
    logp, ent = jax.jit(lambda p, h: modeling.target_logprobs(cfg, p, h, targets, where, with_entropy=True))(params, h)
    w = np.asarray(where)
    np.testing.assert_allclose(np.asarray(logp)[w], ref_logp[w], atol=2e-5)
    np.testing.assert_allclose(np.asarray(ent)[w], ref_ent[w], atol=2e-5)
    assert np.all(np.asarray(logp)[~w] == 0) and np.all(np.asarray(ent)[~w] == 0)

    # gradients of a loss that reads only the wanted positions equal those of the unchunked head
    coef = jnp.asarray(np.random.default_rng(1).standard_normal((B, N)), jnp.float32) * where
    head = {"lm_head": params["lm_head"], "embed": params["embed"]}

    def chunked(hp, h):
        lp, en = modeling.target_logprobs(cfg, hp, h, targets, where, with_entropy=True)
        return jnp.sum(lp * coef) + 0.1 * jnp.sum(en * coef)

    def plain(hp, h):
        logits = modeling.lm_logits(cfg, hp, h)
        logsm = jax.nn.log_softmax(logits, -1)
        lp = jnp.take_along_axis(logsm, targets[..., None], -1)[..., 0]
        en = -jnp.sum(jnp.exp(logsm) * logsm, -1)
        return jnp.sum(lp * coef) + 0.1 * jnp.sum(en * coef)

    got = jax.jit(jax.grad(chunked, argnums=(0, 1)))(head, h)
    want = jax.jit(jax.grad(plain, argnums=(0, 1)))(head, h)
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=2e-5)


def test_chunk_without_wanted_positions_is_not_computed(case):
    """NaN hidden states in chunks nobody wants: a head that ran those chunks would put NaN into
    the lm-head gradient (the masked cotangent is 0, but 0 * NaN is NaN in h^T @ dlogits)."""
    cfg, params, h, targets, where = case
    cfg = cfg.with_runtime(logits_chunk=8)
    w = np.asarray(where)
    untouched = [c for c in modeling._logit_chunks(N, 8) if not w[:, c[0]:c[1]].any()]
    assert untouched, "the case must leave some chunk without a wanted position"
    h_nan = np.asarray(h).copy()
    for c0, c1 in untouched:
        h_nan[:, c0:c1] = np.nan
    h_nan = jnp.asarray(h_nan)

    def loss(p, h, where):
        return jnp.sum(modeling.target_logprobs(cfg, p, h, targets, where))

    g = jax.jit(jax.grad(loss))(params, h_nan, where)
    assert np.isfinite(np.asarray(g["lm_head"])).all()
    # the same NaN rows with every position wanted do poison it: the check can fail
    g_all = jax.jit(jax.grad(loss))(params, h_nan, jnp.ones_like(where))
    assert not np.isfinite(np.asarray(g_all["lm_head"])).all()


def test_logits_chunk_is_validated():
    with pytest.raises(ConfigError, match="logits_chunk"):
        ModelConfig.tiny().with_runtime(logits_chunk=-1)


def test_sharded_equals_unsharded(case, mesh222):
    """(data, fsdp, tensor) = (2, 2, 2): rows over data x fsdp, the lm head's vocabulary over
    tensor; the per-chunk ``lax.cond`` predicate is then a reduction over sharded rows."""
    from vital_jax.models.qwen2_5_vl import param_shardings
    from vital_jax.sharding import named_sharding

    cfg, params, h, targets, where = case
    cfg = cfg.with_runtime(logits_chunk=8)
    h4 = jnp.concatenate([h, h[::-1]], axis=0)                  # 4 rows: one per data x fsdp shard
    t4 = jnp.concatenate([targets, targets[::-1]], axis=0)
    w4 = jnp.concatenate([where, jnp.zeros_like(where)], axis=0)

    def loss(p, h, t, w):
        lp, en = modeling.target_logprobs(cfg, p, h, t, w, with_entropy=True)
        return jnp.sum(lp) + jnp.sum(en), (lp, en)

    fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
    (want_l, want_aux), want_g = fn(params, h4, t4, w4)
    sp = jax.device_put(params, param_shardings(cfg, mesh222))
    assert sp["lm_head"].sharding.spec[1] == "tensor", sp["lm_head"].sharding.spec
    rows = named_sharding(mesh222, ("batch", None, None), h4.shape)
    rows2 = named_sharding(mesh222, ("batch", None), t4.shape)
    with jax.set_mesh(mesh222):
        (got_l, got_aux), got_g = fn(sp, jax.device_put(h4, rows), jax.device_put(t4, rows2), jax.device_put(w4, rows2))
    np.testing.assert_allclose(float(got_l), float(want_l), rtol=1e-5)
    for g, r in zip(jax.tree.leaves((got_aux, got_g)), jax.tree.leaves((want_aux, want_g))):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=2e-5)
