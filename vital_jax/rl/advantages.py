"""Group advantage estimators: rewards ``[P, G]`` (P prompts × G rollouts) → advantages ``[P, G]``.

Conventions (shared with VITAL's verl code so numbers compare):
- group std is the *sample* std (ddof = 1) plus ``eps`` (default 1e-6);
- a group whose rewards are all equal carries no signal: its advantage is exactly 0 for every
  estimator (not merely ~0 after float round-off); :func:`zero_variance_groups` returns those
  groups so a trainer can drop or resample them (DAPO dynamic sampling);
- G = 1: the ddof = 1 std is undefined; we define it as 0, and the group is "all equal", so the
  advantage is 0 (no NaN). RLOO's leave-one-out baseline is likewise undefined and gives 0.

All functions are pure jnp and jittable; options are Python scalars (static).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vital_jax.registry import Registry

ADVANTAGES: Registry = Registry("advantage estimator")

DEFAULT_EPS = 1e-6


def _check(rewards) -> jax.Array:
    rewards = jnp.asarray(rewards)
    if rewards.ndim != 2:
        raise ValueError(
            f"advantages: `rewards` must be [P, G] (prompts × rollouts), got shape {rewards.shape}"
        )
    if not jnp.issubdtype(rewards.dtype, jnp.floating):
        rewards = rewards.astype(jnp.float32)
    return rewards


def group_mean(rewards: jax.Array) -> jax.Array:
    """Per-group mean, ``[P, 1]``."""
    return jnp.mean(rewards, axis=-1, keepdims=True)


def group_std(x: jax.Array) -> jax.Array:
    """Per-group sample std (ddof = 1), ``[P, 1]``; 0 when G = 1 or the group is constant.

    The square root is guarded so its gradient is finite (0) at zero variance: Reg-GRPO
    differentiates through this std.
    """
    g = x.shape[-1]
    if g < 2:
        return jnp.zeros(x.shape[:-1] + (1,), x.dtype)
    centred = x - jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.sum(centred * centred, axis=-1, keepdims=True) / (g - 1)
    positive = var > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, var, 1.0)), 0.0)


def zero_variance_groups(rewards) -> jax.Array:
    """``bool[P]``: True where every rollout of the prompt got the same reward (incl. G = 1).

    These groups give zero advantage; ``zero_variance_groups(r).sum()`` is the count DAPO's
    dynamic sampling filters on.
    """
    rewards = _check(rewards)
    return jnp.max(rewards, axis=-1) == jnp.min(rewards, axis=-1)


def _zero_constant_groups(adv: jax.Array, rewards: jax.Array) -> jax.Array:
    constant = zero_variance_groups(rewards)[:, None]
    return jnp.where(constant, jnp.zeros_like(adv), adv)


@ADVANTAGES.register("grpo")
def grpo(rewards, *, eps: float = DEFAULT_EPS) -> jax.Array:
    """GRPO: ``A_i = (r_i - mean(r)) / (std(r) + eps)``, std with ddof = 1, per group."""
    r = _check(rewards)
    adv = (r - group_mean(r)) / (group_std(r) + eps)
    return _zero_constant_groups(adv, r)


@ADVANTAGES.register("drgrpo", "dr_grpo")
def drgrpo(rewards) -> jax.Array:
    """Dr.GRPO: ``A_i = r_i - mean(r)`` (no std division, which biases toward easy/hard groups)."""
    r = _check(rewards)
    return _zero_constant_groups(r - group_mean(r), r)


@ADVANTAGES.register("rloo")
def rloo(rewards) -> jax.Array:
    """RLOO: ``A_i = r_i - mean_{j != i} r_j = G / (G - 1) · (r_i - mean(r))``; 0 when G = 1."""
    r = _check(rewards)
    g = r.shape[-1]
    if g < 2:
        return jnp.zeros_like(r)
    return _zero_constant_groups((r - group_mean(r)) * (g / (g - 1)), r)


@ADVANTAGES.register("dgrpo")
def dgrpo(rewards, *, full_marks: float = 2.0, eps: float = DEFAULT_EPS) -> jax.Array:
    """VITAL's difficulty-aware GRPO: the GRPO advantage times a per-group weight in [0.5, 1]::

        A_i = (r_i - mean(r)) / (std(r) + eps) · (clamp(full_marks - mean(r), 0, 1) + 1) / 2

    Harder prompts (low mean reward) weigh up to twice as much as solved ones. The weight is
    applied after normalisation (before it, it would cancel). ``full_marks`` defaults to 2, as in
    VITAL's code (which assumed a max reward of about 2; with the tool bonus it is 3).
    """
    r = _check(rewards)
    mean = group_mean(r)
    weight = (jnp.clip(full_marks - mean, 0.0, 1.0) + 1.0) / 2.0
    return grpo(r, eps=eps) * weight


def advantages(name: str, rewards, **options) -> jax.Array:
    """Group advantages ``[P, G]`` by estimator name (``grpo``, ``drgrpo``, ``rloo``, ``dgrpo``).

    ``options`` are the estimator's keyword arguments (``eps``; ``full_marks`` for ``dgrpo``).
    """
    fn = ADVANTAGES.get(name)
    try:
        return fn(rewards, **options)
    except TypeError as e:
        if "unexpected keyword" in str(e):
            raise TypeError(f"advantage estimator {name!r}: {e}") from None
        raise
