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
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vital_jax.models.qwen2_5_vl.blockwise import blockwise_attention
from vital_jax.models.qwen2_5_vl.config import ModelConfig
from vital_jax.models.qwen2_5_vl.decode_kernels import DECODE_KERNELS, check_name as decode_name
from vital_jax.models.qwen2_5_vl.splash import splash_attention
from vital_jax.registry import Registry
from vital_jax.sharding import constrain

Array = jax.Array
_NEG = -0.7 * float(np.finfo(np.float32).max)


# ---------------------------------------------------------------------------------------------
# attention implementations (a registry: a Pallas/splash kernel can be added by name)
# ---------------------------------------------------------------------------------------------
log = logging.getLogger(__name__)

ATTENTION: Registry = Registry("attention implementation")
register_attention = ATTENTION.register      # @register_attention("splash") def ...: same signature as xla


@register_attention("xla")
def xla_attention(q: Array, k: Array, v: Array, mask: Array, scale: float) -> Array:
    """Grouped attention. q [B, n, H, d]; k, v [B, K, S, d]; mask [B, n, S] bool -> [B, n, H, d]."""
    B, n, H, d = q.shape
    K, S = k.shape[1], k.shape[2]
    g = H // K
    # the g query heads of a KV head folded into the query axis: one [n*g, d] x [d, S] matmul per
    # (row, KV head). The 5-D grouped einsum ran about 2x slower on CPU (strided batch dims).
    qg = jnp.swapaxes(q.reshape(B, n, K, g, d), 1, 2).reshape(B, K, n * g, d)
    s = jnp.einsum("bkqd,bksd->bkqs", qg, k, preferred_element_type=jnp.float32) * scale
    s = jnp.where(mask[:, None, :, None, :], s.reshape(B, K, n, g, S), _NEG)
    p = jax.nn.softmax(s, axis=-1).astype(v.dtype).reshape(B, K, n * g, S)
    o = jnp.einsum("bkqs,bksd->bkqd", p, v, preferred_element_type=jnp.float32)
    return jnp.swapaxes(o.reshape(B, K, n, g, d), 1, 2).reshape(B, n, H, d).astype(q.dtype)


class CausalMask(NamedTuple):
    """Mask of a whole sequence without a cache: query i sees key j iff j <= i and ``valid[b, j]``.

    Passed to :func:`decode_hidden` instead of the [B, L, L] array of :func:`causal_mask`, so the
    attention can skip the keys after each query chunk rather than compute and mask them.
    """

    valid: Array  # [B, L] bool/int padding mask


class SlotMask(NamedTuple):
    """Mask of a chunk written into a KV cache: query ``i`` of row ``b`` (at slot ``length[b] + i``)
    sees cache slot ``s`` iff ``s <= length[b] + i``.

    Passed to :func:`decode_hidden` by the sampler's prefill/append/decode instead of a [B, n, S]
    array, so ``blockwise`` attention scans the cache in key blocks with positions as metadata;
    ``xla`` (and any registered kernel) gets the dense mask of :meth:`dense`.
    """

    length: Array  # [B] int32: slots already written before this chunk

    def dense(self, n: int, slots: int) -> Array:
        s = jnp.arange(slots, dtype=jnp.int32)
        i = jnp.arange(n, dtype=jnp.int32)
        return s[None, None, :] <= (self.length[:, None, None] + i[None, :, None])


def _query_chunks(n: int) -> list[tuple[int, int]]:
    """Static [start, end) query chunks for causal attention: chunk c needs keys [0, end) only, so
    4 chunks compute ~5/8 of the L x L scores. Short sequences stay whole (slicing costs more)."""
    c = max(1, min(4, n // 128))
    edges = [round(i * n / c) for i in range(c + 1)]
    return list(zip(edges[:-1], edges[1:]))


def xla_causal_attention(q: Array, k: Array, v: Array, valid: Array, scale: float) -> Array:
    """Causal attention over a whole sequence. q [B, n, H, d]; k, v [B, K, n, d]; valid [B, n]
    -> [B, H, n, d] (heads-major).

    Heads-major with K/V repeated to H heads: on CPU the batched [n, d] x [d, n] matmuls run
    faster than the grouped form's, and each query chunk only meets the keys up to its end.
    """
    B, n, H, d = q.shape
    g = H // k.shape[1]
    qh = jnp.swapaxes(q * jnp.asarray(scale, q.dtype), 1, 2)             # [B, H, n, d]
    kh = jnp.repeat(k, g, axis=1) if g > 1 else k                        # [B, H, n, d]
    vh = jnp.repeat(v, g, axis=1) if g > 1 else v
    valid = valid.astype(bool)
    outs = []
    for c0, c1 in _query_chunks(n):
        s = jnp.einsum("bhqd,bhkd->bhqk", qh[:, :, c0:c1], kh[:, :, :c1], preferred_element_type=jnp.float32)
        m = (np.arange(c0, c1)[:, None] >= np.arange(c1)[None, :])[None] & valid[:, None, :c1]   # [B, cq, c1]
        s = jnp.where(m[:, None], s, _NEG)
        p = jax.nn.softmax(s, axis=-1).astype(v.dtype)
        outs.append(jnp.einsum("bhqk,bhkd->bhqd", p, vh[:, :, :c1], preferred_element_type=jnp.float32))
    o = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=2)
    return o.astype(q.dtype)


@register_attention("blockwise")
def blockwise_masked_attention(q: Array, k: Array, v: Array, mask: Array, scale: float) -> Array:
    """``runtime.attention="blockwise"`` for a caller that hands a dense mask (none in the package:
    the training decoder passes :class:`CausalMask`, the sampler :class:`SlotMask`, the vision
    tower segment ids, and each of those runs :func:`blockwise.blockwise_attention` with
    position/segment metadata). A dense mask is already [B, n, S]: it runs :func:`xla_attention`."""
    return xla_attention(q, k, v, mask, scale)


# Where blockwise attention overtakes the model's xla paths on CPU, in key length
# (scripts/bench_attention.py, AMD EPYC, 2 cores, 8 heads / 2 KV heads of 64 dims, one process):
# training fwd+bwd blockwise/xla time 1.63 at 256, 1.81 at 512, 1.00 at 2048, 0.64 at 8192 tokens
# (temporaries 259 -> 47 MiB at 2048); decode over a cache 2.36 at 1024, 0.83 at 4096 slots;
# a 128-row append 0.96 at 1024, 0.46 at 4096.
AUTO_BLOCKWISE_FROM = {"sequence": 2048, "cache": 4096}


def _impl(cfg: ModelConfig, site: str, keys: int, decode: bool = False) -> str:
    """The implementation one call runs: ``runtime.attention``, with ``auto`` picking ``blockwise``
    from :data:`AUTO_BLOCKWISE_FROM` keys on (a static shape: decided when tracing) and ``xla``
    below, ``splash`` running ``blockwise`` over the KV cache (no splash mask for per-row
    offsets), and ``cudnn`` falling back by its rule (:func:`cudnn_attention`). A ``decode`` step
    over the cache (one query per row) runs ``runtime.decode_attention`` unless that is ``auto``
    (:mod:`~vital_jax.models.qwen2_5_vl.decode_kernels`)."""
    if decode and (chosen := decode_name(cfg.runtime.decode_attention)) != "auto":
        return chosen
    name = ATTENTION.canonical(cfg.runtime.attention)
    if name == "auto":
        return "blockwise" if keys >= AUTO_BLOCKWISE_FROM[site] else "xla"
    if name == "splash" and site == "cache":
        return "blockwise"
    return name


@register_attention("splash")
def splash_masked_attention(q: Array, k: Array, v: Array, mask: Array, scale: float) -> Array:
    """``runtime.attention="splash"`` (:mod:`~vital_jax.models.qwen2_5_vl.splash`): the training
    decoder and the tower's frame attention call the kernel with causal/segment metadata; the
    tower's windows come here with a dense [block, 3 * block] band mask and run
    :func:`xla_attention` (already small)."""
    return xla_attention(q, k, v, mask, scale)


@register_attention("auto")
def auto_masked_attention(q: Array, k: Array, v: Array, mask: Array, scale: float) -> Array:
    """``runtime.attention="auto"`` (the default): per call, ``blockwise`` at long lengths and
    ``xla`` at short ones (:data:`AUTO_BLOCKWISE_FROM`); a dense mask runs :func:`xla_attention`."""
    return xla_attention(q, k, v, mask, scale)


_CUDNN_FALLBACKS: set[str] = set()


def cudnn_unusable(q: Array, k: Array) -> str | None:
    """Why cuDNN's fused attention cannot run this call (None: it can): not on a GPU, a dtype
    other than bfloat16/float16, or a head dim it does not take (a multiple of 8, at most 128)."""
    if jax.default_backend() != "gpu":
        return f"the backend is {jax.default_backend()}, not gpu"
    if q.dtype not in (jnp.bfloat16, jnp.float16) or k.dtype != q.dtype:
        return f"dtype {q.dtype} (cuDNN takes bfloat16 or float16)"
    d = q.shape[-1]
    if d % 8 or d > 128:
        return f"head dim {d} (cuDNN takes multiples of 8 up to 128)"
    return None


@register_attention("cudnn")
def cudnn_attention(q: Array, k: Array, v: Array, mask: Array, scale: float) -> Array:
    """``jax.nn.dot_product_attention(implementation="cudnn")`` (grouped query heads as it takes
    them) where :func:`cudnn_unusable` finds nothing against it; otherwise :func:`xla_attention`,
    with the reason logged once per reason."""
    why = cudnn_unusable(q, k)
    if why is not None:
        if why not in _CUDNN_FALLBACKS:
            _CUDNN_FALLBACKS.add(why)
            log.warning(f"attention cudnn -> xla: {why}")
        return xla_attention(q, k, v, mask, scale)
    return jax.nn.dot_product_attention(q, jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2), mask=mask[:, None],
                                        scale=scale, implementation="cudnn")


def attention_fn(name: str) -> Callable:
    """The implementation registered as ``name`` (KeyError listing the known ones otherwise)."""
    return ATTENTION.get(name)


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
    """Apply ``layer_fn(carry, layer_params, extra_i) -> (carry, out_i)`` over the leading axis.

    NumPy ``extras`` stay NumPy in the unrolled loop (bound outside the remat wrapper, which
    would trace them), so a layer can branch on them in Python.
    """
    fn = _remat(layer_fn, remat)
    if scan:
        return jax.lax.scan(lambda c, xs: fn(c, xs[0], xs[1]), carry, (stacked, jax.tree.map(jnp.asarray, extras)))
    n = jax.tree.leaves(stacked)[0].shape[0]
    outs = []
    for i in range(n):
        p_i = jax.tree.map(lambda a: a[i], stacked)
        if isinstance(extras, np.ndarray):
            carry, o = _remat(lambda c, p, e=extras[i]: layer_fn(c, p, e), remat)(carry, p_i)
        else:
            carry, o = fn(carry, p_i, jax.tree.map(lambda a: a[i], extras))
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


def _banded_attention(attn: Callable, q: Array, k: Array, v: Array, seg: Array, block: int, scale: float) -> Array:
    """Segment-masked self-attention where every segment is a contiguous run of at most ``block``
    rows. q, k, v [N, H, d]; seg [N] -> [N, H, d].

    Rows are cut into blocks of ``block``; query block j attends key blocks j-1, j, j+1 only (a
    run of <= ``block`` rows touches at most two neighbouring blocks, so every pair of its rows
    is inside the band), still masked by segment equality. Equal to the dense [N, N] masked
    attention for every row whose segment obeys the bound, at ~3 * block / N of its cost.
    """
    N, H, d = q.shape
    nb = -(-N // block)
    if nb <= 2:  # the band would cover everything anyway
        return attn(q[None], jnp.swapaxes(k, 0, 1)[None], jnp.swapaxes(v, 0, 1)[None],
                    (seg[:, None] == seg[None, :])[None], scale)[0]
    pad = nb * block - N
    rows = ((0, pad), (0, 0), (0, 0))
    # filler rows get a segment of their own (-2: real ids are >= 0, bucket padding is -1)
    q, k, v = jnp.pad(q, rows), jnp.pad(k, rows), jnp.pad(v, rows)
    seg = jnp.pad(seg, (0, pad), constant_values=-2)

    def band(x, fill):  # [nb * block, ...] -> [nb, 3 * block, ...]: blocks j-1, j, j+1 side by side
        xb = x.reshape((nb, block) + x.shape[1:])
        edge = jnp.full((1, block) + x.shape[1:], fill, x.dtype)
        return jnp.concatenate([jnp.concatenate([edge, xb[:-1]]), xb, jnp.concatenate([xb[1:], edge])], axis=1)

    kb = jnp.swapaxes(band(k, 0), 1, 2)                                    # [nb, H, 3 * block, d]
    vb = jnp.swapaxes(band(v, 0), 1, 2)
    segk = band(seg, -3)                                                   # -3: the missing edge blocks
    mask = seg.reshape(nb, block)[:, :, None] == segk[:, None, :]          # [nb, block, 3 * block]
    o = attn(q.reshape(nb, block, H, d), kb, vb, mask, scale)              # [nb, block, H, d]
    return o.reshape(nb * block, H, d)[:N]


def _vision_attention(cfg: ModelConfig, q, k, vv, seg_w, seg_f, is_full) -> Array:
    """Window attention (``is_full`` false) or per-frame attention (true); q, k, vv [N, Hv, d].

    Windows are contiguous runs of at most window_merged^2 * merge_unit patches (the layout puts
    each window's patches together), so they always take the banded path with that block.
    Frames take it with block ``runtime.vision_frame_block`` when that is set (the caller
    promises no frame has more patches; checked at run time), else the dense [N, N] mask.
    ``is_full`` may be a Python bool (unrolled layers) or a traced one (``lax.scan``).
    """
    v = cfg.vision
    attn = attention_fn(cfg.runtime.attention)
    scale = v.head_dim ** -0.5
    win_block = v.window_merged ** 2 * v.merge_unit
    frame_block = cfg.runtime.vision_frame_block

    def window(q, k, vv):
        return _banded_attention(attn, q, k, vv, seg_w, win_block, scale)

    def frame(q, k, vv):
        if frame_block:
            return _banded_attention(attn, q, k, vv, seg_f, frame_block, scale)
        impl = _impl(cfg, "sequence", q.shape[0])
        if impl == "blockwise":   # no [N, N] mask or scores
            return blockwise_attention(q[None], jnp.swapaxes(k, 0, 1)[None], jnp.swapaxes(vv, 0, 1)[None], scale,
                                       seg_q=seg_f[None], seg_k=seg_f[None])[0]
        if impl == "splash":
            return splash_attention(q[None], jnp.swapaxes(k, 0, 1)[None], jnp.swapaxes(vv, 0, 1)[None], scale,
                                    seg_q=seg_f[None], seg_k=seg_f[None], causal=False)[0]
        return attn(q[None], jnp.swapaxes(k, 0, 1)[None], jnp.swapaxes(vv, 0, 1)[None],
                    (seg_f[:, None] == seg_f[None, :])[None], scale)[0]

    if isinstance(is_full, (bool, np.bool_)):
        return frame(q, k, vv) if is_full else window(q, k, vv)
    return jax.lax.cond(is_full, frame, window, q, k, vv)


def _check_frames_fit(seg_f: Array, block: int) -> None:
    """Run-time guard of ``vision_frame_block``: raise if some frame has more than ``block``
    patches (the banded attention would silently drop part of it). Segments are contiguous, so
    a run longer than ``block`` is exactly a row equal to the row ``block`` further on."""
    n = seg_f.shape[0]
    if n <= block:
        return
    too_long = jnp.any((seg_f[:-block] == seg_f[block:]) & (seg_f[block:] >= 0))

    def check(bad):
        if bad:
            raise ValueError(f"a visual frame has more than runtime.vision_frame_block={block} patches; "
                             "raise vision_frame_block to the largest frame's t-slice h*w (or set it to 0)")

    jax.debug.callback(check, too_long)


def _vision_block(cfg: ModelConfig, x, p, is_full, *, cos, sin, seg_w, seg_f):
    v = cfg.vision
    cd = cfg.runtime.compute_dtype
    h = rms_norm(x, p["norm1"], v.rms_norm_eps)
    # 2-D matmuls (see _dense): the 3-D einsums transposed their outputs / gradients on CPU
    qkv = _dense(h, p["qkv_kernel"].astype(cd)) + p["qkv_bias"].astype(cd)    # [N, 3, Hv, d]
    q, k, vv = qkv[:, 0], qkv[:, 1], qkv[:, 2]                            # [N, Hv, d]
    q = q * cos[:, None] + rotate_half(q) * sin[:, None]
    k = k * cos[:, None] + rotate_half(k) * sin[:, None]
    o = _vision_attention(cfg, q, k, vv, seg_w, seg_f, is_full)            # [N, Hv, d]
    x = x + _dense(o, p["proj_kernel"].astype(cd), n_in=2) + p["proj_bias"].astype(cd)
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
    if rt.vision_frame_block and any(is_full):
        _check_frames_fit(va.seg_full, rt.vision_frame_block)

    def layer(x, p, full):
        return _vision_block(cfg, x, p, full, cos=cos, sin=sin, seg_w=va.seg_window, seg_f=va.seg_full), None

    # unrolled, each layer sees a NumPy flag and its attention shape is fixed at trace time;
    # under lax.scan the flag is traced and _vision_attention switches with lax.cond
    x, _ = _run_stack(layer, x, vparams["blocks"], is_full, scan=rt.scan_layers, remat=rt.remat)
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


def _dense(x: Array, w: Array, n_in: int = 1) -> Array:
    """``x [..., *in] @ w [*in, *out]`` over the last ``n_in`` axes of ``x``, as one 2D matmul.

    Tokens flattened to rows and one contracting axis: the backward's weight gradient is then a
    plain [in, rows] x [rows, out] dot. With the 3D einsum (two contracting axes, batch and seq)
    XLA CPU transposed the [rows, out] activation gradient first, a strided copy fused with the
    SwiGLU backward that cost about as much as the matmuls around it.
    """
    lead, inner = x.shape[:x.ndim - n_in], x.shape[x.ndim - n_in:]
    k = int(np.prod(inner))
    out = w.shape[n_in:]
    y = x.reshape(-1, k) @ w.reshape(k, -1)
    return y.reshape(lead + out)


def attend(cfg, q: Array, k: Array, v: Array, kv, *, mask, write_at) -> tuple[Array, Any]:
    """A decoder layer's attention, shared by the model families: q [B, n, H, d]; this chunk's
    k, v [B, K, n, d]; ``kv`` the layer's cache ``(k, v)`` [B, K, S, d] or None. With a cache the
    chunk's keys are written at ``write_at[B]`` first. ``mask``: :class:`CausalMask` (a whole
    sequence, no cache), :class:`SlotMask` (a chunk in a cache) or a dense [B, n, S] bool array;
    the kernel is ``runtime.attention`` resolved per site (:func:`_impl`).
    Returns ``(o [B, n, H, d], new (k, v) or None)``."""
    t = cfg.text
    cd = cfg.runtime.compute_dtype
    if kv is not None:
        k_all = _write_rows(kv[0], k.astype(kv[0].dtype), write_at)
        v_all = _write_rows(kv[1], v.astype(kv[1].dtype), write_at)
        new_kv = (k_all, v_all)
        k, v = k_all.astype(cd), v_all.astype(cd)
    else:
        new_kv = None
    if isinstance(mask, CausalMask):
        if kv is not None:
            raise ValueError("CausalMask is for a whole sequence without a cache; pass a [B, n, S] mask")
        impl = _impl(cfg, "sequence", q.shape[1])
        if impl == "xla":
            o = xla_causal_attention(q, k, v, mask.valid, t.head_dim ** -0.5)          # [B, H, n, d]
            o = jnp.swapaxes(o, 1, 2)
        elif impl == "blockwise":   # no [n, n] scores in forward or backward
            valid = mask.valid.astype(jnp.int32)
            o = blockwise_attention(q, k, v, t.head_dim ** -0.5, seg_q=jnp.ones_like(valid), seg_k=valid,
                                    causal=True)
        elif impl == "splash":      # padding its own segment: a padding query sees padding keys
            valid = mask.valid.astype(jnp.int32)
            o = splash_attention(q, k, v, t.head_dim ** -0.5, seg_q=valid, seg_k=valid, causal=True)
        else:  # a registered kernel gets the materialised mask
            o = attention_fn(impl)(q, k, v, causal_mask(mask.valid), t.head_dim ** -0.5)
    elif isinstance(mask, SlotMask):
        n, S = q.shape[1], k.shape[2]
        impl = _impl(cfg, "cache", S, decode=n == 1)
        if impl in DECODE_KERNELS:   # a decode kernel: row b sees slots [0, length + 1)
            o = DECODE_KERNELS.get(impl)(q[:, 0], k, v, mask.length + 1, t.head_dim ** -0.5)[:, None]
        elif impl == "blockwise":   # key blocks of the cache, no [n, S] scores
            B = q.shape[0]
            pos_q = mask.length[:, None] + jnp.arange(n, dtype=jnp.int32)[None]
            pos_k = jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (B, S))
            o = blockwise_attention(q, k, v, t.head_dim ** -0.5, seg_q=jnp.ones((B, n), jnp.int32),
                                    seg_k=jnp.ones((B, S), jnp.int32), pos_q=pos_q, pos_k=pos_k, causal=True)
        else:
            o = attention_fn(impl)(q, k, v, mask.dense(n, S), t.head_dim ** -0.5)
    else:
        o = attention_fn(cfg.runtime.attention)(q, k, v, mask, t.head_dim ** -0.5)
    return o, new_kv


def _text_layer(cfg: ModelConfig, x, p, kv, *, cos, sin, mask, write_at):
    t = cfg.text
    cd = cfg.runtime.compute_dtype
    h = rms_norm(x, p["attn_norm"], t.rms_norm_eps)
    q = _dense(h, p["q_kernel"].astype(cd)) + p["q_bias"].astype(cd)    # [B, n, H, d]
    k = _dense(h, p["k_kernel"].astype(cd)) + p["k_bias"].astype(cd)    # [B, n, K, d]
    v = _dense(h, p["v_kernel"].astype(cd)) + p["v_bias"].astype(cd)
    q = q * cos[:, :, None] + rotate_half(q) * sin[:, :, None]
    k = k * cos[:, :, None] + rotate_half(k) * sin[:, :, None]
    q = constrain(q, ("batch", "seq", "act_heads", None))
    o, new_kv = attend(cfg, q, jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2), kv, mask=mask, write_at=write_at)
    x = x + _dense(o, p["o_kernel"].astype(cd), n_in=2)                   # o [B, n, H, d]
    h = rms_norm(x, p["mlp_norm"], t.rms_norm_eps)
    g = _dense(h, p["gate_kernel"].astype(cd))
    u = _dense(h, p["up_kernel"].astype(cd))
    y = constrain(jax.nn.silu(g) * u, ("batch", "seq", "act_mlp"))
    x = x + _dense(y, p["down_kernel"].astype(cd))
    return constrain(x, ("batch", "seq", "act_embed")), new_kv


def embed_tokens(cfg: ModelConfig, params: dict, input_ids: Array, vis_embeds: Array | None,
                 vis_index: Array | None) -> Array:
    """Token embeddings with visual rows scattered in: ``vis_index[b, l] >= 0`` takes
    ``vis_embeds[vis_index[b, l]]`` (host-computed, so it works with padded static shapes;
    ``vis_embeds`` one table or one per row, see :func:`take_visual`)."""
    cd = cfg.runtime.compute_dtype
    x = jnp.take(params["embed"], input_ids, axis=0).astype(cd)
    if vis_embeds is not None:
        x = jnp.where((vis_index >= 0)[..., None], take_visual(vis_embeds.astype(cd), vis_index), x)
    return constrain(x, ("batch", "seq", "act_embed"))


def take_visual(table: Array, vis_index: Array) -> Array:
    """The visual row each token takes, ``[B, n, D]`` (junk where ``vis_index < 0``).

    ``table`` is one ``[M, D]`` for the whole batch (the sampler's: rows index into the call's
    items) or ``[B, M, D]`` per row (the trainers' vmap of the tower over rows: each row gathers
    from its own features, so a batch-sharded step gathers locally)."""
    idx = jnp.maximum(vis_index, 0)
    if table.ndim == 3:
        return jnp.take_along_axis(table, idx[..., None], axis=1)
    return jnp.take(table, idx, axis=0)


def decode_hidden(cfg: ModelConfig, params: dict, x: Array, position_ids: Array, mask: Array,
                  cache: KVCache | None = None, write_at: Array | None = None):
    """Run the decoder stack on embeddings ``x [B, n, D]``.

    ``mask [B, n, S]`` says which keys each query sees: its own chunk (S = n) without a cache, or
    cache slots with a cache (after this chunk's keys are written at ``write_at[B]``). Without a
    cache, ``CausalMask(valid[B, n])`` is the same as ``causal_mask(valid)`` and faster; with one,
    ``SlotMask(write_at)`` is the same as its :meth:`SlotMask.dense` array.
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


def hidden_states(cfg: ModelConfig, params: dict, input_ids: Array, vis: Array | None, vis_index: Array | None,
                  position_ids: Array, mask, cache: KVCache | None = None, write_at: Array | None = None):
    """Token ids -> ``(final-normed hidden states, updated cache)``: the decoder entry every model
    family exports with this signature (the sampler and trainers call it through
    :mod:`vital_jax.models.families`). ``vis`` is what this family's :func:`encode_vision`
    returns (here the merged embeddings [M, D]), or that stacked per row (a vmap over rows,
    [B, M, D], with ``vis_index`` per row), taken at ``vis_index >= 0``."""
    x = embed_tokens(cfg, params, input_ids, vis, vis_index)
    return decode_hidden(cfg, params, x, position_ids, mask, cache, write_at)


def zero_features(cfg: ModelConfig, tokens: int) -> np.ndarray:
    """Placeholder visual features of ``tokens`` rows, shaped like :func:`encode_vision`'s output
    (a call without visual items still passes features, so its program is the one with them)."""
    return np.zeros((tokens, cfg.text.hidden_size), np.float32)


def lm_logits(cfg: ModelConfig, params: dict, h: Array) -> Array:
    """float32 logits [B, n, V]."""
    cd = cfg.runtime.compute_dtype
    w = params["embed"].T if cfg.text.tie_word_embeddings else params["lm_head"]
    B, n, D = h.shape
    # 2D matmul (one contracting axis): see _dense; here the alternative transposed the whole
    # [B*n, V] logits gradient in the backward
    logits = jnp.dot(h.astype(cd).reshape(B * n, D), w.astype(cd), preferred_element_type=jnp.float32)
    logits = logits.reshape(B, n, -1)
    return constrain(logits, ("batch", "seq", "act_vocab"))


def _logit_chunks(n: int, chunk: int) -> list[tuple[int, int]]:
    """Static [start, end) position chunks for :func:`target_logprobs`: ``chunk`` positions each,
    grown so that there are at most 16 (the loop is unrolled: compile time grows with the count)."""
    if chunk <= 0 or n <= chunk:
        return [(0, n)]
    size = max(chunk, -(-n // 16))
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def target_logprobs(cfg: ModelConfig, params: dict, h: Array, targets: Array, where: Array | None = None,
                    *, with_entropy: bool = False):
    """``log p(targets[b, t] | h[b, t])`` ``[B, n]`` f32 from hidden states ``h [B, n, D]``, and
    with ``with_entropy`` the entropy of each predicting distribution.

    The lm head runs over chunks of ``cfg.runtime.logits_chunk`` positions (all rows together,
    so the batch sharding is untouched). With ``where [B, n]`` only those positions are wanted:
    the others are 0, and a chunk with none of them is skipped at run time (``lax.cond``; its
    forward and backward matmuls are not run). A training row's prompt, video and tool
    observations are most of its tokens and need no logits. Chunks also keep each softmax pass
    over a ``[B, chunk, V]`` block instead of the whole ``[B, n, V]`` logits.
    """
    n = h.shape[1]
    want = None if where is None else where.astype(bool)

    def chunk_fn(hc, tc, wc):
        logits = lm_logits(cfg, params, hc)                                    # [B, c, V] f32
        lse = jax.nn.logsumexp(logits, axis=-1)
        # target logit by comparison, not take_along_axis: its gradient would be a [B, c, V] scatter
        hit = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 2) == tc[..., None]
        logp = jnp.sum(jnp.where(hit, logits, 0.0), axis=-1) - lse
        ent = lse - jnp.sum(jnp.exp(logits - lse[..., None]) * logits, axis=-1) if with_entropy else jnp.zeros_like(lse)
        if wc is not None:
            logp, ent = jnp.where(wc, logp, 0.0), jnp.where(wc, ent, 0.0)
        return logp, ent

    def skip(hc, tc, wc):
        z = jnp.zeros(tc.shape, jnp.float32)
        return z, z

    outs = []
    for c0, c1 in _logit_chunks(n, cfg.runtime.logits_chunk):
        hc, tc = h[:, c0:c1], targets[:, c0:c1]
        if want is None:
            outs.append(chunk_fn(hc, tc, None))
        else:
            wc = want[:, c0:c1]
            outs.append(jax.lax.cond(jnp.any(wc), chunk_fn, skip, hc, tc, wc))
    logp = jnp.concatenate([o[0] for o in outs], axis=1)
    return (logp, jnp.concatenate([o[1] for o in outs], axis=1)) if with_entropy else logp


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
    h, _ = decode_hidden(cfg, params, x, position_ids, CausalMask(attention_mask))
    return lm_logits(cfg, params, h)
