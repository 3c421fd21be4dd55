"""Model-only checkpoints: ``config.json`` (HF layout) + an Orbax tree of the params.

Layout of a checkpoint directory ``CKPT``::

    CKPT/config.json     # ModelConfig.to_hf_dict()
    CKPT/params/         # Orbax StandardCheckpointer tree (same structure as the params dict)

Restoring builds an abstract target with shardings from the logical rules, so a checkpoint saved
on one mesh restores onto any other (or onto a single device).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax

from vital_jax.models.qwen2_5_vl import modeling
from vital_jax.models.qwen2_5_vl.config import ModelConfig


class ModelCheckpointError(ValueError):
    pass


def save_model(directory: str | Path, config: ModelConfig, params: dict) -> Path:
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


def load_model(directory: str | Path, *, mesh=None, dtype: str | None = None) -> tuple[ModelConfig, dict]:
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    if not (directory / "config.json").is_file() or not (directory / "params").is_dir():
        raise ModelCheckpointError(
            f"{directory}: not a vital_jax model checkpoint (needs config.json and params/); "
            "for a Hugging Face directory use load_pretrained"
        )
    config = ModelConfig.from_hf_file(directory / "config.json")
    if dtype is not None:
        config = config.with_runtime(param_dtype=dtype)
    abstract = modeling.abstract_params(config)
    if mesh is not None:
        shardings = modeling.param_shardings(config, mesh)
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
