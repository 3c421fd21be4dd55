"""Optimizer: optax AdamW, warm-up + decay schedules, clipping, decay and freeze masks.

- Weight decay applies to matrices only (``*_kernel``, ``embed``, ``lm_head``), never to norm
  scales or biases — decided by parameter *name*, because stacked layers make every norm scale
  2-D and a rank test would decay them.
- A frozen vision tower gets ``optax.set_to_zero`` through ``multi_transform``: no Adam moments
  are allocated for it at all (VITAL trains RL with the tower frozen).
"""

from __future__ import annotations

import jax
import optax

from vital_jax.config.run_config import ConfigError, OptimConfig


def schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    """Linear warm-up to ``learning_rate``, then ``cosine``/``linear`` decay to
    ``final_lr_fraction * learning_rate`` at ``total_steps`` (or ``constant``)."""
    lr, warm = cfg.learning_rate, max(0, cfg.warmup_steps)
    end = lr * cfg.final_lr_fraction
    decay_steps = max(1, total_steps - warm)
    if cfg.schedule == "constant":
        main = optax.constant_schedule(lr)
    elif cfg.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, decay_steps, alpha=cfg.final_lr_fraction)
    elif cfg.schedule == "linear":
        main = optax.linear_schedule(lr, end, decay_steps)
    else:
        raise ConfigError(f"optim.schedule: unknown {cfg.schedule!r}; known: constant, cosine, linear")
    if warm == 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), main], [warm])


def _name(path) -> str:
    last = path[-1]
    return str(getattr(last, "key", getattr(last, "name", last)))


def decay_mask(params) -> dict:
    """True on parameters that get weight decay (matrices), by name."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: _name(path).endswith("kernel") or _name(path) in ("embed", "lm_head"), params)


def trainable_labels(params, freeze_vision: bool) -> dict:
    def label(path, _):
        return "frozen" if freeze_vision and str(getattr(path[0], "key", path[0])) == "vision" else "train"
    return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(cfg: OptimConfig, total_steps: int, *, freeze_vision: bool = False) -> optax.GradientTransformation:
    if cfg.learning_rate <= 0 or cfg.weight_decay < 0 or cfg.grad_clip < 0:
        raise ConfigError("optim: need learning_rate > 0, weight_decay >= 0, grad_clip >= 0")
    parts = []
    if cfg.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip))
    parts.append(optax.adamw(schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                             weight_decay=cfg.weight_decay, mask=decay_mask))
    train = optax.chain(*parts)
    return optax.multi_transform({"train": train, "frozen": optax.set_to_zero()},
                                 lambda p: trainable_labels(p, freeze_vision))
