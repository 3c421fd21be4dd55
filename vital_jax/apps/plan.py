"""Memory planner: per-device bytes of a training run on a mesh, without allocating anything.

``plan(cfg, mesh_shape)`` answers "does this config fit on this pod?" before renting it:

- **parameters, optimizer state, batch** (the train step's *arguments*) and the new state (its
  *outputs*): exact. Shapes come from ``jax.eval_shape`` of the real model and the real optimizer
  (:func:`vital_jax.trainers.optim.make_optimizer`), shardings from the logical rules
  (:mod:`vital_jax.sharding`) on a :class:`jax.sharding.AbstractMesh`, so any pod size works on
  a laptop; each leaf counts ``prod(shard_shape) * itemsize``.
- **gradients**: the step's accumulator plus one micro-batch's gradient (``lax.scan`` over
  micro-batches), both in the parameter dtype and sharded like the parameters, plus the
  optimizer's float32 update tree (optax promotes ``lr * update`` to float32 before
  ``apply_updates`` casts back).
- **gathered weights**: full-size copies the partitioned step materialises (one layer's weights
  and weight gradient under FSDP; the embedding table when the vocabulary is split over
  ``tensor``), see :func:`gathered_weight_bytes`.
- **activations**: an analytic model of what the backward pass keeps (below), per device:
  ``T = b_dev * L`` tokens of one micro-batch on one device (rows split over ``data x fsdp``
  where they divide, exactly as ``logical_to_spec`` does), head/MLP/vocab widths divided by
  ``tensor`` where it divides them.
- **KV cache** (RL): the sampler's ``[layers, rollout_batch, kv_heads, cache_length + slack,
  head_dim]`` keys and values in the compute dtype, sharded like ``Sampler._state_shardings``.
- **reference policy** (RL with ``beta > 0``): a second copy of the parameters.

Activation model (bytes; ``c`` = compute-dtype size, ``D`` hidden, ``H``/``K`` query/KV heads,
``d`` head dim, ``F`` MLP width, all per device after tensor sharding). It follows what XLA keeps
for our layer code (read off the buffer assignment of the compiled step). The attention's own
share depends on ``runtime.attention`` (:func:`attention_bytes`): ``xla`` materialises the
scores, and both the masked scores and the softmax probabilities are saved in float32
(``kept = 2 * b * H * L^2 * 4``, backward ``peak = 1.5 * kept``); ``blockwise`` keeps a float32
log-sum-exp per row and head (``kept = b * H * L * 4``) and its backward holds float32
dq/dk/dv plus a few score blocks: linear in ``L``::

    saved per layer:
      remat none     = kept + T * c * (5D + 2Kd + 6F)       # inputs of every matmul/norm/SwiGLU
      remat dots     = T * c * (Hd + 2Kd + 2D + 2F)         # outputs of the 2-D matmuls only
      remat full     = T * c * D                            # the layer input
    layer working set (attention backward of one layer, recomputed under remat)
                     = peak + T * c * (2D + 2(H + K)d) + 2 * T * 4 * D
    head (loss)      = 2 * b * (L - 1) * V * 4  + 8 * T * 4 * D  # f32 logits + their gradient;
                                                                 # embeddings, final norm, rope
    activations      = layers * saved + max(head, layer working set)

The vision tower is the same model on ``N`` patches per row with window attention over blocks of
``w = window^2`` patches (scores ``b * Hv * N * 3w``) and the full-attention blocks dense
(:func:`attention_bytes` over ``N`` rows, ``runtime.vision_frame_block = 0`` as the trainer
runs it); under
``lax.scan`` a layer's residuals are the union of both ``lax.cond`` branches, so every scanned
layer keeps both. A frozen tower (RL) runs outside the step and costs nothing here.

Both model families (:mod:`vital_jax.models.families`): the parameter/optimizer rows come from
the family's own ``abstract_params`` + ``param_shardings``. Qwen3-VL (presets
``qwen3_vl_<size>``, or ``init_from`` with ``model_type: qwen3_vl``) shares the decoder terms (its
q/k norms add their float32 residuals: ``qk_norm`` in :func:`_decoder_terms`); DeepStack adds one
``[b * N/4, D]`` feature to each of its first ``G`` layers; its tower has no windows (every block
attends within frames over all ``N`` rows) and LayerNorm + GELU blocks: see
:func:`_qwen3_vl_activations`, checked against XLA in ``tests/apps/test_plan_qwen3_vl.py``.

Accuracy: arguments and outputs match XLA's ``memory_analysis()`` to the byte up to tiny
replicated scalars; the temporaries (gradients + activations) are a model, checked against XLA on
CPU in ``tests/apps/test_plan.py``. Other backends fuse differently (TPU usually keeps less);
treat the activation row as a planning estimate, not a guarantee, and keep the headroom.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vital_jax.config.run_config import ConfigError, RunConfig, resolve_micro_batches
from vital_jax.errors import VitalError

GB = 1e9   # decimal GB, like accelerator spec sheets (v5p: 95 GB HBM, H100: 80 GB)

# Qwen2.5-VL shapes beyond the presets of ModelConfig (text part from the HF config.json files;
# the vision tower is the 7B's, projecting to the text width).
EXTRA_PRESETS: dict[str, dict[str, Any]] = {
    "32b": dict(vocab_size=152064, hidden_size=5120, intermediate_size=27648, num_layers=64,
                num_heads=40, num_kv_heads=8, tie_word_embeddings=False),
    "72b": dict(vocab_size=152064, hidden_size=8192, intermediate_size=29568, num_layers=80,
                num_heads=64, num_kv_heads=8, tie_word_embeddings=False),
}
PRESETS = ("tiny", "3b", "7b", "32b", "72b")
# Qwen3-VL (``vital_jax.models.qwen3_vl``): ``qwen3_vl_<size>`` -> ``ModelConfig.preset(size)``,
# ``qwen3_vl_tiny`` -> its test model with the tiny run's 1024-token vocabulary
QWEN3_VL_PRESETS = ("qwen3_vl_tiny", "qwen3_vl_2b", "qwen3_vl_4b", "qwen3_vl_8b", "qwen3_vl_32b")


class PlanError(VitalError, ValueError):
    """A plan request that cannot be answered (bad mesh string, unknown model...)."""


# --------------------------------------------------------------------------- inputs


def parse_mesh(text: str) -> tuple[int, int, int]:
    """``"data=2,fsdp=16,tensor=1"`` -> (2, 16, 1); omitted axes are 1, ``-1`` is resolved later."""
    sizes = {"data": 1, "fsdp": 1, "tensor": 1}
    seen = set()
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, val = part.partition("=")
        key = key.strip()
        if not sep or key not in sizes:
            raise PlanError(f"--mesh {text!r}: expected data=N,fsdp=N,tensor=N (got {part!r})")
        if key in seen:
            raise PlanError(f"--mesh {text!r}: axis {key} given twice")
        try:
            n = int(val)
        except ValueError:
            raise PlanError(f"--mesh {text!r}: {key}={val!r} is not an integer "
                            "(expected data=N,fsdp=N,tensor=N)") from None
        if n == 0 or n < -1:
            raise PlanError(f"--mesh {text!r}: {key}={n}; each axis must be >= 1 (or -1: the rest)")
        sizes[key] = n
        seen.add(key)
    if not seen:
        raise PlanError(f"--mesh {text!r}: expected data=N,fsdp=N,tensor=N")
    return sizes["data"], sizes["fsdp"], sizes["tensor"]


def resolve_mesh(shape: Sequence[int], devices: int | None) -> tuple[int, int, int]:
    """Fill a ``-1`` axis from ``devices``; check the product when both are given."""
    from vital_jax.config.run_config import MeshConfig

    shape = list(shape)
    if -1 in shape:
        if devices is None:
            raise PlanError(f"mesh {shape} has a -1 axis: give --devices N to resolve it")
    n = devices if devices is not None else math.prod(shape)
    try:
        return MeshConfig(data=shape[0], fsdp=shape[1], tensor=shape[2]).resolve(n)
    except ConfigError as e:
        raise PlanError(str(e)) from None


def _known() -> str:
    return ", ".join(PRESETS + QWEN3_VL_PRESETS)


def preset_from_name(name: str) -> str:
    """The preset an ``init_from`` path that is not on disk names: ``.../Qwen2.5-VL-7B-Instruct``
    -> ``7b``, ``.../Qwen3-VL-8B-Instruct`` or ``runs/vital_qwen3_vl_8b/...`` -> ``qwen3_vl_8b``."""
    if re.search(r"(?i)qwen[-_.]?3[-_.]?vl", name):
        hit = re.findall(r"(?i)(?<![0-9.])(2|4|8|32)b(?![a-z0-9])", name)
        if hit:
            return "qwen3_vl_" + hit[-1].lower() + "b"
    else:
        hit = re.findall(r"(?i)(?<![0-9.])(3|7|32|72)b(?![a-z0-9])", name)
        if hit:
            return hit[-1].lower() + "b"
    raise PlanError(f"model.init_from {name} is not on this machine and its name names no size; "
                    f"pass --model one of {_known()}")


def _preset_config(preset: str):
    """ModelConfig (of its family, :func:`vital_jax.models.families.preset_family`) of a preset."""
    from vital_jax.models.families import family_module, preset_family

    family, size = preset_family(preset)
    if family == "qwen3_vl":
        q3 = family_module("qwen3_vl").ModelConfig
        if size == "tiny":
            return q3.tiny(vocab_size=1024)
        if "qwen3_vl_" + size not in QWEN3_VL_PRESETS:
            raise PlanError(f"unknown model {preset!r}; known: {_known()}")
        return q3.preset(size)
    preset = size
    from vital_jax.models.qwen2_5_vl.config import ModelConfig, TextConfig

    if preset == "tiny":
        # the trainer sizes the tiny model's vocabulary to its own 1024-token tokenizer
        return ModelConfig.tiny(vocab_size=1024)
    if preset in EXTRA_PRESETS:
        t = TextConfig(**EXTRA_PRESETS[preset])
        v7 = ModelConfig.preset("7b").vision
        return ModelConfig(text=t, vision=dataclasses.replace(v7, out_hidden_size=t.hidden_size))
    if preset in PRESETS:
        return ModelConfig.preset(preset)
    raise PlanError(f"unknown model {preset!r}; known: {_known()}")


def model_config(cfg: RunConfig, preset: str | None = None):
    """The run's ModelConfig with its runtime options: ``preset`` if given, else the config.json
    of ``model.init_from`` when it is on disk (its ``model_type`` picks the family), else a preset
    guessed from the ``init_from`` name (:func:`preset_from_name`), else ``model.preset``. Qwen2.5-VL
    presets are ``tiny``/``3b``/``7b``/``32b``/``72b``, Qwen3-VL ones ``qwen3_vl_<size>``."""
    from vital_jax.models.families import FamilyError, family_module, model_type_of

    m = cfg.model
    mcfg = None
    if preset is None and m.init_from:
        cj = Path(m.init_from) / "config.json"
        if cj.is_file():
            try:
                family = family_module(model_type_of(m.init_from))
            except FamilyError as e:
                raise PlanError(f"model.init_from {m.init_from}: {e}") from None
            mcfg = family.ModelConfig.from_hf_file(cj, strict=False)
        else:
            preset = preset_from_name(m.init_from)
    if mcfg is None:
        mcfg = _preset_config((preset or m.preset).lower())
    return mcfg.with_runtime(param_dtype=m.param_dtype, compute_dtype=m.compute_dtype,
                             scan_layers=m.scan_layers, remat=m.remat, attention=m.attention,
                             freeze_vision=m.freeze_vision)


# --------------------------------------------------------------------------- exact parts


class _MeshSizes:
    """What ``vital_jax.sharding`` reads of a mesh (names + sizes); no devices needed."""

    def __init__(self, shape):
        self.axis_names = ("data", "fsdp", "tensor")
        self.axis_sizes = tuple(shape)


def abstract_mesh(shape):
    from jax.sharding import AbstractMesh, AxisType

    return AbstractMesh(tuple(shape), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)


def _nbytes(shape, dtype) -> int:
    import numpy as np

    return int(math.prod(shape)) * np.dtype(dtype).itemsize


def sharded_bytes(tree) -> int:
    """Per-device bytes of a tree of ShapeDtypeStructs that carry a sharding."""
    import jax

    return sum(_nbytes(x.sharding.shard_shape(x.shape), x.dtype) for x in jax.tree.leaves(tree))


def abstract_batch(mcfg, cfg: RunConfig) -> dict:
    """ShapeDtypeStructs of the global train-step batch the trainer builds for ``cfg`` at its
    largest buckets (see ``trainers.batch.build_batch``; RL: ``trainers.rl.RLTrainer.update``)."""
    import jax
    import jax.numpy as jnp

    if cfg.stage == "sft":
        rows, M = cfg.sft.batch_size, cfg.sft.micro_batches
    else:
        rows, M = cfg.rl.prompts_per_step * cfg.rl.group_size, cfg.rl.micro_batches
    if rows % M:
        raise PlanError(f"{rows} rows per step cannot split into {M} micro-batches")
    b, L = rows // M, max(cfg.data.token_buckets)
    N = max(cfg.data.vision_buckets)
    i32, f32 = jnp.int32, jnp.float32
    S = jax.ShapeDtypeStruct
    out = {"input_ids": S((M, b, L), i32), "attention_mask": S((M, b, L), i32),
           "loss_mask": S((M, b, L), f32), "position_ids": S((M, 3, b, L), i32),
           "vis_index": S((M, b, L), i32), "advantages": S((M, b), f32)}
    if cfg.stage != "sft":
        if cfg.rl.beta > 0:
            out["ref_logp"] = S((M, b, L), f32)
        if cfg.rl.updates_per_rollout > 1:
            out["old_logp"] = S((M, b, L), f32)
    if N > 0:
        qwen3 = _family(mcfg) == "qwen3_vl"
        if cfg.stage == "rl" and mcfg.runtime.freeze_vision:
            # RL with a frozen tower: embeddings computed once outside the step
            cd = jnp.dtype(mcfg.runtime.compute_dtype)
            out["vis_embeds"] = S((M, b, N // mcfg.vision.merge_unit, mcfg.text.hidden_size), cd)
            G = len(mcfg.vision.deepstack_visual_indexes) if qwen3 else 0
            if G:   # Qwen3-VL: and the DeepStack features of the first G decoder layers (the
                # trainer carries both as one (merged, deepstack) pair under vis_embeds)
                out["deepstack_embeds"] = S((M, b, G, N // mcfg.vision.merge_unit, mcfg.text.hidden_size), cd)
        elif qwen3:
            # Qwen3-VL's tower inputs (``qwen3_vl.modeling``): frame segments, 2-D rotary
            # positions, the bilinear taps into the learned position table; HF patch order
            v = mcfg.vision
            out["vision"] = {"pixels": S((M, b, N, v.patch_dim), f32), "seg": S((M, b, N), i32),
                             "rot_hw": S((M, b, N, 2), i32), "interp_idx": S((M, b, N, 4), i32),
                             "interp_w": S((M, b, N, 4), f32)}
        else:
            v = mcfg.vision
            out["vision"] = {"pixels": S((M, b, N, v.patch_dim), f32), "perm": S((M, b, N), i32),
                             "seg_window": S((M, b, N), i32), "seg_full": S((M, b, N), i32),
                             "rot_hw": S((M, b, N, 2), i32),
                             "unperm": S((M, b, N // v.merge_unit), i32)}
    return out


def _family(mcfg) -> str:
    from vital_jax.models.families import family_of

    return family_of(mcfg)


def _rows_axes(x) -> tuple:
    """(micro-batch, rows, rest...) logical axes of a batch leaf the trainer has no table for."""
    return (None, "batch") + (None,) * (len(x.shape) - 2)


def _batch_shardings(mesh, batch):
    from vital_jax.sharding import named_sharding
    from vital_jax.trainers.batch import BATCH_AXES

    axes = dict(BATCH_AXES, vis_embeds=(None, "batch", None, None))
    out = {}
    for k, x in batch.items():
        if k == "vision":
            # every tower array is [M, b, ...]: rows over the batch axes, like trainers.batch does
            out[k] = {n: named_sharding(mesh, _rows_axes(a), a.shape) for n, a in x.items()}
        else:
            out[k] = named_sharding(mesh, axes.get(k) or _rows_axes(x), x.shape)
    return out


def _with_sharding(tree, shardings):
    import jax

    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings)


def abstract_step_inputs(cfg: RunConfig, mcfg, mesh):
    """(state, batch, optimizer) as sharded ShapeDtypeStructs on ``mesh`` (an AbstractMesh or a
    real one): exactly what ``jit_train_step`` is called with."""
    from vital_jax.models.families import family_module
    from vital_jax.trainers.optim import make_optimizer
    from vital_jax.trainers.step import abstract_state, state_shardings

    import jax

    cfg = resolve_micro_batches(cfg, (mesh.shape["data"], mesh.shape["fsdp"]))
    section = cfg.sft if cfg.stage == "sft" else cfg.rl
    optimizer = make_optimizer(section.optim, section.steps, freeze_vision=mcfg.runtime.freeze_vision)
    family = family_module(_family(mcfg))   # both families export abstract_params + param_shardings
    param_sh = family.param_shardings(mcfg, mesh)
    opt_abstract = jax.eval_shape(optimizer.init, family.abstract_params(mcfg))
    state = abstract_state(mcfg, optimizer, state_shardings(optimizer, param_sh, opt_abstract))
    batch = abstract_batch(mcfg, cfg)
    return state, _with_sharding(batch, _batch_shardings(mesh, batch)), optimizer


# --------------------------------------------------------------------------- activation model


def _split(n: int, ways: int) -> int:
    """Per-device extent of a dim of size n over a mesh axis group of ``ways`` (the rules drop an
    axis that does not divide the dim: then nothing is split)."""
    return n // ways if ways > 1 and n % ways == 0 else n


def _rows_per_device(b: int, shape) -> int:
    from vital_jax.sharding import logical_to_spec

    spec = logical_to_spec(("batch",), (b,), _MeshSizes(shape))
    axes = spec[0] if spec and spec[0] is not None else ()
    axes = (axes,) if isinstance(axes, str) else axes
    sizes = dict(zip(("data", "fsdp", "tensor"), shape))
    return b // math.prod(sizes[a] for a in axes)


def attention_bytes(impl: str, *, b: int, H: int, K: int, n: int, d: int) -> tuple[float, float]:
    """(kept for the backward, peak of the backward) bytes of one self-attention over ``n`` rows.

    - ``xla``: the float32 scores, masked and softmaxed, are both kept (``2 b H n^2 4``); the
      backward peaks at 1.5x that (the scores' gradient).
    - ``blockwise`` (:mod:`vital_jax.models.qwen2_5_vl.blockwise`): only the per-row log-sum-exp
      is kept (``b H n 4``); the backward holds float32 dq/dk/dv, the log-sum-exp and the
      ``delta`` rows, and four float32 [block_q, block_k] blocks per head (p, dp, ds, and one
      more XLA keeps alive across the scan; fitted to the compiled step at 256 and 1024 tokens).
    ``auto`` is whichever of the two it picks at ``n`` rows, ``splash`` is counted as
    ``blockwise`` (not checked against a TPU compile); other registered implementations
    get a dense mask: counted as ``xla``.
    """
    from vital_jax.models.qwen2_5_vl.modeling import AUTO_BLOCKWISE_FROM

    if impl == "auto":
        impl = "blockwise" if n >= AUTO_BLOCKWISE_FROM["sequence"] else "xla"
    if impl in ("blockwise", "splash"):   # splash: the same flash recurrence (its tiles counted as ours)
        blk = min(512, n)        # blockwise_attention's default block_q = block_k
        lse = b * H * n * 4
        return lse, b * n * (H + 2 * K) * d * 4 + 2 * lse + 4 * b * H * blk * blk * 4
    scores = 2 * b * H * n * n * 4
    return scores, 1.5 * scores


def _decoder_terms(*, T, b, L, D, H, K, d, F, c, layers, remat, attention, qk_norm=False) -> dict[str, float]:
    """Saved-per-layer, working set and stack of a transformer stack (see the module docstring).
    ``qk_norm`` (Qwen3): the RMSNorm of each query/key head keeps its float32 input and output and
    the normed value, ``T * (H + K) * d * (8 + c)``, wherever the layer's q/k residuals live
    (the stack without remat, the one-layer working set under any remat; ``dots`` recomputes
    them from the saved projections)."""
    kept, peak = attention_bytes(attention, b=b, H=H, K=K, n=L, d=d)
    qk = T * (H + K) * d * (8 + c) if qk_norm else 0
    none = kept + T * c * (5 * D + 2 * K * d + 6 * F) + qk
    saved = {"none": none, "dots": T * c * (H * d + 2 * K * d + 2 * D + 2 * F), "full": T * c * D}[remat]
    # backward of one layer (recomputed under remat): the MLP's residuals are freed before the
    # attention's backward, whose peak is the attention's own plus the q/k/v/o residuals
    work = peak + T * c * (2 * D + 2 * (H + K) * d) + 2 * T * 4 * D + qk
    return {"stack": layers * saved, "work": work}


def activation_bytes(mcfg, cfg: RunConfig, shape) -> dict[str, float]:
    """Per-device activation bytes of one micro-batch's forward + backward (module docstring)."""
    import numpy as np

    t, v, rt = mcfg.text, mcfg.vision, mcfg.runtime
    tp = shape[2]
    if cfg.stage == "sft":
        rows, M = cfg.sft.batch_size, cfg.sft.micro_batches
    else:
        rows, M = cfg.rl.prompts_per_step * cfg.rl.group_size, cfg.rl.micro_batches
    b = _rows_per_device(rows // M, shape)
    L = max(cfg.data.token_buckets)
    c = np.dtype(rt.compute_dtype).itemsize
    H, K, F = _split(t.num_heads, tp), _split(t.num_kv_heads, tp), _split(t.intermediate_size, tp)
    V = _split(t.vocab_size, tp)
    T = b * L
    qwen3 = _family(mcfg) == "qwen3_vl"
    text = _decoder_terms(T=T, b=b, L=L, D=t.hidden_size, H=H, K=K, d=t.head_dim, F=F, c=c,
                          layers=t.num_layers, remat=rt.remat, attention=rt.attention, qk_norm=qwen3)
    head = 2 * b * (L - 1) * V * 4 + 8 * T * 4 * t.hidden_size
    out = {"text": text["stack"] + max(head, text["work"]), "vision": 0.0}
    N = max(cfg.data.vision_buckets)
    if qwen3:
        return _qwen3_vl_activations(out, mcfg, cfg, b=b, N=N, c=c, tp=tp)
    if N > 0 and not (cfg.stage == "rl" and rt.freeze_vision):
        Hv, Fv = _split(v.num_heads, tp), _split(v.intermediate_size, tp)
        Tv, w = b * N, v.window_merged ** 2 * v.merge_unit
        window = 2 * b * Hv * N * 3 * w * 4
        dense, dense_peak = attention_bytes(rt.attention, b=b, H=Hv, K=Hv, n=N, d=v.head_dim)
        full_layers = v.depth if rt.scan_layers else len(v.fullatt_block_indexes)
        per = Tv * c * (5 * v.hidden_size + 3 * Hv * v.head_dim + 6 * Fv)
        saved = {"none": per + window, "dots": Tv * c * (3 * Hv * v.head_dim + 2 * v.hidden_size + 2 * Fv),
                 "full": Tv * c * v.hidden_size}[rt.remat]
        stack = v.depth * saved + (full_layers * dense if rt.remat == "none" else 0)
        work = per + window + (dense_peak if v.fullatt_block_indexes else 0)
        # the merged embeddings (and their gradient) stay alive into the text stack
        merged = 2 * b * (N // v.merge_unit) * t.hidden_size * c
        out["vision"] = stack + work + merged
    return out


def _qwen3_vl_activations(out: dict, mcfg, cfg: RunConfig, *, b: int, N: int, c: int, tp: int) -> dict:
    """Qwen3-VL on top of the shared decoder terms in ``out["text"]``: DeepStack, and a tower
    without windows (``C`` tower width, ``Hv``/``Fv`` its heads/MLP width per device, ``Tv = b N``).

    - DeepStack: the first ``G = len(deepstack_visual_indexes)`` decoder layers each take one
      ``[b * N/4, D]`` feature, kept for the backward: ``G * b * (N/4) * D * c`` in the text row.
    - Every tower block attends within frames over all ``N`` rows (:func:`attention_bytes` over
      ``N``). Without remat a block keeps ``per = Tv * c * (8C + 5 Hv d + 6 Fv)`` (LayerNorms,
      q/k/v with their rotary, the tanh-GELU MLP's intermediates) plus the attention's own;
      ``dots`` its matmul outputs, ``full`` its input. The backward of one block holds the
      attention's peak, its q/k/v/o and half the MLP's residuals:
      ``work = peak + Tv * c * (2C + 4 Hv d + 3 Fv) + 2 * Tv * 4 * C``.
    - The ``1 + G`` mergers are not rematerialised (LayerNorm output and both sides of the GELU,
      ``[N/4, 4C]`` each: ``3 Tv c C``); the merged embeddings, the ``G`` DeepStack features and
      their gradients stay alive into the text stack.

    Fitted to XLA's CPU buffer assignment of the tower's forward + backward (f32, 1024..4096
    patches, remat none/full, 4..8 blocks, 1..2 DeepStack taps: within ~10 %).
    """
    t, v, rt = mcfg.text, mcfg.vision, mcfg.runtime
    if N <= 0:
        return out
    G = len(v.deepstack_visual_indexes)
    Mv, D = N // v.merge_unit, t.hidden_size
    out["text"] += G * b * Mv * D * c
    if cfg.stage == "rl" and rt.freeze_vision:
        return out
    Hv, Fv, C, d = _split(v.num_heads, tp), _split(v.intermediate_size, tp), v.hidden_size, v.head_dim
    Tv = b * N
    kept, peak = attention_bytes(rt.attention, b=b, H=Hv, K=Hv, n=N, d=d)
    per = Tv * c * (8 * C + 5 * Hv * d + 6 * Fv)
    saved = {"none": per + kept, "dots": Tv * c * (3 * Hv * d + 2 * C + Fv), "full": Tv * c * C}[rt.remat]
    work = peak + Tv * c * (2 * C + 4 * Hv * d + 3 * Fv) + 2 * Tv * 4 * C
    mergers = (1 + G) * 3 * Tv * c * C
    merged = 2 * (1 + G) * b * Mv * D * c
    out["vision"] = v.depth * saved + work + mergers + merged
    return out


def gathered_weight_bytes(params, shape) -> float:
    """Full-size copies of sharded weights that the step materialises (per device):

    - with ``fsdp > 1``, one decoder layer's weights are all-gathered over ``fsdp`` inside the
      layer scan, and that layer's weight gradient exists unreduced before its reduce-scatter;
    - with the vocabulary split over ``tensor``, the token-embedding gather (``jnp.take``) cannot
      stay partitioned: XLA's SPMD partitioner replicates the table for it ("involuntary full
      rematerialization") and its gradient scatter, i.e. two unsplit-vocab copies.
    """
    d, f, t = shape
    out = 0.0
    if f > 1:
        per_layer = 0
        for x in params["layers"].values():
            sh = x.sharding.shard_shape(x.shape)
            spec = x.sharding.spec
            unfsdp = [n * f if (i < len(spec) and spec[i] is not None and "fsdp" in
                                ((spec[i],) if isinstance(spec[i], str) else spec[i])) else n
                      for i, n in enumerate(sh)]
            per_layer += _nbytes(unfsdp[1:], x.dtype)          # one layer of the stacked axis
        out += 2 * per_layer
    e = params["embed"]
    vocab_axes = e.sharding.spec[0] if len(e.sharding.spec) else None
    if t > 1 and vocab_axes is not None and "tensor" in ((vocab_axes,) if isinstance(vocab_axes, str) else vocab_axes):
        sh = list(e.sharding.shard_shape(e.shape))
        sh[0] = e.shape[0]
        out += 2 * _nbytes(sh, e.dtype)
    return out


# --------------------------------------------------------------------------- the plan


@dataclasses.dataclass
class Plan:
    model: str
    stage: str
    mesh: tuple[int, int, int]
    rows: dict[str, float]            # component -> per-device bytes
    notes: list[str]
    device_memory: float | None = None

    @property
    def total(self) -> float:
        return sum(self.rows.values())

    @property
    def fits(self) -> bool | None:
        return None if self.device_memory is None else self.total <= self.device_memory

    def to_json(self) -> dict:
        return {"model": self.model, "stage": self.stage,
                "mesh": dict(zip(("data", "fsdp", "tensor"), self.mesh)), "devices": math.prod(self.mesh),
                "per_device_bytes": {k: int(v) for k, v in self.rows.items()}, "total_bytes": int(self.total),
                "device_memory_bytes": None if self.device_memory is None else int(self.device_memory),
                "fits": self.fits,
                "headroom_bytes": None if self.device_memory is None else int(self.device_memory - self.total),
                "notes": self.notes}

    def table(self) -> str:
        d, f, t = self.mesh
        lines = [f"model {self.model}, stage {self.stage}, mesh data={d} fsdp={f} tensor={t} "
                 f"({d * f * t} devices); per device:"]
        width = max(len(k) for k in self.rows) + 2
        for k, v in self.rows.items():
            lines.append(f"  {k:<{width}}{v / GB:10.3f} GB")
        lines.append(f"  {'total':<{width}}{self.total / GB:10.3f} GB")
        if self.device_memory is not None:
            room = self.device_memory - self.total
            verdict = "fits" if room >= 0 else "does NOT fit"
            lines.append(f"{verdict} in {self.device_memory / GB:.1f} GB: headroom {room / GB:+.2f} GB "
                         f"({100 * room / self.device_memory:+.0f} %)")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def plan(cfg: RunConfig, mesh_shape: Sequence[int], *, devices: int | None = None,
         device_memory_gb: float | None = None, preset: str | None = None, mcfg=None) -> Plan:
    """Per-device memory of ``cfg``'s train step on a ``(data, fsdp, tensor)`` mesh (abstract
    evaluation only: nothing the size of the model is allocated)."""
    import jax
    import numpy as np

    from vital_jax.sharding import named_sharding

    shape = resolve_mesh(mesh_shape, devices)
    cfg = resolve_micro_batches(cfg, shape)
    mcfg = mcfg or model_config(cfg, preset)
    mesh = abstract_mesh(shape)
    state, batch, _ = abstract_step_inputs(cfg, mcfg, mesh)
    rt, t = mcfg.runtime, mcfg.text
    param_b = sharded_bytes(state.params)
    f32_param_b = sum(_nbytes(x.sharding.shard_shape(x.shape), np.float32) for x in jax.tree.leaves(state.params))
    if rt.freeze_vision:   # set_to_zero: no float32 update tree for the tower
        f32_param_b -= sum(_nbytes(x.sharding.shard_shape(x.shape), np.float32)
                           for x in jax.tree.leaves(state.params["vision"]))
    rows = {"params": param_b,
            "optimizer state": sharded_bytes(state.opt_state) + sharded_bytes(state.step),
            "gradients": 2 * param_b + f32_param_b,
            "batch": sharded_bytes(batch)}
    rows["gathered weights"] = gathered_weight_bytes(state.params, shape)
    act = activation_bytes(mcfg, cfg, shape)
    rows["activations (text)"] = act["text"]
    if act["vision"]:
        rows["activations (vision)"] = act["vision"]
    notes = [f"remat={rt.remat}, scan_layers={rt.scan_layers}, param {rt.param_dtype}, compute {rt.compute_dtype}; "
             f"batch at the largest buckets: {max(cfg.data.token_buckets)} tokens, "
             f"{max(cfg.data.vision_buckets)} patches per row"]
    rows_mb = (cfg.sft.batch_size // cfg.sft.micro_batches if cfg.stage == "sft"
               else cfg.rl.prompts_per_step * cfg.rl.group_size // cfg.rl.micro_batches)
    b_dev = _rows_per_device(rows_mb, shape)
    if b_dev * shape[0] * shape[1] != rows_mb:
        notes.append(f"a micro-batch has {rows_mb} rows, which data x fsdp = {shape[0] * shape[1]} does not "
                     f"divide: each device runs {b_dev} rows (replicated work); make the rows per "
                     f"micro-batch a multiple of {shape[0] * shape[1]}")
    N = max(cfg.data.vision_buckets)
    full_blocks = getattr(mcfg.vision, "fullatt_block_indexes", True)   # Qwen3-VL: every block
    if "activations (vision)" in rows and full_blocks and N > 4096 and rt.attention not in ("blockwise", "auto", "splash"):
        notes.append(f"the vision tower's full-attention blocks materialise [{N}, {N}] scores per row and head "
                     "(model.attention=blockwise does not)")
    if cfg.stage == "rl":
        if cfg.rl.beta > 0:
            rows["reference params"] = param_b
        B, S = cfg.rl.rollout_batch, cfg.rl.cache_length
        slack = min(2048, S)   # the largest prefill chunk rollout.contract.size_sampler can choose
        kv_shape = (t.num_layers, B, t.num_kv_heads, S + slack, t.head_dim)
        sh = named_sharding(mesh, (None, "batch", "act_kv_heads", "cache_seq", None), kv_shape)
        rows["kv cache (rollout)"] = 2 * _nbytes(sh.shard_shape(kv_shape), rt.compute_dtype)
        notes.append("RL: the rollout's KV cache is counted on top of the update's peak (conservative)")
    n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(state.params))
    notes.append(f"{n_params / 1e9:.2f} B parameters")
    name = preset or (cfg.model.init_from if cfg.model.init_from else cfg.model.preset)
    return Plan(model=str(name), stage=cfg.stage, mesh=shape, rows=rows, notes=notes,
                device_memory=None if device_memory_gb is None else device_memory_gb * GB)


def step_memory_estimate(cfg: RunConfig, mesh_shape, mcfg) -> dict[str, float]:
    """The plan regrouped like XLA's ``memory_analysis()`` of the train step (for the cross-check):
    arguments = state + batch, outputs = new state (+ metrics), temp = gradients + activations."""
    p = plan(cfg, mesh_shape, mcfg=mcfg)
    r = p.rows
    state = r["params"] + r["optimizer state"]
    return {"argument": state + r["batch"], "output": state,
            "temp": r["gradients"] + r["gathered weights"] + r["activations (text)"] + r.get("activations (vision)", 0.0)}
