"""Policy losses vs NumPy references (hypothesis, random masks), gradients vs finite
differences (float64), jit/compile behaviour, degenerate cases."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.rl.reference import np_advantages, np_aggregate, np_entropy, np_policy_loss
from vital_jax import rl
from vital_jax.testing import CompileCounter

LOSSES = ["grpo", "dapo", "bnpo", "drgrpo", "gspo", "reg_grpo"]
METRICS = {"loss", "pg_loss", "kl", "kl_loss", "clip_fraction", "approx_kl", "ratio_mean", "masked_fraction"}


def make_batch(seed, n_groups, g, t, *, p_mask=0.3, empty_rows=True, spread=0.3, dtype=np.float32):
    rng = np.random.default_rng(seed)
    n = n_groups * g
    logp = -rng.exponential(1.0, size=(n, t))
    old = logp + spread * rng.standard_normal((n, t))
    ref = logp + spread * rng.standard_normal((n, t))
    sampler = old + 0.5 * rng.standard_normal((n, t))
    mask = (rng.random((n, t)) > p_mask).astype(dtype)
    if empty_rows and n > 1:
        mask[rng.integers(n)] = 0.0  # one fully masked row (e.g. a truncated episode)
    rewards = rng.integers(0, 5, size=(n_groups, g)) * 0.5
    adv = np_advantages("grpo", rewards).reshape(-1)
    cast = lambda a: np.asarray(a, dtype)  # noqa: E731
    return dict(logp=cast(logp), old_logp=cast(old), ref_logp=cast(ref), sampler_logp=cast(sampler),
                mask=mask, advantages=cast(adv), group_size=g)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n_groups=st.integers(1, 3),
    g=st.integers(1, 4),
    t=st.integers(1, 6),
    name=st.sampled_from(LOSSES),
    beta=st.sampled_from([0.0, 0.04]),
    kl_estimator=st.sampled_from(["k1", "k2", "k3"]),
    use_is=st.booleans(),
)
def test_policy_loss_matches_numpy(seed, n_groups, g, t, name, beta, kl_estimator, use_is):
    b = make_batch(seed, n_groups, g, t)
    sampler = b.pop("sampler_logp") if use_is and name != "reg_grpo" else None
    if sampler is None:
        b.pop("sampler_logp")
    loss, m = rl.policy_loss(name, beta=beta, kl_estimator=kl_estimator, sampler_logp=sampler, **b)
    ref_loss, ref_m = np_policy_loss(name, beta=beta, kl_estimator=kl_estimator, sampler_logp=sampler, **b)
    assert loss.dtype == jnp.float32 and loss.shape == ()
    assert METRICS <= set(m)
    # Reg-GRPO divides by the group std of the sequence log-ratio: scale the tolerance by it.
    tol = 1e-6 if name != "reg_grpo" else 2e-6 * max(1.0, abs(ref_loss))
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5, atol=tol)
    for k in ("pg_loss", "kl", "ratio_mean", "approx_kl", "masked_fraction"):
        np.testing.assert_allclose(float(m[k]), ref_m[k], rtol=1e-5, atol=max(tol, 1e-6), err_msg=k)
    if "clip_fraction" in ref_m:
        np.testing.assert_allclose(float(m["clip_fraction"]), ref_m["clip_fraction"], atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    t=st.integers(1, 6),
    aggregation=st.sampled_from(["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"]),
    epsilon=st.sampled_from([0.1, 0.2]),
    epsilon_high=st.sampled_from([None, 0.28]),
    clip_c=st.sampled_from([None, 3.0]),
    per_token_adv=st.booleans(),
)
def test_clip_options_and_aggregations(seed, t, aggregation, epsilon, epsilon_high, clip_c, per_token_adv):
    b = make_batch(seed, 2, 3, t, spread=1.0)  # large spread: clipping and dual clip both fire
    b.pop("sampler_logp"), b.pop("ref_logp")
    if per_token_adv:
        rng = np.random.default_rng(seed + 1)
        b["advantages"] = rng.standard_normal(b["logp"].shape).astype(np.float32)
    opts = dict(epsilon=epsilon, epsilon_high=epsilon_high, clip_c=clip_c, aggregation=aggregation)
    loss, m = rl.policy_loss("grpo", **opts, **b)
    ref, ref_m = np_policy_loss("grpo", **opts, **b)
    np.testing.assert_allclose(float(loss), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(m["clip_fraction"]), ref_m["clip_fraction"], atol=1e-6)
    assert ("dual_clip_fraction" in m) == (clip_c is not None)


def test_presets_are_aggregation_choices():
    b = make_batch(0, 2, 4, 5, spread=0.5)
    b.pop("sampler_logp"), b.pop("ref_logp")
    grpo = lambda **o: float(rl.policy_loss("grpo", **o, **b)[0])  # noqa: E731
    assert float(rl.policy_loss("drgrpo", **b)[0]) == pytest.approx(grpo(aggregation="seq_mean_token_sum_norm"), rel=1e-6)
    assert float(rl.policy_loss("dapo", **b)[0]) == pytest.approx(grpo(epsilon_high=0.28), rel=1e-6)
    assert float(rl.policy_loss("bnpo", **b)[0]) == pytest.approx(grpo(), rel=1e-6)
    assert float(rl.policy_loss("dgrpo", **b)[0]) == pytest.approx(grpo(), rel=1e-6)
    # a preset's aggregation can be overridden, and Dr.GRPO's constant length is an option
    assert float(rl.policy_loss("drgrpo", aggregation="token_mean", **b)[0]) == pytest.approx(grpo(), rel=1e-6)
    l20 = float(rl.policy_loss("drgrpo", max_length=20, **b)[0])
    assert l20 == pytest.approx(grpo(aggregation="seq_mean_token_sum_norm") * 5 / 20, rel=1e-6)
    # token_count: normalise by a global count (micro-batching)
    n_tok = float(b["mask"].sum())
    assert float(rl.policy_loss("grpo", token_count=4 * n_tok, **b)[0]) == pytest.approx(grpo() / 4, rel=1e-6)


def test_aggregate_matches_numpy():
    rng = np.random.default_rng(3)
    loss = rng.standard_normal((5, 4)).astype(np.float32)
    mask = (rng.random((5, 4)) > 0.4).astype(np.float32)
    mask[2] = 0
    for name in rl.AGGREGATIONS.names():
        np.testing.assert_allclose(float(rl.aggregate(name, loss, mask)), np_aggregate(name, loss, mask), rtol=1e-6)


def test_entropy_metric_and_bonus():
    b = make_batch(1, 2, 2, 3)
    b.pop("sampler_logp")
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 3, 11)).astype(np.float32) * 3
    _, m = rl.policy_loss("grpo", logits=logits, **b)
    ent = np_entropy(logits)
    ref = (ent * b["mask"]).sum() / b["mask"].sum()
    np.testing.assert_allclose(float(m["entropy"]), ref, rtol=1e-5)
    loss_bonus, _ = rl.policy_loss("grpo", logits=logits, entropy_coef=0.1, **b)
    np.testing.assert_allclose(float(loss_bonus), float(m["loss"]) - 0.1 * ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="needs `logits`"):
        rl.policy_loss("grpo", entropy_coef=0.1, **b)


def test_truncated_is_weights_are_constants_capped():
    b = make_batch(2, 2, 2, 4)
    b.pop("ref_logp")
    sampler = b.pop("sampler_logp")
    _, m = rl.policy_loss("grpo", sampler_logp=sampler, is_cap=1.5, **b)
    raw = np.exp(b["old_logp"] - sampler)
    np.testing.assert_allclose(float(m["is_weight_mean"]), (np.minimum(raw, 1.5) * b["mask"]).sum() / b["mask"].sum(), rtol=1e-5)
    np.testing.assert_allclose(float(m["is_clip_fraction"]), ((raw > 1.5) * b["mask"]).sum() / b["mask"].sum(), atol=1e-6)
    # the weights carry no gradient to old_logp/sampler_logp
    g = jax.grad(lambda s: rl.policy_loss("grpo", sampler_logp=s, **b)[0])(jnp.asarray(sampler))
    assert np.all(np.asarray(g) == 0.0)
    with pytest.raises(ValueError, match="does not apply"):
        rl.policy_loss("reg_grpo", sampler_logp=sampler, **b)


# --------------------------------------------------------------------------- gradients


def _finite_difference(f, x, h=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2 * h)
    return g


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("kl_estimator", ["k1", "k2", "k3"])
def test_gradient_matches_finite_differences(name, kl_estimator):
    with jax.enable_x64(True):
        b = make_batch(7, 2, 2, 3, p_mask=0.2, spread=0.4, dtype=np.float64)
        b.pop("sampler_logp")
        logp = b.pop("logp")
        opts = dict(beta=0.05, kl_estimator=kl_estimator, clip_c=3.0) if name != "reg_grpo" else dict(beta=0.05, kl_estimator=kl_estimator)
        if name == "gspo":
            opts.update(epsilon=0.02, epsilon_high=0.03)  # some sequences inside, some outside the clip
        f = jax.jit(lambda lp: rl.policy_loss(name, logp=lp, **opts, **b)[0])
        g = np.asarray(jax.grad(f)(logp))
        fd = _finite_difference(lambda lp: float(f(lp)), logp)
        assert g.dtype == np.float64
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
        # masked tokens get no gradient
        assert np.all(g[b["mask"] == 0] == 0.0)


def test_entropy_bonus_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        b = make_batch(4, 1, 2, 2, dtype=np.float64)
        b.pop("sampler_logp")
        logits = np.random.default_rng(0).standard_normal((2, 2, 5))
        f = jax.jit(lambda z: rl.policy_loss("grpo", logits=z, entropy_coef=0.3, **b)[0])
        np.testing.assert_allclose(np.asarray(jax.grad(f)(logits)), _finite_difference(lambda z: float(f(z)), logits), rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------- jit, degenerate cases


def test_jit_compiles_once_and_equals_eager():
    b = make_batch(5, 2, 4, 6)
    f = jax.jit(functools.partial(rl.policy_loss, "dapo", group_size=4, beta=0.01, clip_c=3.0))
    arrays = {k: b[k] for k in ("logp", "old_logp", "advantages", "mask", "ref_logp", "sampler_logp")}
    with CompileCounter() as cc:
        for shift in (0.0, 0.1, 0.2):
            loss, m = f(**{**arrays, "logp": arrays["logp"] + shift})
    assert cc.count == 1
    eager, em = rl.policy_loss("dapo", beta=0.01, clip_c=3.0, **{**b, "logp": b["logp"] + 0.2})
    np.testing.assert_allclose(float(loss), float(eager), rtol=1e-6)
    for k in em:
        np.testing.assert_allclose(float(m[k]), float(em[k]), rtol=1e-5, atol=1e-7, err_msg=k)


@pytest.mark.parametrize("name", LOSSES)
def test_degenerate_inputs_are_finite(name):
    cases = {
        "fully_masked": make_batch(0, 2, 2, 4, p_mask=1.1),
        "group_size_1": make_batch(1, 3, 1, 4),
        "length_1": make_batch(2, 2, 2, 1, p_mask=0.0, empty_rows=False),
        "on_policy": {**make_batch(3, 2, 3, 4), "old_logp": make_batch(3, 2, 3, 4)["logp"]},
        "zero_adv": {**make_batch(4, 2, 2, 3), "advantages": np.zeros(4, np.float32)},
    }
    for case, b in cases.items():
        b = dict(b)
        b.pop("sampler_logp")
        beta = 0.0 if case == "group_size_1" else 0.01
        rest = {k: v for k, v in b.items() if k not in ("logp", "group_size")}
        fn = jax.jit(jax.value_and_grad(
            lambda lp, rest: rl.policy_loss(name, logp=lp, group_size=b["group_size"], beta=beta, **rest),
            has_aux=True))
        (loss, m), g = fn(jnp.asarray(b["logp"]), rest)
        assert np.isfinite(float(loss)), (case, loss)
        assert all(np.isfinite(float(v)) for v in m.values()), (case, m)
        assert np.all(np.isfinite(np.asarray(g))), case
        if case == "fully_masked":
            # nothing to learn from: no gradient; the loss is 0 except Reg-GRPO's, which is
            # mean(A²) (its predicted advantage is 0 for every row, and all N rows count)
            expected = 0.0 if name != "reg_grpo" else float(np.mean(b["advantages"] ** 2))
            assert float(loss) == pytest.approx(expected, abs=1e-7) and float(m["masked_fraction"]) == 1.0
            assert np.all(np.asarray(g) == 0.0)
        if case == "group_size_1" and name == "reg_grpo":
            # one rollout per prompt: the normalised log-ratio is 0 and carries no gradient
            assert np.all(np.asarray(g) == 0.0)


def test_bfloat16_inputs_compute_in_float32():
    b = make_batch(6, 2, 2, 5)
    b.pop("sampler_logp")
    low = {k: (v.astype(jnp.bfloat16) if k in ("logp", "old_logp", "ref_logp") else v) for k, v in b.items()}
    loss, m = rl.policy_loss("grpo", beta=0.01, **low)
    assert loss.dtype == jnp.float32 and all(v.dtype == jnp.float32 for v in m.values())
    up = {k: (np.asarray(v, np.float32) if k in ("logp", "old_logp", "ref_logp") else v) for k, v in low.items()}
    np.testing.assert_allclose(float(loss), float(rl.policy_loss("grpo", beta=0.01, **up)[0]), rtol=1e-6)


def test_reg_grpo_matches_the_paper_form():
    # G = 3, one group; ρ_i = Σ_t (logp - old): choose rows so ρ = (1, 2, 3) exactly.
    logp = np.array([[1.0, 0.0], [1.0, 1.0], [2.0, 1.0]], np.float32)
    old = np.zeros_like(logp)
    target = np.array([-1.0, 0.0, 1.0], np.float32)  # equals the normalised ρ (std of 1,2,3 is 1)
    loss, _ = rl.policy_loss("reg_grpo", logp=logp, old_logp=old, advantages=target, mask=np.ones_like(logp), group_size=3)
    assert float(loss) == pytest.approx(0.0, abs=1e-10)
    loss2, _ = rl.policy_loss("reg_grpo", logp=logp, old_logp=old, advantages=-target, mask=np.ones_like(logp), group_size=3)
    assert float(loss2) == pytest.approx(((2 * target / (1 + 1e-6)) ** 2).mean(), rel=1e-5)


def test_input_validation_errors():
    b = make_batch(0, 2, 2, 3)
    b.pop("sampler_logp")
    with pytest.raises(ValueError, match="group_size"):
        rl.policy_loss("grpo", **{**b, "group_size": 3})
    with pytest.raises(ValueError, match=r"`advantages` must be \[N\]"):
        rl.policy_loss("grpo", **{**b, "advantages": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="per sequence"):
        rl.policy_loss("gspo", **{**b, "advantages": np.zeros((4, 3), np.float32)})
    with pytest.raises(ValueError, match=r"must all be \[N, T\]"):
        rl.policy_loss("grpo", **{**b, "mask": np.ones((4, 2), np.float32)})
    with pytest.raises(KeyError, match="known: bnpo, dapo, drgrpo, grpo, gspo, reg_grpo"):
        rl.policy_loss("ppo2", **b)
    with pytest.raises(KeyError, match="KL estimator"):
        rl.policy_loss("grpo", kl_estimator="k4", **b)
    with pytest.raises(TypeError, match="epsilon_hgih"):
        rl.policy_loss("grpo", epsilon_hgih=0.3, **b)
    with pytest.raises(TypeError, match="clip_c"):
        rl.policy_loss("reg_grpo", clip_c=3.0, **b)
    with pytest.raises(ValueError, match="clip_c"):
        rl.policy_loss("grpo", clip_c=0.5, **b)
    with pytest.raises(KeyError, match="loss aggregation"):
        rl.policy_loss("grpo", aggregation="sum", **b)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ref = b.pop("ref_logp")
        loss, m = rl.policy_loss("grpo", beta=0.1, **b)
        assert float(m["kl"]) == 0.0 and any("no KL term" in str(x.message) for x in w)
        b["ref_logp"] = ref


def test_kl_term_is_beta_times_token_mean():
    b = make_batch(9, 2, 2, 5)
    b.pop("sampler_logp")
    base, _ = rl.policy_loss("grpo", **b)
    with_kl, m = rl.policy_loss("grpo", beta=0.1, kl_estimator="k2", **b)
    kl_tok = 0.5 * (b["logp"].astype(np.float64) - b["ref_logp"]) ** 2
    kl_mean = (kl_tok * b["mask"]).sum() / b["mask"].sum()
    np.testing.assert_allclose(float(with_kl) - float(base), 0.1 * kl_mean, rtol=1e-5)
    np.testing.assert_allclose(float(m["kl_loss"]), 0.1 * kl_mean, rtol=1e-5)


@pytest.mark.parametrize("name", ["grpo", "drgrpo", "gspo", "reg_grpo"])
def test_sharded_batch_equals_unsharded(mesh222, name):
    """Rows sharded over (data, fsdp) and time over tensor: the token mean is still global."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    b = make_batch(11, 2, 4, 8)  # N = 8 rows, T = 8
    b.pop("sampler_logp")
    g = b.pop("group_size")
    f = jax.jit(functools.partial(rl.policy_loss, name, group_size=g, beta=0.02))
    expected, em = f(**b)
    rows_time = NamedSharding(mesh222, P(("data", "fsdp"), "tensor"))
    rows = NamedSharding(mesh222, P(("data", "fsdp")))
    sharded = {k: jax.device_put(v, rows if v.ndim == 1 else rows_time) for k, v in b.items()}
    got, gm = f(**sharded)
    np.testing.assert_allclose(float(got), float(expected), rtol=1e-6, atol=1e-7)
    for k in em:
        np.testing.assert_allclose(float(gm[k]), float(em[k]), rtol=1e-5, atol=1e-7, err_msg=k)
