"""``vital convert``: Hugging Face directory (Qwen2.5-VL or Qwen3-VL, by its config.json's
``model_type``) -> vital_jax model checkpoint (Orbax).

The tokenizer and the input/prompt settings go along (``SIDE_FILES``), so ``vital infer`` and
``vital eval`` take the converted checkpoint as they take the HF directory."""

from __future__ import annotations


def add_arguments(p):
    p.add_argument("--hf", required=True, help="HF directory: config.json + *.safetensors (sharded or not)")
    p.add_argument("--out", required=True, help="output checkpoint directory (config.json + params/)")
    p.add_argument("--dtype", default=None, help="parameter dtype, e.g. bfloat16 (default: float32)")


def run(args) -> int:
    from vital_jax.cli import CommandError
    from vital_jax.models.checkpoint import ModelCheckpointError, copy_side_files, save_model
    from vital_jax.models.families import FamilyError, load_pretrained
    from vital_jax.models.qwen2_5_vl import CheckpointError, ConfigError

    try:
        config, params = load_pretrained(args.hf, dtype=args.dtype)
        out = save_model(args.out, config, params)
    except (CheckpointError, ConfigError, FamilyError, ModelCheckpointError) as e:
        raise CommandError(str(e)) from e
    side = copy_side_files(args.hf, out)
    n = sum(x.size for x in __import__("jax").tree.leaves(params))
    print(f"wrote {out} ({n / 1e6:.1f}M parameters, {config.runtime.param_dtype}; "
          f"{', '.join(side) if side else 'no tokenizer or settings files found'})")
    return 0
