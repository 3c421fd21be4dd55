"""``vital train``: run the SFT or RL trainer from a config file plus dotted overrides.

    vital train --config configs/tiny_synthetic.yaml stage=sft sft.steps=200 out_dir=runs/sft
    vital train --config configs/vital_7b_stage2_rl.yaml --config configs/mesh/v5p_64.yaml \
        model.init_from=runs/stage1/final

The run resumes from ``<out_dir>/checkpoints`` when one exists (``--no-resume`` refuses to start
over a non-empty checkpoint directory instead). SIGTERM/SIGINT checkpoint and exit 0 with the
step printed; rerun the same command to continue.

Multi-host: every process runs the same command. ``jax.distributed`` is initialised from
``--coordinator/--num-processes/--process-id``, or from the environment
(``VITAL_COORDINATOR``, ``VITAL_NUM_PROCESSES``, ``VITAL_PROCESS_ID``), or automatically on
TPU pods / SLURM clusters (JAX's own detection) when none is given.
"""

from __future__ import annotations


def add_arguments(p) -> None:
    p.description = (__doc__ or "").strip().splitlines()[0]
    p.add_argument("--config", action="append", default=None,
                   help="YAML config (see configs/); repeat to merge, e.g. a stage and a mesh layout")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. rl.group_size=8")
    p.add_argument("--no-resume", action="store_true", help="fail instead of resuming an existing run")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    from vital_jax.trainers.distributed import add_distributed_arguments

    add_distributed_arguments(p)


def run(args) -> int:
    from pathlib import Path

    from vital_jax.cli import CommandError
    from vital_jax.config.run_config import ConfigError, load_config, to_dict

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        raise CommandError(str(e)) from None
    if args.print_config:
        import yaml

        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    from vital_jax.trainers.distributed import initialize_from_args

    initialize_from_args(args)
    ckpt_dir = Path(cfg.out_dir) / "checkpoints"
    if args.no_resume and ckpt_dir.is_dir() and any(ckpt_dir.iterdir()):
        raise CommandError(f"{ckpt_dir} already has checkpoints (drop --no-resume to continue that run)")
    from jax.errors import JaxRuntimeError

    from vital_jax.data.records import DataFileError, RecordError
    from vital_jax.trainers.batch import BatchError
    from vital_jax.trainers.common import TrainingError
    from vital_jax.trainers.distributed import (
        collective_error_message,
        exit_now,
        is_multiprocess,
    )

    try:
        if cfg.stage == "sft":
            from vital_jax.trainers.sft import run_sft

            out = run_sft(cfg)
        else:
            from vital_jax.trainers.rl import run_rl

            out = run_rl(cfg)
    except (ConfigError, TrainingError, BatchError, DataFileError, RecordError) as e:
        if is_multiprocess():   # the peers may be blocked in a collective on us: exit at once
            exit_now(f"vital train: error: process {_rank()}: {e}", 2)
        raise CommandError(str(e)) from None
    except JaxRuntimeError as e:
        if is_multiprocess():   # typically a collective whose peer died ("Connection closed by peer")
            exit_now(f"vital train: error: {collective_error_message(e)}")
        raise
    if out["stopped"]:
        print(f"stopped ({out['stopped']}) at step {out['steps']}; rerun the same command to resume")
    else:
        print(f"done: {out['steps']} steps; model in {out['final']}")
    return 0


def _rank() -> int:
    import jax

    return jax.process_index()
