"""Model checkpoints, in either of the two formats every command accepts.

- a **vital checkpoint** (``vital convert``, :func:`save_model`)::

      CKPT/config.json     # ModelConfig.to_hf_dict()
      CKPT/params/         # Orbax StandardCheckpointer tree (same structure as the params dict)

  Restoring builds an abstract target with shardings from the logical rules, so a checkpoint
  saved on one mesh restores onto any other (or onto a single device);
- an **HF directory** (``config.json`` + ``*.safetensors``; what the trainers export and the hub
  ships), read by :func:`vital_jax.models.families.load_pretrained`.

Either model family (Qwen2.5-VL, Qwen3-VL) in either format: ``config.json``'s ``model_type``
picks the family's config class, parameter tree and shardings (:mod:`vital_jax.models.families`).

Both carry the same side files (:data:`SIDE_FILES`: the tokenizer, the processor/prompt settings
``vital_settings.json``), which ``vital convert`` and ``vital export`` copy across, so
:func:`load_any` + ``load_tokenizer`` work on whatever a command is given.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax

from vital_jax.errors import VitalError
from vital_jax.models.families import FamilyError, family_module, model_type_of


class ModelCheckpointError(VitalError, ValueError):
    pass


# What a model directory carries besides its weights: tokenizer files (HF names) and the input /
# prompt settings the trainers write (vital_jax.config.run_config.VISION_SETTINGS_FILE).
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
              "added_tokens.json", "chat_template.json", "chat_template.jinja", "preprocessor_config.json",
              "generation_config.json", "vital_settings.json")


def copy_side_files(src: str | Path, dst: str | Path) -> list[str]:
    """Copy :data:`SIDE_FILES` present in ``src`` into ``dst``; the names copied."""
    import shutil

    out = []
    for name in SIDE_FILES:
        if (Path(src) / name).is_file():
            shutil.copyfile(Path(src) / name, Path(dst) / name)
            out.append(name)
    return out


def is_vital_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / "params").is_dir()


def _family(directory: Path):
    """The family package of the checkpoint in ``directory``, by its config.json's model_type."""
    try:
        return family_module(model_type_of(directory))
    except FamilyError as e:
        raise ModelCheckpointError(f"{directory}/config.json: {e}") from None


def load_any(directory: str | Path, *, mesh=None, dtype: str | None = None) -> tuple:
    """``(config, params)`` of a vital checkpoint or an HF directory (see the module doc); a
    ModelCheckpointError naming the directory when it is neither or its family is unknown."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelCheckpointError(f"{directory}: not a directory")
    if is_vital_checkpoint(directory):
        return load_model(directory, mesh=mesh, dtype=dtype)
    if not (directory / "config.json").is_file():
        raise ModelCheckpointError(f"{directory}: no config.json (expected a vital_jax checkpoint: config.json + "
                                   "params/, or an HF-format directory: config.json + *.safetensors)")
    return _family(directory).load_pretrained(directory, mesh=mesh, dtype=dtype)


def save_model(directory: str | Path, config, params: dict) -> Path:
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    if (directory / "params").exists():
        raise ModelCheckpointError(f"{directory}/params already exists; refusing to overwrite")
    directory.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory / "params", params)
        ckptr.wait_until_finished()
    # config last: a directory with config.json is a complete checkpoint
    (directory / "config.json").write_text(json.dumps(config.to_hf_dict(), indent=2))
    return directory


def load_model(directory: str | Path, *, mesh=None, dtype: str | None = None) -> tuple:
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    if not (directory / "config.json").is_file() or not (directory / "params").is_dir():
        raise ModelCheckpointError(
            f"{directory}: not a vital_jax model checkpoint (needs config.json and params/); "
            "for a Hugging Face directory use load_pretrained"
        )
    family = _family(directory)
    config = family.ModelConfig.from_hf_file(directory / "config.json")
    if dtype is not None:
        config = config.with_runtime(param_dtype=dtype)
    abstract = family.abstract_params(config)
    if mesh is not None:
        shardings = family.param_shardings(config, mesh)
    else:
        dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: dev, abstract)
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    with ocp.StandardCheckpointer() as ckptr:
        try:
            params = ckptr.restore(directory / "params", target)
        except (ValueError, KeyError) as e:
            raise ModelCheckpointError(f"{directory}/params does not match config.json: {e}") from e
    return config, params
