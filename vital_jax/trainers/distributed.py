"""Multi-host start-up: ``jax.distributed.initialize`` from flags, the environment, or JAX's own
cluster detection.

- Local test cluster (``scripts/launch_local.py``): ``--coordinator 127.0.0.1:PORT
  --num-processes K --process-id i`` (or ``VITAL_COORDINATOR`` / ``VITAL_NUM_PROCESSES`` /
  ``VITAL_PROCESS_ID``).
- TPU pods: run the same command on every host; JAX finds its peers itself (no flags).
- GPU clusters under SLURM / Open MPI: JAX's auto-detection reads the scheduler's environment;
  elsewhere pass the three flags (one process per host, or per GPU with ``--local-devices``).

A peer that dies makes the others fail at their next collective (its connections close: an
immediate error, which ``vital train`` reports in one line, exit status 3); a process that is not
in a collective is stopped by JAX's coordination service once the peer has missed heartbeats for
``--heartbeat-timeout`` seconds (JAX's default 100): it aborts with "Terminating process because
the JAX distributed service detected fatal errors" (SIGABRT).
"""

from __future__ import annotations

import os
import sys

import jax

_ENV = {"coordinator": "VITAL_COORDINATOR", "num_processes": "VITAL_NUM_PROCESSES", "process_id": "VITAL_PROCESS_ID"}


def add_distributed_arguments(p) -> None:
    g = p.add_argument_group("multi-host")
    g.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (env VITAL_COORDINATOR)")
    g.add_argument("--num-processes", type=int, default=None, help="processes in the job (env VITAL_NUM_PROCESSES)")
    g.add_argument("--process-id", type=int, default=None, help="this process (env VITAL_PROCESS_ID)")
    g.add_argument("--local-devices", default=None, help="comma-separated local device ids this process uses")
    g.add_argument("--heartbeat-timeout", type=int, default=None,
                   help="seconds without a heartbeat before a peer counts as dead")
    g.add_argument("--auto-distributed", action="store_true",
                   help="call jax.distributed.initialize() with JAX's cluster auto-detection (TPU pods, SLURM)")


def resolve(args) -> dict | None:
    """The initialize() keyword arguments, or None for a single-process run."""
    vals = {k: getattr(args, k, None) for k in _ENV}
    for k, env in _ENV.items():
        if vals[k] is None and os.environ.get(env):
            vals[k] = os.environ[env]
    given = [k for k, v in vals.items() if v is not None]
    if not given:
        return {} if getattr(args, "auto_distributed", False) else None
    if len(given) != 3:
        missing = [f"--{k.replace('_', '-')}" for k in _ENV if vals[k] is None]
        raise ValueError(f"multi-host: also need {', '.join(missing)} (or their VITAL_* environment variables)")
    kw = {"coordinator_address": str(vals["coordinator"]), "num_processes": int(vals["num_processes"]),
          "process_id": int(vals["process_id"])}
    if not 0 <= kw["process_id"] < kw["num_processes"]:
        raise ValueError(f"multi-host: process id {kw['process_id']} not in [0, {kw['num_processes']})")
    if getattr(args, "local_devices", None):
        kw["local_device_ids"] = [int(x) for x in str(args.local_devices).split(",")]
    if getattr(args, "heartbeat_timeout", None):
        kw["heartbeat_timeout_seconds"] = int(args.heartbeat_timeout)
    return kw


def initialize_from_args(args) -> None:
    from vital_jax.cli import CommandError

    try:
        kw = resolve(args)
    except ValueError as e:
        raise CommandError(str(e)) from None
    if kw is None:
        return
    try:
        jax.distributed.initialize(**kw)
    except TypeError:
        kw.pop("heartbeat_timeout_seconds", None)   # older JAX without the argument
        jax.distributed.initialize(**kw)


PEER_FAILURE_EXIT = 3


def is_multiprocess() -> bool:
    return jax.process_count() > 1


def exit_now(message: str, status: int = PEER_FAILURE_EXIT):
    """Multi-process error exit: ``message`` as one line on stderr, then ``os._exit``.

    A normal exit would run JAX's atexit shutdown barrier, which cannot complete while a peer is
    dead (C++ errors) or blocked in a collective waiting for this process (a hang of up to the
    300 s shutdown timeout). Exiting at once closes this process's connections, so the peers'
    next collective fails immediately and they report it the same way.
    """
    sys.stdout.flush()
    print(message, file=sys.stderr, flush=True)
    os._exit(status)


def collective_error_message(e: BaseException) -> str:
    """One line for a runtime error in a multi-process run (usually a dead peer)."""
    first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
    return (f"process {jax.process_index()}/{jax.process_count()}: {first} "
            "(in a multi-process run this usually means a peer process died: see its log)")
