"""Hugging Face Qwen3-VL checkpoints in and out: one table, HF name <-> our param path.

The machinery is the Qwen2.5 family's (:mod:`vital_jax.models.qwen2_5_vl.weights`): its
safetensors index (single or sharded files, memory-mapped, names canonicalised so both the
``model.language_model.* / model.visual.*`` layout that transformers 5 and the Qwen3-VL hub
checkpoints use and the older ``model.* / visual.*`` one resolve) and its HF -> ours transform
(``[out, in...]`` linear weights transposed into ``[in..., out...]``). Parameters are built with
``jax.make_array_from_callback`` into their target sharding, one layer slice at a time.

``export_pretrained`` writes through the same family's :func:`export_family` (ours -> HF is the
inverse transform), naming tensors as the Qwen3-VL hub checkpoints and transformers 5's
``save_pretrained`` do: ``model.language_model.*``, ``model.visual.*``, and ``lm_head.weight``
only when the head is untied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from vital_jax.models.qwen2_5_vl.weights import CheckpointError, _get, export_family, load_family
from vital_jax.models.qwen3_vl import modeling
from vital_jax.models.qwen3_vl.config import ModelConfig

__all__ = ["CheckpointError", "export_pretrained", "load_pretrained"]


@dataclass(frozen=True)
class Rule:
    """HF tensor ``hf`` (``{i}`` = index on a stacked axis) <-> param ``path``.

    ``kind``: ``"copy"`` (reshape only) or ``"linear"`` (HF ``[out, in...]`` -> ours
    ``[in..., out...]``). ``stack``: which stacked axis ``{i}`` runs over: ``"text"`` layers,
    ``"vision"`` blocks, ``"deepstack"`` mergers, or None for a single tensor. For export (loading
    needs neither): ``n_in``, how many leading dims of ours are the input (2 for the output
    projections, ``[heads, head_dim, out]``), and ``hf_shape`` where HF's is not ``[out, in]``.
    """

    hf: str
    path: tuple[str, ...]
    kind: str = "copy"
    stack: str | None = None
    n_in: int = 1
    hf_shape: Callable[[ModelConfig], tuple[int, ...]] | None = None


def _rules(cfg: ModelConfig) -> list[Rule]:
    R = Rule
    rules = [
        R("model.embed_tokens.weight", ("embed",)),
        R("model.norm.weight", ("final_norm",)),
        R("visual.patch_embed.proj.weight", ("vision", "patch_kernel"), "linear",  # a Conv3d kernel
          hf_shape=lambda c: (c.vision.hidden_size, c.vision.in_channels, c.vision.temporal_patch_size,
                              c.vision.patch_size, c.vision.patch_size)),
        R("visual.patch_embed.proj.bias", ("vision", "patch_bias")),
        R("visual.pos_embed.weight", ("vision", "pos_embed")),
    ]
    if not cfg.text.tie_word_embeddings:
        rules.append(R("lm_head.weight", ("lm_head",), "linear"))

    def merger(prefix, path, stack):
        return [
            R(prefix + "norm.weight", path + ("norm_scale",), stack=stack),
            R(prefix + "norm.bias", path + ("norm_bias",), stack=stack),
            R(prefix + "linear_fc1.weight", path + ("fc1_kernel",), "linear", stack),
            R(prefix + "linear_fc1.bias", path + ("fc1_bias",), stack=stack),
            R(prefix + "linear_fc2.weight", path + ("fc2_kernel",), "linear", stack),
            R(prefix + "linear_fc2.bias", path + ("fc2_bias",), stack=stack),
        ]

    rules += merger("visual.merger.", ("vision", "merger"), None)
    if cfg.vision.deepstack_visual_indexes:
        rules += merger("visual.deepstack_merger_list.{i}.", ("vision", "deepstack"), "deepstack")
    t, L = "model.layers.{i}.", ("layers",)
    rules += [R(t + hf, L + (ours,), kind, "text", n_in) for hf, ours, kind, n_in in (
        ("input_layernorm.weight", "attn_norm", "copy", 1),
        ("self_attn.q_proj.weight", "q_kernel", "linear", 1),
        ("self_attn.k_proj.weight", "k_kernel", "linear", 1),
        ("self_attn.v_proj.weight", "v_kernel", "linear", 1),
        ("self_attn.q_norm.weight", "q_norm", "copy", 1),
        ("self_attn.k_norm.weight", "k_norm", "copy", 1),
        ("self_attn.o_proj.weight", "o_kernel", "linear", 2),
        ("post_attention_layernorm.weight", "mlp_norm", "copy", 1),
        ("mlp.gate_proj.weight", "gate_kernel", "linear", 1),
        ("mlp.up_proj.weight", "up_kernel", "linear", 1),
        ("mlp.down_proj.weight", "down_kernel", "linear", 1),
    )]
    b, V = "visual.blocks.{i}.", ("vision", "blocks")
    rules += [R(b + hf, V + (ours,), kind, "vision", n_in) for hf, ours, kind, n_in in (
        ("norm1.weight", "norm1_scale", "copy", 1), ("norm1.bias", "norm1_bias", "copy", 1),
        ("norm2.weight", "norm2_scale", "copy", 1), ("norm2.bias", "norm2_bias", "copy", 1),
        ("attn.qkv.weight", "qkv_kernel", "linear", 1), ("attn.qkv.bias", "qkv_bias", "copy", 1),
        ("attn.proj.weight", "proj_kernel", "linear", 2), ("attn.proj.bias", "proj_bias", "copy", 1),
        ("mlp.linear_fc1.weight", "fc1_kernel", "linear", 1), ("mlp.linear_fc1.bias", "fc1_bias", "copy", 1),
        ("mlp.linear_fc2.weight", "fc2_kernel", "linear", 1), ("mlp.linear_fc2.bias", "fc2_bias", "copy", 1),
    )]
    return rules


def _count(cfg: ModelConfig, stack: str | None) -> int | None:
    return {None: None, "text": cfg.text.num_layers, "vision": cfg.vision.depth,
            "deepstack": len(cfg.vision.deepstack_visual_indexes)}[stack]


def _expected(cfg: ModelConfig, abstract: dict) -> dict[str, tuple[Rule, int | None, int]]:
    """HF name -> (rule, index on the stacked axis or None, expected element count)."""
    out = {}
    for rule in _rules(cfg):
        shape = _get(abstract, rule.path).shape
        n = _count(cfg, rule.stack)
        size = int(np.prod(shape[1:] if n is not None else shape))
        for i in range(n) if n is not None else [None]:
            out[rule.hf.format(i=i)] = (rule, i, size)
    return out


def load_pretrained(path: str | Path, *, config: ModelConfig | None = None, mesh=None,
                    strict: bool = True, dtype: str | None = None) -> tuple[ModelConfig, dict]:
    """``(config, params)`` from an HF-format Qwen3-VL directory (``save_pretrained`` output or a
    hub snapshot). With ``mesh`` every parameter is created with its NamedSharding from the
    logical rules; ``dtype`` overrides the param dtype. Tied embeddings: a stored
    ``lm_head.weight`` is ignored (the embedding is the head)."""
    def same_size(name, size, got):
        # element counts: a linear weight's HF shape is [out, in...] (the conv kernel is 5-D), a
        # stacked head's is flat; the reshape in hf_to_ours checks the split
        return int(np.prod(got)) == size

    return load_family(path, config_cls=ModelConfig, modeling=modeling, expected_fn=_expected, shape_ok=same_size,
                       config=config, mesh=mesh, strict=strict, dtype=dtype)


# our table's (canonical) names -> the Qwen3-VL hub / transformers 5 layout; canonical_name in the
# loader maps them back, so an export reads in again
_HUB = [(re.compile(r"^model\."), "model.language_model."), (re.compile(r"^visual\."), "model.visual.")]


def hub_name(name: str) -> str:
    for pat, rep in _HUB:
        if pat.match(name):
            return pat.sub(rep, name, count=1)
    return name   # lm_head.weight


def export_pretrained(config: ModelConfig, params: dict, path: str | Path, *,
                      max_shard_bytes: int = 4 * 2**30, dtype: str | None = None) -> Path:
    """Write ``config.json`` (:meth:`ModelConfig.to_hf_dict`) + safetensors (sharded above
    ``max_shard_bytes``, cast to ``dtype`` if given) that ``Qwen3VLForConditionalGeneration.
    from_pretrained`` and :func:`load_pretrained` read; the directory."""
    return export_family(config, params, path, modeling=modeling, expected_fn=_expected, hf_name=hub_name,
                         max_shard_bytes=max_shard_bytes, dtype=dtype)
