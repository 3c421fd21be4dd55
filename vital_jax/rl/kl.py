"""Per-token KL(π_θ ‖ π_ref) estimators from log-probs of the sampled tokens (Schulman's k1/k2/k3).

With ``δ = ref_logp - logp`` (log of π_ref/π_θ at the sampled token, which was drawn from π_θ):
- ``k1``: ``-δ``                      unbiased, high variance, can be negative;
- ``k2``: ``δ² / 2``                  biased, low variance, always ≥ 0;
- ``k3``: ``exp(δ) - δ - 1``          unbiased, low variance, always ≥ 0 (verl's ``low_var_kl``,
  used by VITAL with β = 0.01).

``δ`` is clamped to [-20, 20] inside ``k3`` only so ``exp`` cannot overflow; inputs in that range
are unaffected.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vital_jax.registry import Registry

KL_ESTIMATORS: Registry = Registry("KL estimator")

_K3_CLAMP = 20.0


@KL_ESTIMATORS.register("k1", "kl")
def k1(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    """k1: ``logp - ref_logp``."""
    return logp - ref_logp


@KL_ESTIMATORS.register("k2", "mse")
def k2(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    """k2: ``0.5 · (logp - ref_logp)²``."""
    d = logp - ref_logp
    return 0.5 * d * d


@KL_ESTIMATORS.register("k3", "low_var_kl")
def k3(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    """k3: ``exp(δ) - δ - 1`` with ``δ = clamp(ref_logp - logp, -20, 20)``."""
    d = jnp.clip(ref_logp - logp, -_K3_CLAMP, _K3_CLAMP)
    return jnp.exp(d) - d - 1.0


def kl(name: str, logp, ref_logp) -> jax.Array:
    """Per-token KL estimate ``[N, T]`` (same shape as the inputs) by estimator name."""
    logp = jnp.asarray(logp)
    ref_logp = jnp.asarray(ref_logp)
    if logp.shape != ref_logp.shape:
        raise ValueError(f"kl: `logp` {logp.shape} and `ref_logp` {ref_logp.shape} differ in shape")
    return KL_ESTIMATORS.get(name)(logp, ref_logp)
