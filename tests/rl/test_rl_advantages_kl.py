"""Group advantages and KL estimators vs plain NumPy references (hypothesis), plus degenerate cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.rl.reference import np_advantages, np_group_std, np_kl
from vital_jax import rl

ESTIMATORS = ["grpo", "drgrpo", "rloo", "dgrpo"]


def _rewards(seed, p, g, kind):
    rng = np.random.default_rng(seed)
    if kind == "discrete":  # realistic: sums of 0 / 0.5 / 1 components, many ties
        r = rng.integers(0, 7, size=(p, g)) * 0.5
    else:
        r = rng.uniform(-3, 3, size=(p, g))
    # Make some groups constant.
    r[rng.random(p) < 0.3] = r[0, 0]
    return r.astype(np.float32)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    p=st.integers(1, 5),
    g=st.integers(1, 8),
    kind=st.sampled_from(["discrete", "uniform"]),
    name=st.sampled_from(ESTIMATORS),
)
def test_advantages_match_numpy(seed, p, g, kind, name):
    r = _rewards(seed, p, g, kind)
    out = np.asarray(rl.advantages(name, r))
    ref = np_advantages(name, r)
    assert out.dtype == np.float32 and out.shape == (p, g)
    # f32 error of (r - mean) is ~1e-7·|r|; GRPO divides it by the group std: scale the
    # tolerance by that conditioning so near-tied continuous groups stay honest.
    std = np_group_std(r.astype(np.float64))
    cond = np.max(np.abs(r)) / (std.min() + 1e-6) if name in ("grpo", "dgrpo") else np.max(np.abs(r))
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6 * max(1.0, cond))


@pytest.mark.parametrize("name", ESTIMATORS)
def test_constant_groups_are_exactly_zero(name):
    # 0.1 * 3 / 3 != 0.1 in floating point: a naive (r - mean) would leave ~1e-8 / 1e-6 ≈ 0.01.
    r = np.array([[0.1, 0.1, 0.1], [1.7, 1.7, 1.7], [0.0, 1.0, 2.0]], np.float32)
    out = np.asarray(rl.advantages(name, r))
    assert np.all(out[:2] == 0.0)
    assert out[2, 0] < 0 < out[2, 2]
    np.testing.assert_array_equal(np.asarray(rl.zero_variance_groups(r)), [True, True, False])
    assert int(rl.zero_variance_groups(r).sum()) == 2


@pytest.mark.parametrize("name", ESTIMATORS)
def test_group_size_one_is_zero_not_nan(name):
    r = np.array([[0.3], [2.0]], np.float32)
    out = np.asarray(rl.advantages(name, r))
    np.testing.assert_array_equal(out, np.zeros((2, 1)))
    assert bool(rl.zero_variance_groups(r).all())


def test_dgrpo_weights_hard_prompts_more():
    r = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)  # same spread, different difficulty
    a = np.asarray(rl.advantages("dgrpo", r))
    g = np.asarray(rl.advantages("grpo", r))
    np.testing.assert_allclose(a[0], g[0] * 1.0, rtol=1e-6)  # mean 0.5: clamp(1.5) = 1 -> weight 1
    np.testing.assert_allclose(a[1], g[1] * 0.5, rtol=1e-6)  # mean 2.5: clamp(-0.5) = 0 -> 0.5
    a3 = np.asarray(rl.advantages("dgrpo", r, full_marks=3.0))
    np.testing.assert_allclose(a3[1], g[1] * 0.75, rtol=1e-6)  # clamp(0.5) = 0.5 -> 0.75


def test_advantages_jit_and_errors():
    r = jnp.arange(12.0).reshape(3, 4) % 5
    f = jax.jit(lambda x: rl.advantages("grpo", x, eps=1e-6))
    np.testing.assert_allclose(f(r), rl.advantages("grpo", r), rtol=1e-6)
    with pytest.raises(ValueError, match=r"\[P, G\]"):
        rl.advantages("grpo", jnp.ones(4))
    with pytest.raises(KeyError, match="known: dgrpo, drgrpo, grpo, rloo"):
        rl.advantages("ppo_gae", r)
    with pytest.raises(TypeError, match="full_marks"):
        rl.advantages("grpo", r, full_marks=3.0)
    # integer rewards are accepted
    assert rl.advantages("drgrpo", np.array([[0, 1]])).dtype == jnp.float32


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 4),
    t=st.integers(1, 7),
    name=st.sampled_from(["k1", "k2", "k3"]),
    spread=st.sampled_from([0.01, 0.5, 3.0]),
)
def test_kl_matches_numpy(seed, n, t, name, spread):
    rng = np.random.default_rng(seed)
    logp = -rng.exponential(1.0, size=(n, t)).astype(np.float32)
    ref = (logp + spread * rng.standard_normal((n, t))).astype(np.float32)
    out = np.asarray(rl.kl(name, logp, ref))
    assert out.shape == (n, t)
    np.testing.assert_allclose(out, np_kl(name, logp, ref), rtol=1e-5, atol=1e-6)
    if name in ("k2", "k3"):
        assert np.all(out >= -1e-7)


def test_kl_aliases_and_shape_errors():
    a, b = jnp.zeros((2, 3)), jnp.full((2, 3), -0.5)
    np.testing.assert_array_equal(rl.kl("low_var_kl", a, b), rl.kl("k3", a, b))
    with pytest.raises(ValueError, match="differ in shape"):
        rl.kl("k1", a, jnp.zeros((3, 2)))
    # k3 stays finite for wildly different log-probs (clamp only beyond |δ| = 20).
    assert np.isfinite(np.asarray(rl.kl("k3", jnp.full((1, 1), -200.0), jnp.zeros((1, 1))))).all()
