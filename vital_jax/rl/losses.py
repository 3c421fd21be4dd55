"""Policy losses: PPO-clip family (GRPO, DAPO, Dr.GRPO, BNPO), GSPO, Reg-GRPO; KL term; TIS.

Inputs (all ``[N, T]`` unless said): ``logp`` of the current policy at the sampled tokens,
``old_logp`` of the behaviour policy (the trainer's recomputation at rollout time), a loss ``mask``
(1 on policy tokens; observation/tool-result and padding tokens 0), ``advantages`` ``[N]`` (or
``[N, T]`` for the token-level surrogates), and the group size G (rows ``g*G … g*G+G-1`` are one
prompt's rollouts, as :func:`vital_jax.rl.advantages` flattened row-major gives them).

``policy_loss(name, ...)`` = surrogate (aggregated) + β · token-mean KL − entropy_coef · entropy.
Everything is pure jnp; option values are Python scalars/strings, so wrap the call in
``jax.jit`` with the options bound (``functools.partial``) and the arrays as arguments.

Numerical guards (documented, not hidden): per-token log-ratios are clamped to [-20, 20] before
``exp`` (as verl does); empty rows and fully masked batches give 0 loss and finite gradients.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vital_jax.rl.advantages import DEFAULT_EPS, group_std
from vital_jax.rl.kl import KL_ESTIMATORS
from vital_jax.registry import Registry

# Each policy loss declares (``POLICY_LOSSES.info(name)``) what a trainer must know to call it:
#   clip:        "token" (the PPO ratio per token: takes the run's epsilon / epsilon_high),
#                "sequence" (GSPO: its own, much smaller, range on a sequence ratio), None (no clip);
#   aggregation: its default reduction ("token_mean" divides by the global token count), or None
#                when the loss fixes its own (Reg-GRPO: a mean over rows) and takes no option;
#   tis:         False when truncated importance sampling does not apply (default True).
POLICY_LOSSES: Registry = Registry("policy loss")
AGGREGATIONS: Registry = Registry("loss aggregation")

_LOG_RATIO_CLAMP = 20.0
DEFAULT_IS_CAP = 2.0


class LossInputs(NamedTuple):
    logp: jax.Array  # [N, T] f32
    old_logp: jax.Array  # [N, T]
    advantages: jax.Array  # [N, 1] or [N, T]
    mask: jax.Array  # [N, T] f32 in {0, 1}
    group_size: int
    is_weight: jax.Array  # [N, T] truncated IS weights (stop-gradient), ones when off


# --------------------------------------------------------------------------- aggregation


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


@AGGREGATIONS.register("token_mean")
def token_mean(loss, mask, *, max_length=None, token_count=None):
    """``Σ_{i,t} m·ℓ / Σ_{i,t} m`` over the whole (global) batch — verl's default, VITAL's choice.

    ``token_count`` overrides the denominator (e.g. the global token count when a trainer
    accumulates gradients over micro-batches). 0 when nothing is unmasked.
    """
    denom = jnp.maximum(jnp.sum(mask), 1.0) if token_count is None else token_count
    return jnp.sum(loss * mask) / denom


@AGGREGATIONS.register("seq_mean_token_mean")
def seq_mean_token_mean(loss, mask, *, max_length=None, token_count=None):
    """``mean_i ( Σ_t m·ℓ / Σ_t m )`` over the rows with at least one policy token (original
    GRPO paper). Fully masked rows are left out of the mean; 0 if every row is empty."""
    lengths = jnp.sum(mask, axis=-1)
    per_row = jnp.sum(loss * mask, axis=-1) / jnp.maximum(lengths, 1.0)
    valid = (lengths > 0).astype(per_row.dtype)
    return jnp.sum(per_row * valid) / jnp.maximum(jnp.sum(valid), 1.0)


@AGGREGATIONS.register("seq_mean_token_sum_norm")
def seq_mean_token_sum_norm(loss, mask, *, max_length=None, token_count=None):
    """Dr.GRPO: ``mean_i ( Σ_t m·ℓ ) / L`` with a constant L (``max_length``, default T), so no
    length bias: ``Σ_{i,t} m·ℓ / (N · L)``. Every row counts in N."""
    n, t = mask.shape
    length = t if max_length is None else max_length
    return jnp.sum(loss * mask) / (n * length)


def aggregate(name: str, loss, mask, *, max_length=None, token_count=None) -> jax.Array:
    """Reduce a per-token loss ``[N, T]`` to a scalar by aggregation name."""
    return AGGREGATIONS.get(name)(loss, mask, max_length=max_length, token_count=token_count)


# --------------------------------------------------------------------------- surrogates


def _log_ratio(x: LossInputs) -> jax.Array:
    return jnp.clip(x.logp - x.old_logp, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)


def _common_metrics(x: LossInputs, log_ratio: jax.Array) -> dict:
    ratio = jnp.exp(log_ratio)
    return {
        "ratio_mean": _masked_mean(ratio, x.mask),
        # k3 estimate of KL(π_old ‖ π_θ) on the sampled tokens.
        "approx_kl": _masked_mean(ratio - 1.0 - log_ratio, x.mask),
    }


def _check_eps(epsilon, epsilon_high):
    hi = epsilon if epsilon_high is None else epsilon_high
    if not (0.0 <= epsilon < 1.0) or hi < 0.0:
        raise ValueError(f"policy loss: need 0 <= epsilon < 1 and epsilon_high >= 0, got {epsilon}, {hi}")
    return hi


def _dual_clip(loss, adv, clip_c):
    """Dual clip: cap the loss of negative-advantage samples at ``-A·c`` (huge ratios)."""
    if clip_c is None:
        return loss
    if clip_c <= 1.0:
        raise ValueError(f"policy loss: dual-clip `clip_c` must be > 1, got {clip_c}")
    return jnp.where(adv < 0, jnp.minimum(loss, -adv * clip_c), loss)


def _ppo_clip(
    x: LossInputs,
    *,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    clip_c: float | None = None,
    aggregation: str = "token_mean",
    max_length: int | None = None,
    token_count=None,
):
    eps_hi = _check_eps(epsilon, epsilon_high)
    log_ratio = _log_ratio(x)
    ratio = jnp.exp(log_ratio)
    adv = x.advantages
    unclipped = -adv * ratio
    clipped = -adv * jnp.clip(ratio, 1.0 - epsilon, 1.0 + eps_hi)
    loss = jnp.maximum(unclipped, clipped)
    metrics = _common_metrics(x, log_ratio)
    metrics["clip_fraction"] = _masked_mean((clipped > unclipped).astype(loss.dtype), x.mask)
    if clip_c is not None:
        dual = (adv < 0) & (loss > -adv * clip_c)
        metrics["dual_clip_fraction"] = _masked_mean(dual.astype(loss.dtype), x.mask)
    loss = _dual_clip(loss, adv, clip_c)
    loss = loss * x.is_weight
    pg = aggregate(aggregation, loss, x.mask, max_length=max_length, token_count=token_count)
    return pg, metrics


@POLICY_LOSSES.register("grpo", "dgrpo", "ppo", clip="token", aggregation="token_mean")
def grpo_loss(x: LossInputs, **options):
    """PPO-clip surrogate per token, token-mean over the global batch (verl/VITAL default)::

        r = exp(logp - old_logp)
        ℓ = max(-A·r, -A·clip(r, 1-ε, 1+ε_high))          (ε = 0.2, ε_high = ε by default)
        dual clip (clip_c = c > 1): ℓ = min(ℓ, -A·c) where A < 0
        loss = aggregate(ℓ · w_IS)

    Options: epsilon, epsilon_high, clip_c, aggregation, max_length, token_count.
    """
    return _ppo_clip(x, **{"aggregation": "token_mean", **options})


@POLICY_LOSSES.register("dapo", clip="token", aggregation="token_mean")
def dapo_loss(x: LossInputs, **options):
    """DAPO: the GRPO surrogate with clip-higher (ε = 0.2, ε_high = 0.28 by default) and
    token-mean aggregation over all policy tokens of the batch. (Dynamic sampling is the
    trainer's: see :func:`vital_jax.rl.zero_variance_groups`; DAPO runs with β = 0.)"""
    return _ppo_clip(x, **{"aggregation": "token_mean", "epsilon_high": 0.28, **options})


@POLICY_LOSSES.register("bnpo", clip="token", aggregation="token_mean")
def bnpo_loss(x: LossInputs, **options):
    """BNPO (batch-normalised): the GRPO surrogate, token-mean over the tokens of the batch it is
    given (use ``token_count`` to normalise by a global count instead)."""
    return _ppo_clip(x, **{"aggregation": "token_mean", **options})


@POLICY_LOSSES.register("drgrpo", "dr_grpo", clip="token", aggregation="seq_mean_token_sum_norm")
def drgrpo_loss(x: LossInputs, **options):
    """Dr.GRPO: the GRPO surrogate summed over tokens and divided by a constant length::

        loss = Σ_{i,t} m·ℓ / (N · L),   L = max_length (default T)
    """
    return _ppo_clip(x, **{"aggregation": "seq_mean_token_sum_norm", **options})


def _per_sequence_advantage(x: LossInputs, loss_name: str) -> jax.Array:
    if x.advantages.shape[-1] != 1:
        raise ValueError(
            f"policy loss {loss_name!r}: `advantages` must be per sequence, shape [N], "
            f"got per-token shape {x.advantages.shape}"
        )
    return x.advantages[:, 0]


@POLICY_LOSSES.register("gspo", clip="sequence", aggregation="seq_mean_token_mean")
def gspo_loss(
    x: LossInputs,
    *,
    epsilon: float = 3e-4,
    epsilon_high: float | None = 4e-4,
    clip_c: float | None = None,
    aggregation: str = "seq_mean_token_mean",
    max_length: int | None = None,
    token_count=None,
):
    """GSPO: one length-normalised importance ratio per sequence, clipped::

        s_i = exp( Σ_t m·(logp - old_logp) / Σ_t m )
        ℓ_i = max(-A_i·s_i, -A_i·clip(s_i, 1-ε, 1+ε_high))     (ε = 3e-4, ε_high = 4e-4)
        dual clip (clip_c = c > 1): ℓ_i = min(ℓ_i, -A_i·c) where A_i < 0
        loss = aggregate(ℓ_i broadcast over the row's tokens · w_IS)   (default: mean over rows)

    Empty rows have s = 1 and are left out by the default aggregation.
    """
    eps_hi = _check_eps(epsilon, epsilon_high)
    adv = _per_sequence_advantage(x, "gspo")
    log_ratio = _log_ratio(x)
    lengths = jnp.sum(x.mask, axis=-1)
    seq_log_ratio = jnp.sum(log_ratio * x.mask, axis=-1) / jnp.maximum(lengths, 1.0)
    s = jnp.exp(jnp.clip(seq_log_ratio, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP))
    unclipped = -adv * s
    clipped = -adv * jnp.clip(s, 1.0 - epsilon, 1.0 + eps_hi)
    seq_loss = jnp.maximum(unclipped, clipped)  # [N]
    seq_loss = _dual_clip(seq_loss, adv, clip_c)
    loss = seq_loss[:, None] * x.is_weight
    pg = aggregate(aggregation, loss, x.mask, max_length=max_length, token_count=token_count)
    metrics = _common_metrics(x, log_ratio)
    valid = (lengths > 0).astype(s.dtype)
    n_valid = jnp.maximum(jnp.sum(valid), 1.0)
    metrics["clip_fraction"] = jnp.sum((clipped > unclipped) * valid) / n_valid
    metrics["seq_ratio_mean"] = jnp.sum(s * valid) / n_valid
    return pg, metrics


@POLICY_LOSSES.register("reg_grpo", "reggrpo", clip=None, aggregation=None, tis=False)
def reg_grpo_loss(x: LossInputs, *, eps: float = DEFAULT_EPS):
    """Reg-GRPO (DeepVideo-R1): regress the group-normalised sequence log-ratio on the target::

        ρ_i  = Σ_t m·(logp - old_logp)                       (sequence log-ratio)
        Â_θ,i = (ρ_i - mean_g(ρ)) / (std_g(ρ) + eps)          (per group of G, ddof = 1)
        loss = mean over all N rows of (A_i - Â_θ,i)²

    ``advantages`` here is the TARGET Â_i = (R_i - mean(R)) / (std(R) + eps), i.e. what
    ``advantages("grpo", rewards).reshape(-1)`` returns. No clip, no min, no IS weights.

    Pitfall: when ρ is exactly constant within a group (e.g. the first on-policy step, where
    old_logp == logp), std(ρ) = 0 and the gradient is scaled by 1/eps; the std's own gradient
    is defined as 0 there (no NaN). G = 1 gives Â_θ = 0 and zero gradient.
    """
    target = _per_sequence_advantage(x, "reg_grpo")
    n, g = x.mask.shape[0], x.group_size
    rho = jnp.sum((x.logp - x.old_logp) * x.mask, axis=-1).reshape(n // g, g)
    pred = (rho - jnp.mean(rho, axis=-1, keepdims=True)) / (group_std(rho) + eps)
    err = target.reshape(n // g, g) - pred
    pg = jnp.mean(err * err)
    metrics = _common_metrics(x, _log_ratio(x))
    metrics["clip_fraction"] = jnp.zeros((), pg.dtype)
    metrics["reg_mse"] = pg
    return pg, metrics


# --------------------------------------------------------------------------- front door


def _entropy(logits: jax.Array) -> jax.Array:
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    logz = jax.nn.logsumexp(logits, axis=-1, keepdims=True)
    logp = logits - logz
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def policy_loss(
    name: str,
    *,
    logp,
    old_logp,
    advantages,
    mask,
    group_size: int,
    ref_logp=None,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    sampler_logp=None,
    is_cap: float | None = None,
    logits=None,
    entropy_coef: float = 0.0,
    **options,
) -> tuple[jax.Array, dict]:
    """Scalar policy loss and metrics, by loss name (``grpo``/``dgrpo``, ``dapo``, ``bnpo``,
    ``drgrpo``, ``gspo``, ``reg_grpo``).

    - ``beta``, ``kl_estimator`` (``k1``/``k2``/``k3``): adds ``β · token_mean(kl(logp, ref_logp))``
      over policy tokens; no KL term when ``beta == 0`` or ``ref_logp is None``.
    - ``sampler_logp`` (+ ``is_cap``, default 2): truncated importance sampling for the
      sampler/trainer mismatch: each token's loss is weighted by the constant
      ``min(exp(old_logp - sampler_logp), is_cap)`` (not for ``reg_grpo``).
    - ``logits`` ``[N, T, V]``: reports the token-mean entropy; ``entropy_coef`` subtracts it.
    - ``options``: the loss's own (``epsilon``, ``epsilon_high``, ``clip_c``, ``aggregation``,
      ``max_length``, ``token_count``; ``eps`` for ``reg_grpo``).

    Metrics: ``loss``, ``pg_loss``, ``kl``, ``kl_loss``, ``clip_fraction``, ``approx_kl``,
    ``ratio_mean``, ``masked_fraction`` (share of mask-0 tokens), plus ``entropy``,
    ``is_weight_mean``/``is_clip_fraction``, ``dual_clip_fraction`` when those apply.
    """
    canonical = POLICY_LOSSES.canonical(name)
    fn = POLICY_LOSSES.get(canonical)
    logp = jnp.asarray(logp)
    dtype = jnp.promote_types(logp.dtype, jnp.float32)
    logp = logp.astype(dtype)
    old_logp = jnp.asarray(old_logp, dtype)
    mask = jnp.asarray(mask).astype(dtype)
    if logp.ndim != 2 or old_logp.shape != logp.shape or mask.shape != logp.shape:
        raise ValueError(
            f"policy_loss({name!r}): `logp` {logp.shape}, `old_logp` {old_logp.shape} and `mask` "
            f"{mask.shape} must all be [N, T]"
        )
    n = logp.shape[0]
    if not isinstance(group_size, int) or group_size < 1 or n % group_size:
        raise ValueError(
            f"policy_loss({name!r}): `group_size` must be a positive int dividing N = {n}, "
            f"got {group_size!r}"
        )
    adv = jnp.asarray(advantages, dtype)
    if adv.shape == (n,):
        adv = adv[:, None]
    elif adv.shape != logp.shape:
        raise ValueError(
            f"policy_loss({name!r}): `advantages` must be [N] = [{n}] or [N, T], got {adv.shape}"
        )

    metrics: dict = {}
    if sampler_logp is not None:
        if canonical == "reg_grpo":
            raise ValueError("policy_loss('reg_grpo'): truncated IS (`sampler_logp`) does not apply")
        sampler_logp = jnp.asarray(sampler_logp, dtype)
        if sampler_logp.shape != logp.shape:
            raise ValueError(
                f"policy_loss({name!r}): `sampler_logp` {sampler_logp.shape} must be {logp.shape}"
            )
        cap = DEFAULT_IS_CAP if is_cap is None else is_cap
        raw = jnp.exp(jnp.clip(old_logp - sampler_logp, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP))
        is_weight = jax.lax.stop_gradient(jnp.minimum(raw, cap))
        metrics["is_weight_mean"] = _masked_mean(is_weight, mask)
        metrics["is_clip_fraction"] = _masked_mean((raw > cap).astype(dtype), mask)
    else:
        is_weight = jnp.ones_like(logp)

    x = LossInputs(logp, old_logp, adv, mask, group_size, is_weight)
    try:
        pg, surrogate_metrics = fn(x, **options)
    except TypeError as e:
        if "unexpected keyword" in str(e):
            raise TypeError(f"policy_loss({name!r}): {e}") from None
        raise
    metrics.update(surrogate_metrics)
    loss = pg

    use_kl = ref_logp is not None and beta != 0.0
    if beta != 0.0 and ref_logp is None:
        warnings.warn(
            f"policy_loss({name!r}): beta={beta} but ref_logp is None, so no KL term is added",
            stacklevel=2,
        )
    if use_kl:
        ref_logp = jnp.asarray(ref_logp, dtype)
        if ref_logp.shape != logp.shape:
            raise ValueError(f"policy_loss({name!r}): `ref_logp` {ref_logp.shape} must be {logp.shape}")
        kl_mean = _masked_mean(KL_ESTIMATORS.get(kl_estimator)(logp, ref_logp), mask)
        loss = loss + beta * kl_mean
    else:
        KL_ESTIMATORS.canonical(kl_estimator)  # still validate the name
        kl_mean = jnp.zeros((), dtype)
    metrics["kl"] = kl_mean
    metrics["kl_loss"] = beta * kl_mean

    if logits is not None:
        logits = jnp.asarray(logits)
        if logits.shape[:2] != logp.shape:
            raise ValueError(
                f"policy_loss({name!r}): `logits` {logits.shape} must be [N, T, V] with [N, T] = {logp.shape}"
            )
        ent = _masked_mean(_entropy(logits), mask)
        metrics["entropy"] = ent
        if entropy_coef:
            loss = loss - entropy_coef * ent
    elif entropy_coef:
        raise ValueError(f"policy_loss({name!r}): entropy_coef={entropy_coef} needs `logits`")

    metrics["pg_loss"] = pg
    metrics["loss"] = loss
    metrics["masked_fraction"] = 1.0 - jnp.sum(mask) / mask.size
    return loss, metrics
