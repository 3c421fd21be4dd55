"""``vital plan``: per-device memory of a training config on a mesh, without allocating weights.

    vital plan --config configs/vital_7b_stage1_sft.yaml --mesh data=2,fsdp=16,tensor=1 --device-memory 95
    vital plan --config configs/vital_7b_stage2_rl.yaml --model 72b --mesh data=1,fsdp=8,tensor=4 --json
    vital plan --config configs/vital_qwen3_vl_8b_stage1_sft.yaml --config configs/mesh/gpu_8.yaml --device-memory 80

Rows: params, optimizer state, gradients (+ the optimizer's float32 update tree), batch, gathered
weights (FSDP / vocab-parallel copies), activations under the configured remat, and for RL the
rollout KV cache and the reference policy. See ``vital_jax.apps.plan`` for the formulas.
"""

from __future__ import annotations


def add_arguments(p) -> None:
    p.description = (__doc__ or "").strip().splitlines()[0]
    p.add_argument("--config", action="append", default=None,
                   help="YAML config (see configs/); repeat to merge, e.g. a stage and a mesh layout")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. model.remat=full")
    p.add_argument("--mesh", default=None,
                   help="data=N,fsdp=N,tensor=N (default: the config's mesh section)")
    p.add_argument("--devices", type=int, default=None, help="device count (resolves a -1 mesh axis)")
    p.add_argument("--device-memory", type=float, default=None, metavar="GB",
                   help="memory of one device in GB (e.g. 95 for TPU v5p, 80 for H100): print a verdict")
    p.add_argument("--model", default=None,
                   help="model instead of the config's: Qwen2.5-VL tiny, 3b, 7b, 32b, 72b; "
                        "Qwen3-VL qwen3_vl_tiny, qwen3_vl_2b, qwen3_vl_4b, qwen3_vl_8b, qwen3_vl_32b")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def run(args) -> int:
    import json

    from vital_jax.cli import CommandError
    from vital_jax.config.run_config import ConfigError, load_config
    from vital_jax.apps.plan import PlanError, parse_mesh, plan

    try:
        cfg = load_config(args.config, args.overrides)
        if args.mesh is not None:
            shape = parse_mesh(args.mesh)
        else:
            shape = (cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
        if args.devices is not None and args.devices < 1:
            raise PlanError(f"--devices {args.devices}: must be >= 1")
        if args.device_memory is not None and args.device_memory <= 0:
            raise PlanError(f"--device-memory {args.device_memory}: must be > 0 GB")
        # abstract evaluation only: no accelerator needed (and none is touched)
        import jax

        with jax.default_device(jax.devices("cpu")[0]):
            result = plan(cfg, shape, devices=args.devices, device_memory_gb=args.device_memory,
                          preset=args.model)
    except (ConfigError, PlanError) as e:
        raise CommandError(str(e)) from None
    print(json.dumps(result.to_json(), indent=2) if args.json else result.table())
    return 0 if result.fits is not False else 1
