"""Qwen2.5-VL in Flax NNX, kept functional.

The NNX modules here are parameter containers with a ``__call__``; the math of one layer is a
plain function of a dict of arrays, so the stacked layers run under ``lax.scan`` (or an unrolled
loop) with remat, and the KV cache is just another pytree. Users work with ``(graphdef, params)``
where ``params`` is a nested dict of arrays (see :func:`init_params` and :func:`apply`).

Shapes: B batch, L tokens, S cache slots, D text hidden, H/K query/kv heads, d head dim,
F MLP width, V vocab, N vision patches, C vision hidden, M merged visual tokens.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vital_jax.models.qwen2_5_vl.config import ModelConfig
from vital_jax.sharding import constrain

Array = jax.Array
_NEG = -0.7 * float(np.finfo(np.float32).max)


# ---------------------------------------------------------------------------------------------
# attention implementations (a registry: a Pallas/splash kernel can be added by name)
# ---------------------------------------------------------------------------------------------
_ATTENTION: dict[str, Callable] = {}


def register_attention(name: str):
    def deco(fn):
        _ATTENTION[name] = fn
        return fn
    return deco


@register_attention("xla")
def xla_attention(q: Array, k: Array, v: Array, mask: Array, scale: float) -> Array:
    """Grouped attention. q [B, n, H, d]; k, v [B, K, S, d]; mask [B, n, S] bool -> [B, n, H, d]."""
    B, n, H, d = q.shape
    K = k.shape[1]
    qg = q.reshape(B, n, K, H // K, d)
    s = jnp.einsum("bnkgd,bksd->bkgns", qg, k, preferred_element_type=jnp.float32) * scale
    s = jnp.where(mask[:, None, None, :, :], s, _NEG)
    p = jax.nn.softmax(s, axis=-1).astype(v.dtype)
    o = jnp.einsum("bkgns,bksd->bnkgd", p, v, preferred_element_type=jnp.float32)
    return o.reshape(B, n, H, d).astype(q.dtype)


def attention_fn(name: str) -> Callable:
    if name not in _ATTENTION:
        raise ValueError(f"unknown attention implementation {name!r}; known: {sorted(_ATTENTION)}")
    return _ATTENTION[name]


# ---------------------------------------------------------------------------------------------
# small pieces
# ---------------------------------------------------------------------------------------------
def rms_norm(x: Array, scale: Array, eps: float) -> Array:
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return scale.astype(x.dtype) * y.astype(x.dtype)


def rotate_half(x: Array) -> Array:
    h = x.shape[-1] // 2
    return jnp.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def mrope_cos_sin(position_ids: Array, head_dim: int, theta: float, section, dtype) -> tuple[Array, Array]:
    """M-RoPE tables. position_ids [3, B, L] -> cos, sin [B, L, d].

    Frequency pair j takes the temporal position for j < s0, height for j < s0+s1, width after;
    then the half is duplicated (not interleaved).
    """
    inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    axis_of = np.repeat(np.arange(3), section)                            # [d/2]
    pos = position_ids.astype(jnp.float32)                                # [3, B, L]
    sel = pos[axis_of]                                                    # [d/2, B, L]
    freqs = jnp.moveaxis(sel, 0, -1) * jnp.asarray(inv, jnp.float32)      # [B, L, d/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype)


def vision_cos_sin(rot_hw: Array, head_dim: int, dtype, theta: float = 10000.0) -> tuple[Array, Array]:
    """2D rotary tables for the vision tower. rot_hw [N, 2] -> cos, sin [N, d]."""
    quarter = head_dim // 2
    inv = 1.0 / (theta ** (np.arange(0, quarter, 2, dtype=np.float64) / quarter))  # [d/4]
    f = rot_hw.astype(jnp.float32)[:, :, None] * jnp.asarray(inv, jnp.float32)       # [N, 2, d/4]
    f = f.reshape(f.shape[0], -1)                                                    # [N, d/2] = [h, w]
    emb = jnp.concatenate([f, f], axis=-1)
    return jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype)


def _remat(fn, policy: str):
    if policy == "none":
        return fn
    if policy == "full":
        return jax.checkpoint(fn)
    if policy == "dots":
        return jax.checkpoint(fn, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
    raise ValueError(f"unknown remat policy {policy!r}")


def _run_stack(layer_fn, carry, stacked: dict, extras: Any, *, scan: bool, remat: str):
    """Apply ``layer_fn(carry, layer_params, extra_i) -> (carry, out_i)`` over the leading axis."""
    fn = _remat(layer_fn, remat)
    if scan:
        return jax.lax.scan(lambda c, xs: fn(c, xs[0], xs[1]), carry, (stacked, extras))
    n = jax.tree.leaves(stacked)[0].shape[0]
    outs = []
    for i in range(n):
        carry, o = fn(carry, jax.tree.map(lambda a: a[i], stacked), jax.tree.map(lambda a: a[i], extras))
        outs.append(o)
    stacked_out = None if outs[0] is None else jax.tree.map(lambda *a: jnp.stack(a), *outs)
    return carry, stacked_out


# ---------------------------------------------------------------------------------------------
# parameters (NNX modules as containers; logical axes on every Param)
# ---------------------------------------------------------------------------------------------
def _param(rngs, shape, axes, dtype, init="normal", std=0.02):
    if init == "ones":
        value = jnp.ones(shape, dtype)
    elif init == "zeros":
        value = jnp.zeros(shape, dtype)
    else:
        value = (std * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)
    return nnx.Param(value, logical_axes=tuple(axes))


class TextLayers(nnx.Module):
    """All decoder layers, every parameter stacked on a leading ``layers`` axis."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        t, dt = cfg.text, cfg.runtime.param_dtype
        L, D, H, K, d, F = t.num_layers, t.hidden_size, t.num_heads, t.num_kv_heads, t.head_dim, t.intermediate_size
        P = functools.partial(_param, rngs, dtype=dt)
        lay = ("layers",)
        self.attn_norm = P((L, D), lay + ("norm",), init="ones")
        self.q_kernel = P((L, D, H, d), lay + ("embed", "heads", "head_dim"))
        self.q_bias = P((L, H, d), lay + ("heads", "head_dim"), init="zeros")
        self.k_kernel = P((L, D, K, d), lay + ("embed", "kv_heads", "head_dim"))
        self.k_bias = P((L, K, d), lay + ("kv_heads", "head_dim"), init="zeros")
        self.v_kernel = P((L, D, K, d), lay + ("embed", "kv_heads", "head_dim"))
        self.v_bias = P((L, K, d), lay + ("kv_heads", "head_dim"), init="zeros")
        self.o_kernel = P((L, H, d, D), lay + ("heads", "head_dim", "embed"))
        self.mlp_norm = P((L, D), lay + ("norm",), init="ones")
        self.gate_kernel = P((L, D, F), lay + ("embed", "mlp"))
        self.up_kernel = P((L, D, F), lay + ("embed", "mlp"))
        self.down_kernel = P((L, F, D), lay + ("mlp", "embed"))


class VisionBlocks(nnx.Module):
    """All vision blocks, stacked on a leading ``layers`` axis."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        v, dt = cfg.vision, cfg.runtime.param_dtype
        L, C, Hv, d, F = v.depth, v.hidden_size, v.num_heads, v.head_dim, v.intermediate_size
        P = functools.partial(_param, rngs, dtype=dt)
        lay = ("layers",)
        self.norm1 = P((L, C), lay + ("norm",), init="ones")
        self.qkv_kernel = P((L, C, 3, Hv, d), lay + ("vis_embed", None, "vis_heads", "head_dim"))
        self.qkv_bias = P((L, 3, Hv, d), lay + (None, "vis_heads", "head_dim"), init="zeros")
        self.proj_kernel = P((L, Hv, d, C), lay + ("vis_heads", "head_dim", "vis_embed"))
        self.proj_bias = P((L, C), lay + ("norm",), init="zeros")
        self.norm2 = P((L, C), lay + ("norm",), init="ones")
        self.gate_kernel = P((L, C, F), lay + ("vis_embed", "vis_mlp"))
        self.gate_bias = P((L, F), lay + ("vis_mlp",), init="zeros")
        self.up_kernel = P((L, C, F), lay + ("vis_embed", "vis_mlp"))
        self.up_bias = P((L, F), lay + ("vis_mlp",), init="zeros")
        self.down_kernel = P((L, F, C), lay + ("vis_mlp", "vis_embed"))
        self.down_bias = P((L, C), lay + ("norm",), init="zeros")


class VisionTower(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        v, dt = cfg.vision, cfg.runtime.param_dtype
        P = functools.partial(_param, rngs, dtype=dt)
        C, Cm = v.hidden_size, v.hidden_size * v.merge_unit
        self.patch_kernel = P((v.patch_dim, C), ("vis_patch", "vis_embed"))
        self.blocks = VisionBlocks(cfg, rngs)
        self.merger_norm = P((C,), ("norm",), init="ones")
        self.merger_fc1_kernel = P((Cm, Cm), ("vis_merge", "vis_mlp"))
        self.merger_fc1_bias = P((Cm,), ("vis_mlp",), init="zeros")
        self.merger_fc2_kernel = P((Cm, v.out_hidden_size), ("vis_mlp", "embed"))
        self.merger_fc2_bias = P((v.out_hidden_size,), ("norm",), init="zeros")


class Qwen25VL(nnx.Module):
    """Parameter tree of the whole model: ``vision``, ``embed``, ``layers``, ``final_norm``, ``lm_head``."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        t, dt = cfg.text, cfg.runtime.param_dtype
        P = functools.partial(_param, rngs, dtype=dt)
        self.vision = VisionTower(cfg, rngs)
        self.embed = P((t.vocab_size, t.hidden_size), ("vocab", "embed"))
        self.layers = TextLayers(cfg, rngs)
        self.final_norm = P((t.hidden_size,), ("norm",), init="ones")
        if not t.tie_word_embeddings:
            self.lm_head = P((t.hidden_size, t.vocab_size), ("embed", "vocab"))


def init_params(cfg: ModelConfig, seed: int = 0) -> tuple[nnx.GraphDef, dict]:
    """Random parameters: ``(graphdef, params)`` with ``params`` a nested dict of arrays."""
    model = Qwen25VL(cfg, nnx.Rngs(params=seed))
    graphdef, state = nnx.split(model)
    return graphdef, nnx.to_pure_dict(state)


def abstract_params(cfg: ModelConfig) -> dict:
    """Shapes/dtypes of the params (no memory), as ``jax.ShapeDtypeStruct`` leaves."""
    state = nnx.state(nnx.eval_shape(lambda: Qwen25VL(cfg, nnx.Rngs(params=0))))
    return nnx.to_pure_dict(state)


def param_logical_axes(cfg: ModelConfig) -> dict:
    """The logical axis names of every parameter, same tree structure as the params."""
    state = nnx.state(nnx.eval_shape(lambda: Qwen25VL(cfg, nnx.Rngs(params=0))))
    flat = {path: v.get_metadata().get("logical_axes") for path, v in nnx.to_flat_state(state)}
    return _unflatten({tuple(p): a for p, a in flat.items()})


def param_shardings(cfg: ModelConfig, mesh) -> dict:
    """NamedShardings of every parameter on ``mesh`` via the logical rules table."""
    from vital_jax.sharding import named_sharding

    shapes = abstract_params(cfg)
    axes = param_logical_axes(cfg)
    return jax.tree.map(lambda s, a: named_sharding(mesh, a, s.shape), shapes, axes,
                        is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct))


def _unflatten(flat: dict[tuple, Any]) -> dict:
    out: dict = {}
    for path, val in flat.items():
        d = out
        for k in path[:-1]:
            d = d.setdefault(k, {})
        d[path[-1]] = val
    return out


# ---------------------------------------------------------------------------------------------
# vision tower forward
# ---------------------------------------------------------------------------------------------
class VisionArrays(NamedTuple):
    """Device-side vision inputs of one static bucket (see vision_layout.py)."""

    pixels: Array      # [N, patch_dim], original (HF) patch order, zero rows for padding
    perm: Array        # [N]
    seg_window: Array  # [N]
    seg_full: Array    # [N]
    rot_hw: Array      # [N, 2]
    unperm: Array      # [N / 4]


def _vision_block(cfg: ModelConfig, x, p, is_full, *, cos, sin, seg_w, seg_f):
    v = cfg.vision
    cd = cfg.runtime.compute_dtype
    h = rms_norm(x, p["norm1"], v.rms_norm_eps)
    qkv = jnp.einsum("nc,cthd->tnhd", h, p["qkv_kernel"].astype(cd)) + p["qkv_bias"].astype(cd)[:, None]
    q, k, vv = qkv[0], qkv[1], qkv[2]                                     # [N, Hv, d]
    q = q * cos[:, None] + rotate_half(q) * sin[:, None]
    k = k * cos[:, None] + rotate_half(k) * sin[:, None]
    seg = jnp.where(is_full, seg_f, seg_w)
    mask = seg[:, None] == seg[None, :]                                    # [N, N]
    attn = attention_fn(cfg.runtime.attention)
    o = attn(q[None], jnp.swapaxes(k, 0, 1)[None], jnp.swapaxes(vv, 0, 1)[None], mask[None],
             v.head_dim ** -0.5)[0]                                        # [N, Hv, d]
    x = x + jnp.einsum("nhd,hdc->nc", o, p["proj_kernel"].astype(cd)) + p["proj_bias"].astype(cd)
    h = rms_norm(x, p["norm2"], v.rms_norm_eps)
    g = h @ p["gate_kernel"].astype(cd) + p["gate_bias"].astype(cd)
    u = h @ p["up_kernel"].astype(cd) + p["up_bias"].astype(cd)
    x = x + (jax.nn.silu(g) * u) @ p["down_kernel"].astype(cd) + p["down_bias"].astype(cd)
    return x


def encode_vision(cfg: ModelConfig, vparams: dict, va: VisionArrays) -> Array:
    """Merged visual embeddings [N/4, out_hidden] in the original token order (padding last)."""
    v, rt = cfg.vision, cfg.runtime
    cd = rt.compute_dtype
    x = jnp.take(va.pixels.astype(cd), va.perm, axis=0) @ vparams["patch_kernel"].astype(cd)  # [N, C]
    cos, sin = vision_cos_sin(va.rot_hw, v.head_dim, cd)
    is_full = np.zeros((v.depth,), bool)
    is_full[list(v.fullatt_block_indexes)] = True

    def layer(x, p, full):
        return _vision_block(cfg, x, p, full, cos=cos, sin=sin, seg_w=va.seg_window, seg_f=va.seg_full), None

    x, _ = _run_stack(layer, x, vparams["blocks"], jnp.asarray(is_full), scan=rt.scan_layers, remat=rt.remat)
    h = rms_norm(x, vparams["merger_norm"], v.rms_norm_eps)
    h = h.reshape(-1, v.merge_unit * v.hidden_size)                        # [N/4, 4C]
    h = jax.nn.gelu(h @ vparams["merger_fc1_kernel"].astype(cd) + vparams["merger_fc1_bias"].astype(cd),
                    approximate=False)
    h = h @ vparams["merger_fc2_kernel"].astype(cd) + vparams["merger_fc2_bias"].astype(cd)
    return jnp.take(h, va.unperm, axis=0)


# ---------------------------------------------------------------------------------------------
# text decoder forward (optionally through a KV cache)
# ---------------------------------------------------------------------------------------------
class KVCache(NamedTuple):
    """Per-layer keys/values, layout [layers, B, K, S, d] (fast on CPU; see platform.md)."""

    k: Array
    v: Array

    @staticmethod
    def zeros(cfg: ModelConfig, batch: int, length: int, dtype=None) -> "KVCache":
        t = cfg.text
        shape = (t.num_layers, batch, t.num_kv_heads, length, t.head_dim)
        dtype = dtype or cfg.runtime.compute_dtype
        return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


def _write_rows(cache: Array, new: Array, start: Array) -> Array:
    """cache [B, K, S, d] <- new [B, K, n, d] at per-row slot ``start[B]``."""
    return jax.vmap(lambda c, x, s: jax.lax.dynamic_update_slice(c, x, (0, s, 0)))(cache, new, start)


def _text_layer(cfg: ModelConfig, x, p, kv, *, cos, sin, mask, write_at):
    t = cfg.text
    cd = cfg.runtime.compute_dtype
    h = rms_norm(x, p["attn_norm"], t.rms_norm_eps)
    q = jnp.einsum("bld,dhk->blhk", h, p["q_kernel"].astype(cd)) + p["q_bias"].astype(cd)
    k = jnp.einsum("bld,dhk->blhk", h, p["k_kernel"].astype(cd)) + p["k_bias"].astype(cd)
    v = jnp.einsum("bld,dhk->blhk", h, p["v_kernel"].astype(cd)) + p["v_bias"].astype(cd)
    q = q * cos[:, :, None] + rotate_half(q) * sin[:, :, None]
    k = k * cos[:, :, None] + rotate_half(k) * sin[:, :, None]
    q = constrain(q, ("batch", "seq", "act_heads", None))
    k = jnp.swapaxes(k, 1, 2)                                             # [B, K, n, d]
    v = jnp.swapaxes(v, 1, 2)
    if kv is not None:
        k_all = _write_rows(kv[0], k.astype(kv[0].dtype), write_at)
        v_all = _write_rows(kv[1], v.astype(kv[1].dtype), write_at)
        new_kv = (k_all, v_all)
        k, v = k_all.astype(cd), v_all.astype(cd)
    else:
        new_kv = None
    o = attention_fn(cfg.runtime.attention)(q, k, v, mask, t.head_dim ** -0.5)
    x = x + jnp.einsum("blhk,hkd->bld", o, p["o_kernel"].astype(cd))
    h = rms_norm(x, p["mlp_norm"], t.rms_norm_eps)
    g = jnp.einsum("bld,df->blf", h, p["gate_kernel"].astype(cd))
    u = jnp.einsum("bld,df->blf", h, p["up_kernel"].astype(cd))
    y = constrain(jax.nn.silu(g) * u, ("batch", "seq", "act_mlp"))
    x = x + jnp.einsum("blf,fd->bld", y, p["down_kernel"].astype(cd))
    return constrain(x, ("batch", "seq", "act_embed")), new_kv


def embed_tokens(cfg: ModelConfig, params: dict, input_ids: Array, vis_embeds: Array | None,
                 vis_index: Array | None) -> Array:
    """Token embeddings with visual rows scattered in: ``vis_index[b, l] >= 0`` takes
    ``vis_embeds[vis_index[b, l]]`` (host-computed, so it works with padded static shapes)."""
    cd = cfg.runtime.compute_dtype
    x = jnp.take(params["embed"], input_ids, axis=0).astype(cd)
    if vis_embeds is not None:
        take = jnp.take(vis_embeds.astype(cd), jnp.maximum(vis_index, 0), axis=0)
        x = jnp.where((vis_index >= 0)[..., None], take, x)
    return constrain(x, ("batch", "seq", "act_embed"))


def decode_hidden(cfg: ModelConfig, params: dict, x: Array, position_ids: Array, mask: Array,
                  cache: KVCache | None = None, write_at: Array | None = None):
    """Run the decoder stack on embeddings ``x [B, n, D]``.

    ``mask [B, n, S]`` says which keys each query sees: its own chunk (S = n) without a cache, or
    cache slots with a cache (after this chunk's keys are written at ``write_at[B]``).
    Returns the final-normed hidden states and the updated cache.
    """
    t, rt = cfg.text, cfg.runtime
    cos, sin = mrope_cos_sin(position_ids, t.head_dim, t.rope_theta, t.mrope_section, rt.compute_dtype)

    def layer(x, p, kv):
        return _text_layer(cfg, x, p, kv, cos=cos, sin=sin, mask=mask, write_at=write_at)

    kvs = None if cache is None else (cache.k, cache.v)
    x, new = _run_stack(layer, x, params["layers"], kvs, scan=rt.scan_layers, remat=rt.remat)
    x = rms_norm(x, params["final_norm"], t.rms_norm_eps)
    return x, (None if cache is None else KVCache(*new))


def lm_logits(cfg: ModelConfig, params: dict, h: Array) -> Array:
    """float32 logits [B, n, V]."""
    cd = cfg.runtime.compute_dtype
    w = params["embed"].T if cfg.text.tie_word_embeddings else params["lm_head"]
    logits = jnp.einsum("bld,dv->blv", h.astype(cd), w.astype(cd), preferred_element_type=jnp.float32)
    return constrain(logits, ("batch", "seq", "act_vocab"))


def causal_mask(attention_mask: Array) -> Array:
    """[B, L] padding mask -> [B, L, L] causal mask over valid keys."""
    L = attention_mask.shape[1]
    causal = jnp.tril(jnp.ones((L, L), bool))
    return causal[None] & attention_mask.astype(bool)[:, None, :]


def model_logits(cfg: ModelConfig, params: dict, input_ids: Array, position_ids: Array,
                 attention_mask: Array, vision: VisionArrays | None = None,
                 vis_index: Array | None = None, vis_embeds: Array | None = None) -> Array:
    """The whole model on a padded batch (pure; jit with ``cfg`` static). Logits [B, L, V] f32.

    Pass either ``vision`` (pixels + layout, encoded here) or precomputed ``vis_embeds``
    (e.g. from the rollout, when the tower is frozen).
    """
    if vision is not None:
        vis_embeds = encode_vision(cfg, params["vision"], vision)
        if cfg.runtime.freeze_vision:
            vis_embeds = jax.lax.stop_gradient(vis_embeds)
    x = embed_tokens(cfg, params, input_ids, vis_embeds, vis_index)
    h, _ = decode_hidden(cfg, params, x, position_ids, causal_mask(attention_mask))
    return lm_logits(cfg, params, h)
