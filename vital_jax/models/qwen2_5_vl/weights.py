"""Hugging Face checkpoints in and out: one declarative table, HF name <-> our param path.

``load_pretrained`` reads ``config.json`` and one or sharded ``*.safetensors`` (with
``model.safetensors.index.json``) and builds every parameter with
``jax.make_array_from_callback`` straight into its target sharding: each device shard is cut from
memory-mapped tensors on the host, so a 7B or 72B checkpoint never sits whole in one host's
memory. Every name and shape is checked against the table before any array is built.

``export_pretrained`` writes ``config.json`` + safetensors in the hub layout (``model.layers.*``,
``visual.*``) that transformers and vLLM load.

Both model families load through :func:`load_family` and export through :func:`export_family`;
each passes its own table (``expected_fn``), modeling module and, for export, its hub names.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vital_jax.models.qwen2_5_vl import modeling
from vital_jax.models.qwen2_5_vl.config import ModelConfig
from vital_jax.models.safetensors_io import SafetensorsError, SafetensorsFile, save_file
from vital_jax.errors import VitalError


class CheckpointError(VitalError, ValueError):
    """Missing/extra/mis-shaped tensors; the message names the tensor and the directory."""


@dataclass(frozen=True)
class Rule:
    """HF tensor ``hf`` ({i} = layer) <-> param ``path``.

    ``kind``: ``"copy"`` (reshape only) or ``"linear"``: HF stores ``[out, in...]``, we store
    ``[in..., out...]`` with ``n_in`` leading input dims (``w.reshape(out, -1).T.reshape(ours)``).
    """

    hf: str
    path: tuple[str, ...]
    kind: str = "copy"
    n_in: int = 1
    hf_shape: Callable[[ModelConfig], tuple[int, ...]] | None = None  # export shape when not 2D/1D


def _rules(cfg: ModelConfig) -> list[Rule]:
    R = Rule
    rules = [
        R("model.embed_tokens.weight", ("embed",)),
        R("model.norm.weight", ("final_norm",)),
        R("visual.patch_embed.proj.weight", ("vision", "patch_kernel"), "linear",
          hf_shape=lambda c: (c.vision.hidden_size, c.vision.in_channels, c.vision.temporal_patch_size,
                              c.vision.patch_size, c.vision.patch_size)),
        R("visual.merger.ln_q.weight", ("vision", "merger_norm")),
        R("visual.merger.mlp.0.weight", ("vision", "merger_fc1_kernel"), "linear"),
        R("visual.merger.mlp.0.bias", ("vision", "merger_fc1_bias")),
        R("visual.merger.mlp.2.weight", ("vision", "merger_fc2_kernel"), "linear"),
        R("visual.merger.mlp.2.bias", ("vision", "merger_fc2_bias")),
    ]
    if not cfg.text.tie_word_embeddings:
        rules.append(R("lm_head.weight", ("lm_head",), "linear"))
    t = "model.layers.{i}."
    L = ("layers",)
    rules += [
        R(t + "input_layernorm.weight", L + ("attn_norm",)),
        R(t + "self_attn.q_proj.weight", L + ("q_kernel",), "linear"),
        R(t + "self_attn.q_proj.bias", L + ("q_bias",)),
        R(t + "self_attn.k_proj.weight", L + ("k_kernel",), "linear"),
        R(t + "self_attn.k_proj.bias", L + ("k_bias",)),
        R(t + "self_attn.v_proj.weight", L + ("v_kernel",), "linear"),
        R(t + "self_attn.v_proj.bias", L + ("v_bias",)),
        R(t + "self_attn.o_proj.weight", L + ("o_kernel",), "linear", n_in=2),
        R(t + "post_attention_layernorm.weight", L + ("mlp_norm",)),
        R(t + "mlp.gate_proj.weight", L + ("gate_kernel",), "linear"),
        R(t + "mlp.up_proj.weight", L + ("up_kernel",), "linear"),
        R(t + "mlp.down_proj.weight", L + ("down_kernel",), "linear"),
    ]
    b = "visual.blocks.{i}."
    V = ("vision", "blocks")
    rules += [
        R(b + "norm1.weight", V + ("norm1",)),
        R(b + "norm2.weight", V + ("norm2",)),
        R(b + "attn.qkv.weight", V + ("qkv_kernel",), "linear"),
        R(b + "attn.qkv.bias", V + ("qkv_bias",)),
        R(b + "attn.proj.weight", V + ("proj_kernel",), "linear", n_in=2),
        R(b + "attn.proj.bias", V + ("proj_bias",)),
        R(b + "mlp.gate_proj.weight", V + ("gate_kernel",), "linear"),
        R(b + "mlp.gate_proj.bias", V + ("gate_bias",)),
        R(b + "mlp.up_proj.weight", V + ("up_kernel",), "linear"),
        R(b + "mlp.up_proj.bias", V + ("up_bias",)),
        R(b + "mlp.down_proj.weight", V + ("down_kernel",), "linear"),
        R(b + "mlp.down_proj.bias", V + ("down_bias",)),
    ]
    return rules


def _n_layers(cfg: ModelConfig, rule: Rule) -> int | None:
    if "{i}" not in rule.hf:
        return None
    return cfg.vision.depth if rule.path[0] == "vision" else cfg.text.num_layers


# transformers 5.x writes "model.language_model.*" / "model.visual.*"; the hub uses "model.*" / "visual.*".
_ALIASES = [(re.compile(r"^model\.language_model\."), "model."), (re.compile(r"^model\.visual\."), "visual.")]


def canonical_name(name: str) -> str:
    for pat, rep in _ALIASES:
        if pat.match(name):
            return pat.sub(rep, name, count=1)
    return name


def hf_to_ours(rule: Rule, w: np.ndarray, our_shape: tuple[int, ...]) -> np.ndarray:
    if rule.kind == "linear":
        return np.asarray(w).reshape(w.shape[0], -1).T.reshape(our_shape)
    return np.asarray(w).reshape(our_shape)


def ours_to_hf(rule: Rule, w: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    if rule.kind == "linear":
        n_in = int(np.prod(w.shape[:rule.n_in]))
        out = w.reshape(n_in, -1).T
        return out.reshape(rule.hf_shape(cfg)) if rule.hf_shape else out
    return w  # the caller reshapes to the HF shape (flattens stacked-head biases)


def _get(tree: dict, path: tuple[str, ...]):
    for k in path:
        tree = tree[k]
    return tree


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


class _Index:
    """Name -> file over one or several safetensors files of a checkpoint directory."""

    def __init__(self, directory: Path):
        self.directory = directory
        index = directory / "model.safetensors.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from e
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p.name for p in directory.glob("*.safetensors"))
            if not files:
                raise CheckpointError(f"{directory}: no *.safetensors files and no model.safetensors.index.json")
            weight_map = None
        self.files: dict[str, SafetensorsFile] = {}
        for f in files:
            p = directory / f
            if not p.is_file():
                raise CheckpointError(f"{directory}: index lists {f} but the file is missing")
            try:
                self.files[f] = SafetensorsFile(p)
            except SafetensorsError as e:
                raise CheckpointError(str(e)) from e
        self.where: dict[str, tuple[str, str]] = {}  # canonical name -> (file, stored name)
        for f, sf in self.files.items():
            for name in sf.names():
                if weight_map is not None and weight_map.get(name) not in (None, f):
                    continue
                canon = canonical_name(name)
                if canon in self.where:
                    raise CheckpointError(f"{directory}: tensor {canon!r} appears twice ({self.where[canon][0]}, {f})")
                self.where[canon] = (f, name)

    def shape(self, name: str) -> tuple[int, ...]:
        f, stored = self.where[name]
        return self.files[f].shape(stored)

    def get(self, name: str) -> np.ndarray:
        f, stored = self.where[name]
        return self.files[f].get(stored)


def _expected(cfg: ModelConfig, abstract: dict) -> dict[str, tuple[Rule, int | None, tuple[int, ...]]]:
    """HF name -> (rule, layer or None, expected HF shape)."""
    out = {}
    for rule in _rules(cfg):
        ours = _get(abstract, rule.path).shape
        n = _n_layers(cfg, rule)
        shape = hf_shape(rule, ours[1:] if n is not None else ours, cfg)
        for i in range(n) if n is not None else [None]:
            out[rule.hf.format(i=i)] = (rule, i, shape)
    return out


def hf_shape(rule, one: tuple[int, ...], cfg) -> tuple[int, ...]:
    """HF shape of the tensor whose param (one layer of it, when stacked) has shape ``one``: a
    linear weight is ``[out, in]`` with ``rule.n_in`` leading input dims (or ``rule.hf_shape``,
    e.g. the 5-D patch conv); a bias is flat (ours keep the head axes, ``[H, d]``, ``[3, H, d]``);
    anything else is stored as ours."""
    if rule.kind == "linear":
        if rule.hf_shape:
            return tuple(rule.hf_shape(cfg))
        n_in = int(np.prod(one[:rule.n_in]))
        return (int(np.prod(one)) // n_in, n_in)
    return (int(np.prod(one)),) if rule.hf.endswith(".bias") else tuple(one)


def load_pretrained(path: str | Path, *, config: ModelConfig | None = None, mesh=None,
                    strict: bool = True, dtype: str | None = None) -> tuple[ModelConfig, dict]:
    """``(config, params)`` from an HF-format Qwen2.5-VL directory.

    With ``mesh`` every parameter is created directly with its NamedSharding from the logical
    rules; without one it lands on the default device. ``dtype`` overrides the param dtype.
    """
    def same_shape(name, expected, got):   # HF shapes are exact here
        return got == expected

    return load_family(path, config_cls=ModelConfig, modeling=modeling, expected_fn=_expected,
                       shape_ok=same_shape, config=config, mesh=mesh, strict=strict, dtype=dtype)


def load_family(path: str | Path, *, config_cls, modeling, expected_fn, shape_ok, config=None, mesh=None,
                strict: bool = True, dtype: str | None = None):
    """What every model family's ``load_pretrained`` does, given its pieces: read ``config.json``
    with ``config_cls`` (unless ``config`` is given), index the safetensors, check that the
    tensors ``expected_fn(config, abstract)`` names are there (a tied checkpoint's stored
    ``lm_head.weight`` is ignored; other extras are errors under ``strict``) with shapes
    ``shape_ok(name, expected, got)`` accepts, then :func:`assemble_params`."""
    directory = Path(path)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a directory")
    if config is None:
        config = config_cls.from_hf_file(directory / "config.json", strict=strict)
    if dtype is not None:
        config = config.with_runtime(param_dtype=dtype)
    idx = _Index(directory)
    abstract = modeling.abstract_params(config)
    expected = expected_fn(config, abstract)

    missing = sorted(set(expected) - set(idx.where))
    extra = sorted(set(idx.where) - set(expected))
    if config.text.tie_word_embeddings and "lm_head.weight" in extra:
        extra.remove("lm_head.weight")  # some writers keep the tied copy; the embedding is used
    if missing:
        raise CheckpointError(f"{directory}: missing tensor(s) {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if extra and strict:
        raise CheckpointError(f"{directory}: unexpected tensor(s) {extra[:8]}{' ...' if len(extra) > 8 else ''}")
    for name, (_, _, want) in expected.items():
        if not shape_ok(name, want, idx.shape(name)):
            raise CheckpointError(f"{directory}: tensor {name!r} ({idx.where[name][0]}) has shape "
                                  f"{list(idx.shape(name))}, config expects {list(want) if isinstance(want, tuple) else want}"
                                  f"{'' if isinstance(want, tuple) else ' elements'}")

    shardings = modeling.param_shardings(config, mesh) if mesh is not None else None
    return config, assemble_params(expected, idx, abstract, shardings)


def assemble_params(expected: dict, idx, abstract: dict, shardings: dict | None) -> dict:
    """The parameter tree from the checkpoint: each array built by ``jax.make_array_from_callback``
    in its sharding (None: device 0), every shard read through its rule from the memory-mapped
    index, stacked layers read layer by layer, so a device reads only its shard. ``expected``:
    HF tensor name -> (rule, layer index or None, size). Both model families' loaders end here."""
    if shardings is None:
        dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: dev, abstract)

    by_path: dict[tuple, list] = {}
    for name, (rule, i, _) in expected.items():
        by_path.setdefault(rule.path, []).append((i, name, rule))

    params: dict = {}
    for path, entries in by_path.items():
        target = _get(abstract, path)
        np_dtype = np.dtype(target.dtype)

        def block(index, entries=entries, target=target, np_dtype=np_dtype):
            # index: tuple of slices over the target shape; stacked params read layer by layer.
            if entries[0][0] is None:
                (_, name, rule), = entries
                return hf_to_ours(rule, idx.get(name), target.shape)[index].astype(np_dtype)
            layer_slice, rest = index[0], index[1:]
            layers = range(target.shape[0])[layer_slice]
            order = {i: (n, r) for i, n, r in entries}
            return np.stack([
                hf_to_ours(order[i][1], idx.get(order[i][0]), target.shape[1:])[rest].astype(np_dtype)
                for i in layers
            ])

        _set(params, path, jax.make_array_from_callback(target.shape, _get(shardings, path), block))
    return params


def export_pretrained(config: ModelConfig, params: dict, path: str | Path, *,
                      max_shard_bytes: int = 4 * 2**30, dtype: str | None = None) -> Path:
    """Write ``config.json`` + safetensors (sharded above ``max_shard_bytes``) in the hub layout
    (``model.*``, ``visual.*``: the table's own names)."""
    return export_family(config, params, path, modeling=modeling, expected_fn=_expected,
                         max_shard_bytes=max_shard_bytes, dtype=dtype)


def export_family(config, params: dict, path: str | Path, *, modeling, expected_fn,
                  hf_name: Callable[[str], str] = lambda name: name, max_shard_bytes: int = 4 * 2**30,
                  dtype: str | None = None) -> Path:
    """What every model family's ``export_pretrained`` does, given its pieces: for each tensor
    ``expected_fn(config, abstract)`` names, fetch its param (one layer at a time when stacked, so
    the host holds one layer's slice, not the whole stack, per tensor), turn it into the HF layout
    (:func:`ours_to_hf`, :func:`hf_shape`), cast to ``dtype`` if given, store it as
    ``hf_name(name)``; files are cut before ``max_shard_bytes`` (several files get a
    ``model.safetensors.index.json``); ``config.json`` is ``config.to_hf_dict()``."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    np_dtype = None if dtype is None else np.dtype(jnp.dtype(dtype))
    abstract = modeling.abstract_params(config)
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, (rule, i, _) in expected_fn(config, abstract).items():
        where = "/".join(rule.path)
        try:
            leaf = _get(params, rule.path)
        except (KeyError, TypeError):
            raise CheckpointError(f"params have no {where!r} (HF tensor {name!r})") from None
        want = _get(abstract, rule.path).shape
        if tuple(leaf.shape) != tuple(want):
            raise CheckpointError(f"param {where!r} (HF tensor {name!r}) has shape {list(leaf.shape)}, "
                                  f"config expects {list(want)}")
        arr = np.asarray(jax.device_get(leaf if i is None else leaf[i]))
        w = ours_to_hf(rule, arr, config).reshape(hf_shape(rule, arr.shape, config))
        if np_dtype is not None:
            w = w.astype(np_dtype)
        if size + w.nbytes > max_shard_bytes and shards[-1]:
            shards.append({})
            size = 0
        shards[-1][hf_name(name)] = w
        size += w.nbytes
    cfg_dict = config.to_hf_dict()
    if np_dtype is not None:
        cfg_dict["dtype"] = str(np_dtype) if np_dtype != np.dtype(jnp.bfloat16) else "bfloat16"
    (directory / "config.json").write_text(json.dumps(cfg_dict, indent=2))
    if len(shards) == 1:
        save_file(shards[0], directory / "model.safetensors")
    else:
        weight_map = {}
        for k, shard in enumerate(shards):
            fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, directory / fname)
            weight_map.update({n: fname for n in shard})
        total = sum(a.nbytes for s in shards for a in s.values())
        (directory / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return directory
