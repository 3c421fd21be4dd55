"""The model-family seam: which family (``qwen2_5_vl``, ``qwen3_vl``) a checkpoint or a config
belongs to, and the stable entry points that dispatch on it (``vital_jax.load_pretrained``,
``vital_jax.forward``, ``vital_jax.rope_index``, ``vital_jax.export_pretrained``). What differs
per family lives in its folder; this module only routes.

Every family package exports the same names, which the sampler and the trainers use through
:func:`package_of` / :func:`modeling_of` without knowing the family:

- host side (package): ``ModelConfig``, ``VisionArrays``, ``vision_arrays(cfg, pixels, grids,
  pad_to)``, ``visual_positions(cfg, ids, visuals, start=0)``, ``TEXT_TIMESTAMPS`` (whether the
  family writes a video's time as text before each temporal group), ``vision_processing(cfg)``
  (the patch grid and pixel statistics :mod:`vital_jax.video` prepares for), ``init_params``,
  ``abstract_params``, ``param_shardings``, ``load_pretrained``;
- device side (``modeling``): ``encode_vision(cfg, vparams, arrays)`` -> visual features (a pytree
  whose leaves have visual tokens on axis -2), ``hidden_states(cfg, params, ids, features,
  vis_index, positions, mask, cache=None, write_at=None)`` -> ``(hidden, cache)``,
  ``zero_features(cfg, tokens)``, ``lm_logits``, ``target_logprobs``, ``KVCache``,
  ``CausalMask``, ``SlotMask`` (the last three are one shared class each).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from vital_jax.errors import VitalError

# HF ``model_type`` -> our package; the MoE variants (qwen3_vl_moe) would add a line here
FAMILIES = {"qwen2_5_vl": "vital_jax.models.qwen2_5_vl", "qwen3_vl": "vital_jax.models.qwen3_vl"}


class FamilyError(VitalError, ValueError):
    """A checkpoint whose ``model_type`` no family here implements."""


def family_module(model_type: str):
    if model_type not in FAMILIES:
        raise FamilyError(f"model_type {model_type!r} is not implemented; known: {', '.join(sorted(FAMILIES))}")
    return importlib.import_module(FAMILIES[model_type])


def model_type_of(path: str | Path) -> str:
    """``model_type`` of an HF directory's ``config.json`` (Qwen2.5-VL when the file has none)."""
    f = Path(path) / "config.json"
    try:
        d = json.loads(f.read_text())
    except (OSError, ValueError):
        return "qwen2_5_vl"   # the family's own loader reports the unreadable file, naming it
    return str(d.get("model_type") or "qwen2_5_vl")


def family_of(config) -> str:
    """The family of a model config object."""
    for name, mod in FAMILIES.items():
        if isinstance(config, importlib.import_module(mod).ModelConfig):
            return name
    raise FamilyError(f"{type(config).__name__} is not a model config of a known family")


def preset_family(preset: str) -> tuple[str, str]:
    """``(family, size)`` of a run config's ``model.preset``: ``qwen3_vl_<size>`` (e.g.
    ``qwen3_vl_8b``, ``qwen3_vl_tiny``) is Qwen3-VL, a bare size (``tiny``, ``7b``) Qwen2.5-VL."""
    name = preset.lower().replace("-", "_")
    for family in FAMILIES:
        if name.startswith(family + "_"):
            return family, name.removeprefix(family + "_")
    return "qwen2_5_vl", name


def package_of(config):
    """The family package of a model config (see the module docstring for what it exports)."""
    return family_module(family_of(config))


def modeling_of(config):
    """The family's device-side module (``encode_vision``, ``hidden_states``, ...)."""
    return package_of(config).modeling


def load_pretrained(path: str | Path, **kw):
    """``(config, params)`` of an HF directory of any family here, by its ``model_type``."""
    return family_module(model_type_of(path)).load_pretrained(path, **kw)


def export_pretrained(config, params: dict, path: str | Path, **kw) -> Path:
    """Write ``params`` as an HF directory (``config.json`` + safetensors) in the hub layout of the
    config's family; ``kw``: ``max_shard_bytes``, ``dtype``."""
    return family_module(family_of(config)).export_pretrained(config, params, path, **kw)


def rope_index(config, input_ids, image_grid_thw=None, video_grid_thw=None, second_per_grid_ts=None,
               attention_mask=None):
    """M-RoPE ``(position_ids[3, B, L], deltas[B])`` by the config's family rule (Qwen3-VL has no
    seconds per grid: a video group's time is in its text)."""
    if family_of(config) == "qwen3_vl":
        return family_module("qwen3_vl").rope_index(config, input_ids, image_grid_thw, video_grid_thw, attention_mask)
    return family_module("qwen2_5_vl").rope_index(config, input_ids, image_grid_thw, video_grid_thw,
                                                  second_per_grid_ts, attention_mask)


def forward(config, params: dict, batch: dict):
    """Logits ``[B, L, V]`` (float32) of a transformers-named batch (``input_ids``, optional
    ``attention_mask`` / ``position_ids`` (used as given, else the family's rope index),
    ``pixel_values``/``image_grid_thw``, ``pixel_values_videos``/``video_grid_thw``)."""
    if family_of(config) == "qwen2_5_vl":
        return family_module("qwen2_5_vl").forward(config, params, batch)
    q3 = family_module("qwen3_vl")
    from vital_jax.models.qwen2_5_vl.api import BATCH_KEYS

    unknown = set(batch) - BATCH_KEYS
    if unknown:
        raise q3.InputError(f"unknown batch key(s) {sorted(unknown)}")
    pos = batch.get("position_ids")
    if pos is None:
        pos, _ = q3.rope_index(config, batch["input_ids"], batch.get("image_grid_thw"), batch.get("video_grid_thw"),
                               batch.get("attention_mask"))
    return q3.forward(config, params, batch["input_ids"], pos, batch.get("attention_mask"),
                      pixel_values=batch.get("pixel_values"), image_grid_thw=batch.get("image_grid_thw"),
                      pixel_values_videos=batch.get("pixel_values_videos"), video_grid_thw=batch.get("video_grid_thw"))
