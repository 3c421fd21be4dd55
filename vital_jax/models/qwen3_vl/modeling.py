"""Qwen3-VL (dense) in the same functional style as :mod:`vital_jax.models.qwen2_5_vl.modeling`.

NNX modules are only parameter containers (each ``nnx.Param`` carries its logical axes); the
forward pass is plain functions of nested dicts of arrays, stacked layers run under ``lax.scan``
or unrolled (``runtime.scan_layers``) with remat, and attention goes through the Qwen2.5 family's
``ATTENTION`` registry, so ``runtime.attention`` means the same in both families. Generic pieces
(RMSNorm, rotate-half, the 2-D vision rotary, the stack runner, the attention kernels, the lm head
layout) are imported from the Qwen2.5 module rather than copied.

Shapes: B batch, L tokens, D text hidden, H/K query/kv heads, d head dim, F MLP width, V vocab,
N vision patches, C vision hidden, M merged visual tokens (N / merge_unit), G DeepStack features.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vital_jax.models.qwen2_5_vl.blockwise import blockwise_attention
from vital_jax.models.qwen2_5_vl.modeling import (
    CausalMask, KVCache, SlotMask, _banded_attention, _check_frames_fit, _dense, _impl, _param, _run_stack,
    _unflatten, attend, attention_fn, lm_logits, take_visual, rms_norm, rotate_half, target_logprobs, vision_cos_sin,
)
from vital_jax.models.qwen2_5_vl.splash import splash_attention
from vital_jax.models.qwen3_vl.config import ModelConfig
from vital_jax.sharding import constrain

Array = jax.Array

__all__ = [
    "CausalMask", "KVCache", "SlotMask", "VisionArrays", "abstract_params", "decode_hidden", "embed_tokens",
    "encode_vision", "hidden_states", "init_params", "layer_norm", "lm_logits", "model_logits", "mrope_cos_sin",
    "param_logical_axes", "param_shardings", "target_logprobs", "vision_arrays", "zero_features",
]


# ---------------------------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------------------------
class TextLayers(nnx.Module):
    """All decoder layers stacked on a leading ``layers`` axis (Qwen3: q/k norms, no biases)."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        t, dt = cfg.text, cfg.runtime.param_dtype
        L, D, H, K, d, F = t.num_layers, t.hidden_size, t.num_heads, t.num_kv_heads, t.head_dim, t.intermediate_size
        P = functools.partial(_param, rngs, dtype=dt)
        lay = ("layers",)
        self.attn_norm = P((L, D), lay + ("norm",), init="ones")
        self.q_kernel = P((L, D, H, d), lay + ("embed", "heads", "head_dim"))
        self.k_kernel = P((L, D, K, d), lay + ("embed", "kv_heads", "head_dim"))
        self.v_kernel = P((L, D, K, d), lay + ("embed", "kv_heads", "head_dim"))
        self.q_norm = P((L, d), lay + ("head_dim",), init="ones")
        self.k_norm = P((L, d), lay + ("head_dim",), init="ones")
        self.o_kernel = P((L, H, d, D), lay + ("heads", "head_dim", "embed"))
        self.mlp_norm = P((L, D), lay + ("norm",), init="ones")
        self.gate_kernel = P((L, D, F), lay + ("embed", "mlp"))
        self.up_kernel = P((L, D, F), lay + ("embed", "mlp"))
        self.down_kernel = P((L, F, D), lay + ("mlp", "embed"))


class VisionBlocks(nnx.Module):
    """All vision blocks stacked on a leading ``layers`` axis (LayerNorm, GELU MLP, all biased)."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        v, dt = cfg.vision, cfg.runtime.param_dtype
        L, C, Hv, d, F = v.depth, v.hidden_size, v.num_heads, v.head_dim, v.intermediate_size
        P = functools.partial(_param, rngs, dtype=dt)
        lay = ("layers",)
        self.norm1_scale = P((L, C), lay + ("norm",), init="ones")
        self.norm1_bias = P((L, C), lay + ("norm",), init="zeros")
        self.qkv_kernel = P((L, C, 3, Hv, d), lay + ("vis_embed", None, "vis_heads", "head_dim"))
        self.qkv_bias = P((L, 3, Hv, d), lay + (None, "vis_heads", "head_dim"), init="zeros")
        self.proj_kernel = P((L, Hv, d, C), lay + ("vis_heads", "head_dim", "vis_embed"))
        self.proj_bias = P((L, C), lay + ("norm",), init="zeros")
        self.norm2_scale = P((L, C), lay + ("norm",), init="ones")
        self.norm2_bias = P((L, C), lay + ("norm",), init="zeros")
        self.fc1_kernel = P((L, C, F), lay + ("vis_embed", "vis_mlp"))
        self.fc1_bias = P((L, F), lay + ("vis_mlp",), init="zeros")
        self.fc2_kernel = P((L, F, C), lay + ("vis_mlp", "vis_embed"))
        self.fc2_bias = P((L, C), lay + ("norm",), init="zeros")


class Merger(nnx.Module):
    """Patch merger: 2x2 patches -> one text-width token. ``postshuffle`` (the DeepStack mergers)
    normalises the concatenated 4C vector instead of each patch's C. ``stack`` > 0 stacks that many
    mergers on a leading ``layers`` axis."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, *, postshuffle: bool, stack: int = 0):
        v, dt = cfg.vision, cfg.runtime.param_dtype
        C, Cm, D = v.hidden_size, v.hidden_size * v.merge_unit, v.out_hidden_size
        P = functools.partial(_param, rngs, dtype=dt)
        lead, lay = ((stack,), ("layers",)) if stack else ((), ())
        Cn = Cm if postshuffle else C
        self.norm_scale = P(lead + (Cn,), lay + ("norm",), init="ones")
        self.norm_bias = P(lead + (Cn,), lay + ("norm",), init="zeros")
        self.fc1_kernel = P(lead + (Cm, Cm), lay + ("vis_merge", "vis_mlp"))
        self.fc1_bias = P(lead + (Cm,), lay + ("vis_mlp",), init="zeros")
        self.fc2_kernel = P(lead + (Cm, D), lay + ("vis_mlp", "embed"))
        self.fc2_bias = P(lead + (D,), lay + ("norm",), init="zeros")


class VisionTower(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        v, dt = cfg.vision, cfg.runtime.param_dtype
        P = functools.partial(_param, rngs, dtype=dt)
        C = v.hidden_size
        self.patch_kernel = P((v.patch_dim, C), ("vis_patch", "vis_embed"))
        self.patch_bias = P((C,), ("norm",), init="zeros")
        self.pos_embed = P((v.num_position_embeddings, C), (None, "vis_embed"))
        self.blocks = VisionBlocks(cfg, rngs)
        self.merger = Merger(cfg, rngs, postshuffle=False)
        if v.deepstack_visual_indexes:
            self.deepstack = Merger(cfg, rngs, postshuffle=True, stack=len(v.deepstack_visual_indexes))


class Qwen3VL(nnx.Module):
    """Parameter tree: ``vision``, ``embed``, ``layers``, ``final_norm``, ``lm_head`` (untied only)."""

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
    graphdef, state = nnx.split(Qwen3VL(cfg, nnx.Rngs(params=seed)))
    return graphdef, nnx.to_pure_dict(state)


def abstract_params(cfg: ModelConfig) -> dict:
    """Shapes/dtypes of the params (no memory), as ``jax.ShapeDtypeStruct`` leaves."""
    return nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: Qwen3VL(cfg, nnx.Rngs(params=0)))))


def param_logical_axes(cfg: ModelConfig) -> dict:
    """The logical axis names of every parameter, same tree structure as the params."""
    state = nnx.state(nnx.eval_shape(lambda: Qwen3VL(cfg, nnx.Rngs(params=0))))
    flat = {tuple(p): v.get_metadata().get("logical_axes") for p, v in nnx.to_flat_state(state)}
    return _unflatten(flat)


def param_shardings(cfg: ModelConfig, mesh) -> dict:
    """NamedShardings of every parameter on ``mesh`` via the logical rules table."""
    from vital_jax.sharding import named_sharding

    shapes, axes = abstract_params(cfg), param_logical_axes(cfg)
    return jax.tree.map(lambda s, a: named_sharding(mesh, a, s.shape), shapes, axes,
                        is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct))


# ---------------------------------------------------------------------------------------------
# small pieces
# ---------------------------------------------------------------------------------------------
def layer_norm(x: Array, scale: Array, bias: Array, eps: float) -> Array:
    """LayerNorm with float32 statistics (the vision tower's norm; the text side uses RMSNorm)."""
    x32 = x.astype(jnp.float32)
    mu = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mu), axis=-1, keepdims=True)
    y = ((x32 - mu) * jax.lax.rsqrt(var + eps)).astype(x.dtype)
    return y * scale.astype(x.dtype) + bias.astype(x.dtype)


def mrope_axis_of(head_dim: int, section, interleaved: bool = True) -> np.ndarray:
    """Which position axis (0 t, 1 h, 2 w) drives each of the ``head_dim / 2`` rotary frequencies.

    Interleaved (Qwen3-VL): frequency ``j`` follows h when ``j % 3 == 1`` and ``j < 3 * s_h``, w when
    ``j % 3 == 2`` and ``j < 3 * s_w``, t otherwise, so every axis gets high and low frequencies
    (the contiguous Qwen2.5 split gave t only the fastest ones and w only the slowest).
    """
    half = head_dim // 2
    if not interleaved:
        return np.repeat(np.arange(3), section)
    j = np.arange(half)
    axis = np.zeros(half, np.int64)
    axis[(j % 3 == 1) & (j < 3 * section[1])] = 1
    axis[(j % 3 == 2) & (j < 3 * section[2])] = 2
    return axis


def mrope_cos_sin(position_ids: Array, head_dim: int, theta: float, section, dtype,
                  interleaved: bool = True) -> tuple[Array, Array]:
    """M-RoPE tables. position_ids [3, B, L] -> cos, sin [B, L, d] (the half duplicated, as
    rotate-half pairs frequency j with j + d/2)."""
    # float32 inverse frequencies, as the reference computes them: a float64 table differs in the
    # last bit, and that error grows with the position (~1e-4 rad at 1e4 tokens)
    inv = 1.0 / (np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)))
    sel = position_ids.astype(jnp.float32)[mrope_axis_of(head_dim, section, interleaved)]   # [d/2, B, L]
    freqs = jnp.moveaxis(sel, 0, -1) * jnp.asarray(inv, jnp.float32)                     # [B, L, d/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype)


# ---------------------------------------------------------------------------------------------
# vision tower
# ---------------------------------------------------------------------------------------------
class VisionArrays(NamedTuple):
    """Device-side vision inputs (host-computed by :func:`vision_arrays`), patches in HF order:
    items in order, per item (t, h-block, w-block, row-in-block, col-in-block)."""

    pixels: Array       # [N, patch_dim] f32, zero rows for padding
    seg: Array          # [N] int32 frame id (one temporal slice of one item); -1 for padding
    rot_hw: Array       # [N, 2] int32 (row, col) of each patch in its frame
    interp_idx: Array   # [N, 4] int32 rows of the learned position table (bilinear taps)
    interp_w: Array     # [N, 4] f32 their weights (0 for padding)


def _axis_taps(index: np.ndarray, size: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear taps into a ``side``-long table for target ``index`` on an axis of ``size``, with
    aligned corners (target 0 -> source 0, target size-1 -> source side-1), in float32 with the
    reference's order of operations so the taps (a floor) land on the same side of each edge."""
    src = index.astype(np.float32) * np.float32(side - 1) / np.maximum(size - 1, 1).astype(np.float32)
    lo = np.floor(src)
    taps = np.clip(lo.astype(np.int64)[:, None] + np.arange(2), 0, side - 1)
    w = np.clip(1 - np.abs(src[:, None] - lo[:, None] - np.arange(2, dtype=np.float32)), 0, None)
    return taps, w.astype(np.float32)


def vision_arrays(cfg: ModelConfig, pixel_values, grid_thw, pad_to: int | None = None) -> VisionArrays:
    """Pixels ``[N, patch_dim]`` (HF order) + grids ``[n, 3]`` -> the tower's arrays, padded to
    ``pad_to`` patches (a multiple of the merge unit) for static shapes."""
    v = cfg.vision
    pixel_values = np.asarray(pixel_values, np.float32)
    grid = np.asarray(grid_thw, np.int64).reshape(-1, 3)
    n = int(np.sum(np.prod(grid, axis=1)))
    if pixel_values.shape != (n, v.patch_dim):
        raise ValueError(f"pixel_values has shape {pixel_values.shape}; grids {grid.tolist()} need ({n}, {v.patch_dim})")
    m = v.spatial_merge_size
    if np.any(grid[:, 1:] % m) or np.any(grid < 1):
        raise ValueError(f"grids {grid.tolist()}: h and w must be positive multiples of {m}")
    total = n if pad_to is None else int(pad_to)
    if total < n or total % v.merge_unit:
        raise ValueError(f"pad_to={pad_to}: need >= {n} patches and a multiple of {v.merge_unit}")
    seg = np.full(total, -1, np.int32)
    rot = np.zeros((total, 2), np.int32)
    idx = np.zeros((total, 4), np.int32)
    wts = np.zeros((total, 4), np.float32)
    side = v.num_grid_per_side
    start = frame = 0
    for t, h, w in grid.tolist():
        # one frame's patches in merge-block order -> (row, col) on the h x w grid
        k = np.arange(h * w)
        blocks_w = w // m
        row = (k // (m * m * blocks_w)) * m + (k // m) % m
        col = ((k // (m * m)) % blocks_w) * m + k % m
        ht, hw_ = _axis_taps(row, np.full_like(row, h), side)
        wt, ww = _axis_taps(col, np.full_like(col, w), side)
        fi = (ht[:, :, None] * side + wt[:, None, :]).reshape(-1, 4)
        fw = (hw_[:, :, None] * ww[:, None, :]).reshape(-1, 4)
        for _ in range(t):  # every frame of a video has the same rows, its own attention segment
            sl = slice(start, start + h * w)
            seg[sl], rot[sl, 0], rot[sl, 1], idx[sl], wts[sl] = frame, row, col, fi, fw
            start += h * w
            frame += 1
    pix = np.zeros((total, v.patch_dim), np.float32)
    pix[:n] = pixel_values
    return VisionArrays(pix, seg, rot, idx, wts)   # NumPy: batches stack them on the host


def _frame_attention(cfg: ModelConfig, q: Array, k: Array, vv: Array, seg: Array) -> Array:
    """Self-attention within each frame (segment); q, k, vv [N, Hv, d] -> [N, Hv, d]. Padding
    (segment -1) attends to padding only, so no row is empty."""
    scale = cfg.vision.head_dim ** -0.5
    block = cfg.runtime.vision_frame_block
    if block:  # caller promises frames of <= block patches: banded, ~3 * block / N of the cost
        return _banded_attention(attention_fn(cfg.runtime.attention), q, k, vv, seg, block, scale)
    kh, vh = jnp.swapaxes(k, 0, 1)[None], jnp.swapaxes(vv, 0, 1)[None]
    impl = _impl(cfg, "sequence", q.shape[0])
    if impl == "blockwise":
        return blockwise_attention(q[None], kh, vh, scale, seg_q=seg[None], seg_k=seg[None])[0]
    if impl == "splash":
        return splash_attention(q[None], kh, vh, scale, seg_q=seg[None], seg_k=seg[None], causal=False)[0]
    return attention_fn(impl)(q[None], kh, vh, (seg[:, None] == seg[None, :])[None], scale)[0]


def _vision_block(cfg: ModelConfig, x: Array, p: dict, *, cos, sin, seg) -> Array:
    v = cfg.vision
    cd = cfg.runtime.compute_dtype
    h = layer_norm(x, p["norm1_scale"], p["norm1_bias"], v.layer_norm_eps)
    qkv = _dense(h, p["qkv_kernel"].astype(cd)) + p["qkv_bias"].astype(cd)      # [N, 3, Hv, d]
    q, k, vv = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    q = q * cos[:, None] + rotate_half(q) * sin[:, None]
    k = k * cos[:, None] + rotate_half(k) * sin[:, None]
    o = _frame_attention(cfg, q, k, vv, seg)
    x = x + _dense(o, p["proj_kernel"].astype(cd), n_in=2) + p["proj_bias"].astype(cd)
    h = layer_norm(x, p["norm2_scale"], p["norm2_bias"], v.layer_norm_eps)
    h = jax.nn.gelu(h @ p["fc1_kernel"].astype(cd) + p["fc1_bias"].astype(cd), approximate=v.gelu_approximate)
    return x + h @ p["fc2_kernel"].astype(cd) + p["fc2_bias"].astype(cd)


def _merge(cfg: ModelConfig, x: Array, p: dict, *, postshuffle: bool) -> Array:
    """[N, C] patches -> [N / merge_unit, D]; consecutive merge_unit rows are one 2x2 block."""
    v = cfg.vision
    cd = cfg.runtime.compute_dtype
    Cm = v.merge_unit * v.hidden_size
    if postshuffle:
        h = layer_norm(x.reshape(-1, Cm), p["norm_scale"], p["norm_bias"], v.layer_norm_eps)
    else:
        h = layer_norm(x, p["norm_scale"], p["norm_bias"], v.layer_norm_eps).reshape(-1, Cm)
    # the merger's GELU is the exact one whatever the blocks use (nn.GELU() in the reference)
    h = jax.nn.gelu(h @ p["fc1_kernel"].astype(cd) + p["fc1_bias"].astype(cd), approximate=False)
    return h @ p["fc2_kernel"].astype(cd) + p["fc2_bias"].astype(cd)


def encode_vision(cfg: ModelConfig, vparams: dict, vi: VisionArrays) -> tuple[Array, Array | None]:
    """``(merged [M, D], deepstack [G, M, D] or None)``, rows in placeholder order (padding last).

    ``deepstack[g]`` comes from block ``sorted(deepstack_visual_indexes)[g]`` through the merger
    at that block's position in ``deepstack_visual_indexes`` (the order the decoder consumes
    them: layer g gets feature g). The blocks run as segments between those blocks, each segment
    scanned, so no [depth, N, C] stack of every block's output is kept.
    """
    v, rt = cfg.vision, cfg.runtime
    cd = rt.compute_dtype
    x = vi.pixels.astype(cd) @ vparams["patch_kernel"].astype(cd) + vparams["patch_bias"].astype(cd)
    # learned absolute positions, bilinearly resampled from the square table to each frame's grid
    pos = jnp.take(vparams["pos_embed"].astype(cd), vi.interp_idx, axis=0)              # [N, 4, C]
    x = x + jnp.sum(pos * vi.interp_w.astype(cd)[..., None], axis=1)
    cos, sin = vision_cos_sin(vi.rot_hw, v.head_dim, cd, v.rope_theta)
    if rt.vision_frame_block:
        _check_frames_fit(vi.seg, rt.vision_frame_block)

    def layer(x, p, _):
        return _vision_block(cfg, x, p, cos=cos, sin=sin, seg=vi.seg), None

    def run(x, lo, hi):  # blocks [lo, hi)
        if hi <= lo:
            return x
        part = jax.tree.map(lambda a: a[lo:hi], vparams["blocks"])
        return _run_stack(layer, x, part, None, scan=rt.scan_layers, remat=rt.remat)[0]

    order = sorted(v.deepstack_visual_indexes)
    feats, done = [], 0
    for blk in order:
        x = run(x, done, blk + 1)
        done = blk + 1
        g = v.deepstack_visual_indexes.index(blk)
        feats.append(_merge(cfg, x, jax.tree.map(lambda a: a[g], vparams["deepstack"]), postshuffle=True))
    x = run(x, done, v.depth)
    merged = _merge(cfg, x, vparams["merger"], postshuffle=False)
    return merged, (jnp.stack(feats) if feats else None)


# ---------------------------------------------------------------------------------------------
# text decoder
# ---------------------------------------------------------------------------------------------
def _text_layer(cfg: ModelConfig, x: Array, p: dict, extra, *, cos, sin, mask, write_at, vis_index):
    """One decoder layer; ``extra = (kv, ds)``: the layer's cache ``(k, v)`` or None, and its
    DeepStack feature [M, D] or None. Returns ``(x, new kv)``."""
    kv, ds = extra
    t = cfg.text
    cd = cfg.runtime.compute_dtype
    h = rms_norm(x, p["attn_norm"], t.rms_norm_eps)
    # Qwen3: RMSNorm over each head's d features before the rotary (keeps q.k bounded)
    q = rms_norm(_dense(h, p["q_kernel"].astype(cd)), p["q_norm"], t.rms_norm_eps)     # [B, n, H, d]
    k = rms_norm(_dense(h, p["k_kernel"].astype(cd)), p["k_norm"], t.rms_norm_eps)     # [B, n, K, d]
    v = _dense(h, p["v_kernel"].astype(cd))
    q = q * cos[:, :, None] + rotate_half(q) * sin[:, :, None]
    k = k * cos[:, :, None] + rotate_half(k) * sin[:, :, None]
    q = constrain(q, ("batch", "seq", "act_heads", None))
    o, new_kv = attend(cfg, q, jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2), kv, mask=mask, write_at=write_at)
    x = x + _dense(o, p["o_kernel"].astype(cd), n_in=2)
    h = rms_norm(x, p["mlp_norm"], t.rms_norm_eps)
    y = constrain(jax.nn.silu(_dense(h, p["gate_kernel"].astype(cd))) * _dense(h, p["up_kernel"].astype(cd)),
                  ("batch", "seq", "act_mlp"))
    x = x + _dense(y, p["down_kernel"].astype(cd))
    if ds is not None:
        # DeepStack: this layer's visual feature is added at the visual positions of its output
        rows = take_visual(ds.astype(cd), vis_index)                                   # [B, n, D]
        x = x + jnp.where((vis_index >= 0)[..., None], rows, jnp.zeros((), cd))
    return constrain(x, ("batch", "seq", "act_embed")), new_kv


def embed_tokens(cfg: ModelConfig, params: dict, input_ids: Array, vis_embeds: Array | None,
                 vis_index: Array | None) -> Array:
    """Token embeddings with visual rows scattered in: ``vis_index[b, l] >= 0`` takes
    ``vis_embeds[vis_index[b, l]]`` (host-computed, so padded static shapes work)."""
    cd = cfg.runtime.compute_dtype
    x = jnp.take(params["embed"], input_ids, axis=0).astype(cd)
    if vis_embeds is not None:
        x = jnp.where((vis_index >= 0)[..., None], take_visual(vis_embeds.astype(cd), vis_index), x)
    return constrain(x, ("batch", "seq", "act_embed"))


def decode_hidden(cfg: ModelConfig, params: dict, x: Array, position_ids: Array, mask,
                  cache: KVCache | None = None, write_at: Array | None = None,
                  deepstack: Array | None = None, vis_index: Array | None = None):
    """The decoder stack on embeddings ``x [B, n, D]`` -> ``(final-normed hidden, new cache)``.

    ``mask``, ``cache`` and ``write_at`` mean what they mean in the Qwen2.5 decoder (one shared
    attention, :func:`~vital_jax.models.qwen2_5_vl.modeling.attend`). ``deepstack [G, M, D]``
    with ``vis_index [B, n]``: layer g < G adds ``deepstack[g]`` at the visual positions after
    it. The first G layers and the rest run as two stacks, so the later layers carry no DeepStack
    input; with a cache, its two layer ranges are joined after (one copy per call that has
    DeepStack features: an extend, never a decode step).
    """
    t, rt = cfg.text, cfg.runtime
    cos, sin = mrope_cos_sin(position_ids, t.head_dim, t.rope_theta, t.mrope_section, rt.compute_dtype,
                             t.mrope_interleaved)

    def layer(x, p, extra):
        return _text_layer(cfg, x, p, extra, cos=cos, sin=sin, mask=mask, write_at=write_at, vis_index=vis_index)

    kvs = None if cache is None else (cache.k, cache.v)
    G = 0 if deepstack is None else deepstack.shape[0]
    if not G:
        x, new = _run_stack(layer, x, params["layers"], (kvs, None), scan=rt.scan_layers, remat=rt.remat)
        return rms_norm(x, params["final_norm"], t.rms_norm_eps), (None if cache is None else KVCache(*new))
    if vis_index is None:
        raise ValueError("deepstack features need vis_index")
    part = lambda tree, sl: jax.tree.map(lambda a: a[sl], tree)  # noqa: E731
    first, rest = slice(0, G), slice(G, t.num_layers)
    x, new_a = _run_stack(layer, x, part(params["layers"], first), (part(kvs, first), deepstack),
                          scan=rt.scan_layers, remat=rt.remat)
    new_b = None
    if G < t.num_layers:
        x, new_b = _run_stack(layer, x, part(params["layers"], rest), (part(kvs, rest), None),
                              scan=rt.scan_layers, remat=rt.remat)
    x = rms_norm(x, params["final_norm"], t.rms_norm_eps)
    if cache is None:
        return x, None
    new = new_a if new_b is None else jax.tree.map(lambda a, b: jnp.concatenate([a, b]), new_a, new_b)
    return x, KVCache(*new)


def hidden_states(cfg: ModelConfig, params: dict, input_ids: Array, vis, vis_index: Array | None,
                  position_ids: Array, mask, cache: KVCache | None = None, write_at: Array | None = None):
    """Token ids -> ``(final-normed hidden states, updated cache)``, the decoder entry with the
    signature every family exports (see the Qwen2.5 one). ``vis`` is :func:`encode_vision`'s
    ``(merged [M, D], deepstack [G, M, D] or None)``, or that stacked per row by a vmap over rows
    (``[B, M, D]``, ``[B, G, M, D]``, with ``vis_index`` per row), or None."""
    merged, deepstack = (None, None) if vis is None else vis
    if merged is not None and merged.ndim == 3 and deepstack is not None:
        deepstack = jnp.moveaxis(deepstack, 1, 0)       # layers first: the stack scans over G
    x = embed_tokens(cfg, params, input_ids, merged, vis_index)
    return decode_hidden(cfg, params, x, position_ids, mask, cache, write_at,
                         deepstack=None if merged is None else deepstack, vis_index=vis_index)


def zero_features(cfg: ModelConfig, tokens: int):
    """Placeholder features of ``tokens`` rows shaped like :func:`encode_vision`'s output."""
    D, G = cfg.text.hidden_size, len(cfg.vision.deepstack_visual_indexes)
    return (np.zeros((tokens, D), np.float32), np.zeros((G, tokens, D), np.float32) if G else None)


def model_logits(cfg: ModelConfig, params: dict, input_ids: Array, position_ids: Array,
                 attention_mask: Array, vision: VisionArrays | None = None, vis_index: Array | None = None,
                 vis_embeds: Array | None = None, deepstack: Array | None = None) -> Array:
    """The whole model on a padded batch (pure; jit with ``cfg`` static). Logits [B, L, V] f32.

    ``position_ids [3, B, L]`` are explicit (t, h, w M-RoPE positions). Visual inputs: ``vision``
    (pixels + layout, encoded here; rows are images then videos, as ``vis_index`` counts them) or
    precomputed ``vis_embeds`` / ``deepstack`` from :func:`encode_vision` (e.g. a frozen tower's
    rollout features).
    """
    if vision is not None:
        vis_embeds, deepstack = encode_vision(cfg, params["vision"], vision)
        if cfg.runtime.freeze_vision:
            vis_embeds, deepstack = jax.lax.stop_gradient((vis_embeds, deepstack))
    h, _ = hidden_states(cfg, params, input_ids, None if vis_embeds is None else (vis_embeds, deepstack), vis_index,
                         position_ids, CausalMask(attention_mask))
    return lm_logits(cfg, params, h)
