"""Plain NumPy (float64) references for the RL formulas, written from the formulas in
``vital_jax/rl`` docstrings and the method notes — independent of the JAX code."""

from __future__ import annotations

import numpy as np

EPS = 1e-6


def np_group_std(x: np.ndarray) -> np.ndarray:
    if x.shape[1] < 2:
        return np.zeros((x.shape[0], 1))
    return x.std(axis=1, ddof=1, keepdims=True)


def np_advantages(name: str, r: np.ndarray, eps: float = EPS, full_marks: float = 2.0) -> np.ndarray:
    r = r.astype(np.float64)
    p, g = r.shape
    mean = r.mean(axis=1, keepdims=True)
    std = np_group_std(r)
    if name == "grpo":
        a = (r - mean) / (std + eps)
    elif name == "drgrpo":
        a = r - mean
    elif name == "rloo":
        a = np.zeros_like(r)
        if g > 1:
            for i in range(p):
                for j in range(g):
                    a[i, j] = r[i, j] - (r[i].sum() - r[i, j]) / (g - 1)
    elif name == "dgrpo":
        w = (np.clip(full_marks - mean, 0.0, 1.0) + 1.0) / 2.0
        a = (r - mean) / (std + eps) * w
    else:
        raise KeyError(name)
    constant = r.max(axis=1) == r.min(axis=1)
    a[constant] = 0.0
    return a


def np_kl(name: str, logp: np.ndarray, ref: np.ndarray) -> np.ndarray:
    logp, ref = logp.astype(np.float64), ref.astype(np.float64)
    if name == "k1":
        return logp - ref
    if name == "k2":
        return 0.5 * (logp - ref) ** 2
    if name == "k3":
        d = ref - logp
        return np.exp(d) - d - 1.0
    raise KeyError(name)


def np_aggregate(name: str, loss: np.ndarray, mask: np.ndarray, max_length=None) -> float:
    n, t = mask.shape
    if name == "token_mean":
        return float((loss * mask).sum() / max(mask.sum(), 1.0))
    if name == "seq_mean_token_mean":
        rows = [
            (loss[i] * mask[i]).sum() / mask[i].sum() for i in range(n) if mask[i].sum() > 0
        ]
        return float(np.mean(rows)) if rows else 0.0
    if name == "seq_mean_token_sum_norm":
        return float((loss * mask).sum() / (n * (max_length or t)))
    raise KeyError(name)


def np_masked_mean(x, mask):
    return float((x * mask).sum() / max(mask.sum(), 1.0))


PRESETS = {
    "grpo": dict(surrogate="clip", aggregation="token_mean", epsilon=0.2, epsilon_high=None),
    "dapo": dict(surrogate="clip", aggregation="token_mean", epsilon=0.2, epsilon_high=0.28),
    "bnpo": dict(surrogate="clip", aggregation="token_mean", epsilon=0.2, epsilon_high=None),
    "drgrpo": dict(surrogate="clip", aggregation="seq_mean_token_sum_norm", epsilon=0.2, epsilon_high=None),
    "gspo": dict(surrogate="gspo", aggregation="seq_mean_token_mean", epsilon=3e-4, epsilon_high=4e-4),
    "reg_grpo": dict(surrogate="reg"),
}


def np_policy_loss(
    name, *, logp, old_logp, advantages, mask, group_size, ref_logp=None, beta=0.0,
    kl_estimator="k3", sampler_logp=None, is_cap=2.0, clip_c=None, **overrides,
):
    """Returns (loss, dict of reference metrics)."""
    cfg = {**PRESETS[name], **overrides}
    logp, old = logp.astype(np.float64), old_logp.astype(np.float64)
    mask = mask.astype(np.float64)
    adv = advantages.astype(np.float64)
    n, t = logp.shape
    ratio = np.exp(logp - old)
    w = np.ones_like(logp)
    if sampler_logp is not None:
        w = np.minimum(np.exp(old - sampler_logp.astype(np.float64)), is_cap)
    metrics = {"ratio_mean": np_masked_mean(ratio, mask),
               "approx_kl": np_masked_mean(ratio - 1 - np.log(ratio), mask)}
    if cfg["surrogate"] == "clip":
        lo, hi = cfg["epsilon"], cfg["epsilon_high"] if cfg["epsilon_high"] is not None else cfg["epsilon"]
        a = adv[:, None] if adv.ndim == 1 else adv
        a = np.broadcast_to(a, logp.shape)
        loss = np.empty_like(logp)
        clipped_flags = np.zeros_like(logp)
        for i in range(n):
            for j in range(t):
                u = -a[i, j] * ratio[i, j]
                c = -a[i, j] * min(max(ratio[i, j], 1 - lo), 1 + hi)
                v = max(u, c)
                clipped_flags[i, j] = c > u
                if clip_c is not None and a[i, j] < 0:
                    v = min(v, -a[i, j] * clip_c)
                loss[i, j] = v * w[i, j]
        pg = np_aggregate(cfg["aggregation"], loss, mask, cfg.get("max_length"))
        metrics["clip_fraction"] = np_masked_mean(clipped_flags, mask)
    elif cfg["surrogate"] == "gspo":
        lo, hi = cfg["epsilon"], cfg["epsilon_high"]
        loss = np.zeros_like(logp)
        for i in range(n):
            length = mask[i].sum()
            s = np.exp((mask[i] * (logp[i] - old[i])).sum() / length) if length > 0 else 1.0
            seq = max(-adv[i] * s, -adv[i] * min(max(s, 1 - lo), 1 + hi))
            if clip_c is not None and adv[i] < 0:
                seq = min(seq, -adv[i] * clip_c)
            loss[i] = seq * w[i]
        pg = np_aggregate(cfg["aggregation"], loss, mask)
    else:  # Reg-GRPO
        g = group_size
        rho = (mask * (logp - old)).sum(axis=1).reshape(n // g, g)
        pred = (rho - rho.mean(axis=1, keepdims=True)) / (np_group_std(rho) + cfg.get("eps", EPS))
        pg = float(((adv.reshape(n // g, g) - pred) ** 2).mean())
    total = pg
    kl_mean = 0.0
    if ref_logp is not None and beta:
        kl_mean = np_masked_mean(np_kl(kl_estimator, logp, ref_logp), mask)
        total += beta * kl_mean
    metrics.update(pg_loss=pg, kl=kl_mean, loss=total, masked_fraction=1 - mask.mean())
    return total, metrics


def np_entropy(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    return -(p * np.log(p)).sum(axis=-1)
