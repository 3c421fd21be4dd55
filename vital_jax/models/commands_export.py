"""``vital export``: vital_jax model checkpoint -> Hugging Face directory (config.json + safetensors),
in the hub layout of the checkpoint's family (Qwen2.5-VL or Qwen3-VL, by its config.json's
``model_type``)."""

from __future__ import annotations


def add_arguments(p):
    p.add_argument("--ckpt", required=True, help="vital_jax model checkpoint directory (config.json + params/)")
    p.add_argument("--out", required=True, help="output HF directory")
    p.add_argument("--dtype", default=None, help="tensor dtype in the files, e.g. bfloat16 (default: as stored)")
    p.add_argument("--max-shard-gb", type=float, default=4.0, help="shard the safetensors above this size")


def run(args) -> int:
    from vital_jax.cli import CommandError
    from vital_jax.models.checkpoint import ModelCheckpointError, copy_side_files, load_model
    from vital_jax.models.families import export_pretrained
    from vital_jax.models.qwen2_5_vl import ConfigError

    try:
        config, params = load_model(args.ckpt)
    except (ConfigError, ModelCheckpointError) as e:
        raise CommandError(str(e)) from e
    out = export_pretrained(config, params, args.out, dtype=args.dtype,
                            max_shard_bytes=int(args.max_shard_gb * 2**30))
    copy_side_files(args.ckpt, out)
    print(f"wrote {out}")
    return 0
