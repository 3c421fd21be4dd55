"""The jitted pieces of training: per-token log-probs, losses, and the train step.

Everything here is a pure function of pytrees (params, optimizer state, a batch from
:mod:`vital_jax.trainers.batch`), jitted once per run with declared in/out shardings and the state
donated. The step:

1. splits the batch into its ``M`` micro-batches (leading axis) and ``lax.scan`` s over them,
   summing gradients (gradient accumulation with a *global* normaliser, so M micro-batches give
   the same update as one big batch);
2. applies the optimizer;
3. **skips** the update (params and optimizer state unchanged) when the loss or the gradient
   norm is not finite, and reports ``skipped = 1`` — the host counts and stops after too many.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from vital_jax.models.families import modeling_of, package_of


class TrainState(NamedTuple):
    step: jax.Array          # int32 scalar: optimizer steps attempted (skipped ones included)
    params: dict
    opt_state: Any


# --------------------------------------------------------------------------- forward pieces


def row_vision_embeds(cfg, params: dict, vision: dict):
    """The family's visual features per row (vmap of the tower over rows; Qwen2.5-VL: merged
    embeddings ``[b, N/4, D]``, Qwen3-VL: those and the DeepStack features)."""
    fam = package_of(cfg)
    va = fam.VisionArrays(**vision)
    emb = jax.vmap(lambda a: fam.modeling.encode_vision(cfg, params["vision"], a))(va)
    if cfg.runtime.freeze_vision:
        emb = jax.lax.stop_gradient(emb)
    return emb


def token_logps(cfg, params: dict, mb: dict, vis_embeds=None,
                with_entropy: bool = False, only_loss_tokens: bool = False):
    """Log-prob of every token given the ones before it, ``[b, L]`` aligned with ``input_ids``
    (column 0 is 0: nothing predicts the first token). Optionally the per-token entropy of the
    predicting distribution, aligned the same way.

    ``only_loss_tokens``: the values are wanted only where ``mb["loss_mask"]`` is set (0
    elsewhere), and lm-head chunks without such a token are skipped
    (:func:`~vital_jax.models.qwen2_5_vl.modeling.target_logprobs`). Every loss here reads the
    log-probs through that mask, so the trainers pass it."""
    ids = mb["input_ids"]
    m = modeling_of(cfg)
    if vis_embeds is None and "vision" in mb:
        vis_embeds = row_vision_embeds(cfg, params, mb["vision"])
    h, _ = m.hidden_states(cfg, params, ids, vis_embeds, None if vis_embeds is None else mb["vis_index"],
                           mb["position_ids"], m.CausalMask(mb["attention_mask"]))
    where = mb["loss_mask"][:, 1:] > 0 if only_loss_tokens else None
    out = m.target_logprobs(cfg, params, h[:, :-1], ids[:, 1:], where, with_entropy=with_entropy)
    return jax.tree.map(lambda x: jnp.pad(x, ((0, 0), (1, 0))), out)     # array, or (logp, entropy)


def sft_loss(cfg, params: dict, mb: dict, token_count: jax.Array):
    """Masked next-token cross-entropy, summed and divided by the global target count."""
    logp = token_logps(cfg, params, mb, only_loss_tokens=True)
    mask = mb["loss_mask"]
    nll = -jnp.sum(logp * mask)
    return nll / token_count, {"nll_sum": nll, "tokens": jnp.sum(mask)}


# --------------------------------------------------------------------------- the step


def _tree_where(ok, new, old):
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def train_step(loss_fn: Callable, optimizer: optax.GradientTransformation, state: TrainState, batch: dict):
    """One optimizer step over ``batch`` (leading micro-batch axis). ``loss_fn(params, mb, ctx)``
    returns ``(loss, metrics)`` with the loss already divided by the global normaliser, so the
    micro-batch losses and gradients just add up. ``ctx`` holds ``token_count`` (all micro-batches'
    loss-mask sum) and ``num_micro``."""
    M = batch["input_ids"].shape[0]
    ctx = {"token_count": jnp.maximum(jnp.sum(batch["loss_mask"][:, :, 1:]), 1.0), "num_micro": M}
    grad_fn = jax.value_and_grad(lambda p, mb: loss_fn(p, mb, ctx), has_aux=True)

    def one(carry, mb):
        g_acc, l_acc = carry
        (loss, metrics), g = grad_fn(state.params, mb)
        return (jax.tree.map(jnp.add, g_acc, g), l_acc + loss), metrics

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    (grads, loss), metrics = jax.lax.scan(one, (zeros, jnp.zeros((), jnp.float32)), batch)
    # per-micro-batch metrics: means, except ``*_max`` ones (a maximum over the whole batch)
    metrics = {k: (jnp.max if k.endswith("_max") else jnp.mean)(m, axis=0) for k, m in metrics.items()}
    gnorm = optax.tree.norm(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ok = jnp.isfinite(loss) & jnp.isfinite(gnorm)
    new = TrainState(state.step + 1, _tree_where(ok, params, state.params), _tree_where(ok, opt_state, state.opt_state))
    metrics.update(loss=loss, grad_norm=gnorm, skipped=(~ok).astype(jnp.float32))
    return new, metrics


# --------------------------------------------------------------------------- sharding + jit


def state_shardings(optimizer: optax.GradientTransformation, param_sh: dict, opt_state_abstract) -> TrainState:
    """Shardings of a TrainState: the optimizer's per-parameter leaves (Adam moments) follow the
    parameter they belong to; counters and other leaves are replicated.

    A leaf belongs to a parameter when the trailing dict keys of its path name that parameter and
    the shapes agree (optax wraps the moment trees in its own state tuples, and masked or
    multi-transformed states hold placeholders for frozen parameters).
    Why not ``optax.tree_map_params``: in optax 0.2.8 it fails on the ``MaskedNode`` placeholders
    of the frozen-tower optimizer (``multi_transform``), which every frozen-vision run uses.
    """
    del optimizer
    mesh = jax.tree.leaves(param_sh)[0].mesh
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    by_path = {tuple(k.key for k in path): s for path, s in jax.tree_util.tree_leaves_with_path(param_sh)}
    depth = max(len(k) for k in by_path)

    def pick(path, leaf):
        keys = []
        for k in reversed(path):
            if not isinstance(k, jax.tree_util.DictKey):
                break
            keys.insert(0, k.key)
        for n in range(min(len(keys), depth), 0, -1):
            sh = by_path.get(tuple(keys[-n:]))
            if sh is not None and len(sh.spec) <= len(getattr(leaf, "shape", ())):
                return sh
        return rep

    opt_sh = jax.tree_util.tree_map_with_path(pick, opt_state_abstract)
    return TrainState(rep, param_sh, opt_sh)


def init_state(cfg, optimizer, params: dict, mesh) -> tuple[TrainState, TrainState]:
    """(state placed on ``mesh`` by the logical rules, its shardings). ``params`` may live
    anywhere (host, one device, another mesh); they are moved, the optimizer state is created
    directly in its sharding."""
    param_sh = package_of(cfg).param_shardings(cfg, mesh)
    abstract_opt = jax.eval_shape(optimizer.init, package_of(cfg).abstract_params(cfg))
    sh = state_shardings(optimizer, param_sh, abstract_opt)
    params = jax.device_put(params, param_sh)
    opt_state = jax.jit(optimizer.init, out_shardings=sh.opt_state)(params)
    step = jax.device_put(jnp.zeros((), jnp.int32), sh.step)
    return TrainState(step, params, opt_state), sh


def abstract_state(cfg, optimizer, sh: TrainState) -> TrainState:
    """ShapeDtypeStructs with shardings (an Orbax restore target; no memory allocated)."""
    abstract = TrainState(jax.ShapeDtypeStruct((), jnp.int32), package_of(cfg).abstract_params(cfg),
                          jax.eval_shape(optimizer.init, package_of(cfg).abstract_params(cfg)))
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, sh)


class TrainSteps:
    """Jitted train steps, one per batch structure (leaf paths and shapes): a run sees a few
    token/vision buckets, and declared shardings depend on the shapes."""

    def __init__(self, loss_fn: Callable, optimizer, state_sh: TrainState):
        self.loss_fn, self.optimizer, self.state_sh = loss_fn, optimizer, state_sh
        self._fns: dict[tuple, Callable] = {}

    def __call__(self, state: TrainState, batch: dict, batch_sh: dict):
        key = tuple((jax.tree_util.keystr(k), jnp.shape(v)) for k, v in jax.tree_util.tree_leaves_with_path(batch))
        fn = self._fns.get(key)
        if fn is None:
            fn = self._fns[key] = jit_train_step(self.loss_fn, self.optimizer, self.state_sh, batch_sh)
        return fn(state, batch)


def jit_train_step(loss_fn: Callable, optimizer, state_sh: TrainState, batch_sh: dict):
    """``step(state, batch) -> (state, metrics)`` jitted with declared shardings; the state's
    buffers are donated (updated in place)."""
    fn = functools.partial(train_step, loss_fn, optimizer)
    return jax.jit(fn, in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, None), donate_argnums=0)
