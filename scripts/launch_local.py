#!/usr/bin/env python
"""Start K processes of one command on 127.0.0.1, as a local multi-host JAX job (for testing).

    python scripts/launch_local.py -n 2 -- vital train data.root=runs/synthetic out_dir=runs/mh

Each process gets ``--coordinator 127.0.0.1:PORT --num-processes K --process-id i`` appended to
the command (``--env``: the ``VITAL_COORDINATOR`` / ``VITAL_NUM_PROCESSES`` /
``VITAL_PROCESS_ID`` variables instead), and its own ``--devices`` fake CPU devices
(``JAX_PLATFORMS=cpu``, ``XLA_FLAGS=--xla_force_host_platform_device_count=N``,
``JAX_NUM_CPU_DEVICES=N``), so K processes x N devices form one global mesh.

Output lines are prefixed with ``[p{i}]``. If a process exits non-zero the launcher names it,
gives the others ``--grace`` seconds to fail on their own (they notice the dead peer at their
next collective), then terminates them and exits non-zero. Ctrl-C / SIGTERM are forwarded once
to every process (the trainers checkpoint and exit 0); a second one kills them.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import threading
import time

PREFIX = "launch_local"


def _say(msg: str) -> None:
    print(f"[{PREFIX}] {msg}", file=sys.stderr, flush=True)


def child_env(base: dict, devices: int, rank: int, num: int, coordinator: str, use_env: bool) -> dict:
    env = dict(base)
    env["JAX_PLATFORMS"] = "cpu"
    # replace (not add to) a device-count flag inherited from the parent, e.g. a test suite's 8
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    env["JAX_NUM_CPU_DEVICES"] = str(devices)
    env["PYTHONUNBUFFERED"] = "1"   # interleaved lines show up when they are printed
    for k in ("VITAL_COORDINATOR", "VITAL_NUM_PROCESSES", "VITAL_PROCESS_ID"):
        env.pop(k, None)
    if use_env:
        env.update(VITAL_COORDINATOR=coordinator, VITAL_NUM_PROCESSES=str(num), VITAL_PROCESS_ID=str(rank))
    return env


def child_argv(cmd: list[str], rank: int, num: int, coordinator: str, use_env: bool) -> list[str]:
    if use_env:
        return list(cmd)
    return list(cmd) + ["--coordinator", coordinator, "--num-processes", str(num), "--process-id", str(rank)]


def _pump(rank: int, stream, out, lock: threading.Lock) -> None:
    tag = f"[p{rank}] ".encode()
    for line in iter(stream.readline, b""):
        with lock:
            out.write(tag + line if line.endswith(b"\n") else tag + line + b"\n")
            out.flush()
    stream.close()


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class Launcher:
    def __init__(self, cmd: list[str], num: int, devices: int, port: int, use_env: bool, grace: float):
        self.cmd, self.num, self.devices, self.port = cmd, num, devices, port
        self.use_env, self.grace = use_env, grace
        self.procs: list[subprocess.Popen] = []
        self.pumps: list[threading.Thread] = []
        self.signals = 0

    def start(self) -> None:
        coordinator = f"127.0.0.1:{self.port}"
        lock = threading.Lock()
        out = sys.stdout.buffer
        _say(f"{self.num} processes x {self.devices} CPU devices, coordinator {coordinator}: {shlex.join(self.cmd)}")
        for rank in range(self.num):
            # own session: a terminal's Ctrl-C reaches only the launcher, which forwards it once
            # (a second SIGINT inside a trainer means "abort now", not "checkpoint")
            p = subprocess.Popen(child_argv(self.cmd, rank, self.num, coordinator, self.use_env),
                                 env=child_env(os.environ, self.devices, rank, self.num, coordinator, self.use_env),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
            self.procs.append(p)
            _say(f"process {rank}: pid {p.pid}")
            t = threading.Thread(target=_pump, args=(rank, p.stdout, out, lock), daemon=True)
            t.start()
            self.pumps.append(t)

    def _send(self, sig: int) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.send_signal(sig)
                except ProcessLookupError:
                    pass

    def on_signal(self, signum, frame) -> None:
        self.signals += 1
        name = signal.Signals(signum).name
        if self.signals == 1:
            _say(f"{name}: forwarding to all processes (they checkpoint and stop); repeat to kill them")
            self._send(signum)
        else:
            _say(f"{name} again: killing all processes")
            self._send(signal.SIGKILL)

    def _stop_rest(self) -> None:
        """Peers of a failed process: wait ``grace`` s, then SIGTERM, then SIGKILL."""
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline and any(p.poll() is None for p in self.procs):
            time.sleep(0.2)
        alive = [i for i, p in enumerate(self.procs) if p.poll() is None]
        if not alive:
            return
        _say(f"terminating process(es) {alive} (still running {self.grace:.0f} s after the failure)")
        self._send(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(p.poll() is None for p in self.procs):
            time.sleep(0.2)
        if any(p.poll() is None for p in self.procs):
            self._send(signal.SIGKILL)

    def wait(self) -> int:
        failed: tuple[int, int] | None = None
        while True:
            codes = [p.poll() for p in self.procs]
            if failed is None:
                for i, c in enumerate(codes):
                    if c not in (None, 0):
                        failed = (i, c)
                        _say(f"process {i} (pid {self.procs[i].pid}) failed: {_describe(c)}")
                        self._stop_rest()
                        break
                if failed is not None:
                    continue
            if all(c is not None for c in codes):
                break
            time.sleep(0.2)
        for p in self.procs:
            p.wait()
        for t in self.pumps:
            t.join(timeout=5)
        if failed is None:
            _say("all processes exited 0")
            return 0
        others = [f"p{i}: {_describe(p.returncode)}" for i, p in enumerate(self.procs) if i != failed[0]]
        _say(f"FAILED: process {failed[0]} {_describe(failed[1])} first; " + ", ".join(others))
        code = failed[1]
        return code if 0 < code < 256 else 128 + (-code if code < 0 else 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                usage="%(prog)s [-n K] [--devices N] [--port P] [--env] [--grace S] -- COMMAND ...")
    p.add_argument("-n", "--num-processes", type=int, default=2, help="processes to start (default 2)")
    p.add_argument("--devices", type=int, default=2, help="fake CPU devices per process (default 2)")
    p.add_argument("--port", type=int, default=None, help="coordinator port (default: a free one)")
    p.add_argument("--env", action="store_true",
                   help="pass VITAL_COORDINATOR/NUM_PROCESSES/PROCESS_ID instead of appending flags")
    p.add_argument("--grace", type=float, default=30.0,
                   help="seconds the other processes get to exit after one fails (default 30)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command (after --)")
    args = p.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        p.error("no command given (put it after --)")
    if args.num_processes < 1 or args.devices < 1:
        p.error("--num-processes and --devices must be >= 1")
    port = args.port
    if port is None:
        import portpicker

        port = portpicker.pick_unused_port()
    launcher = Launcher(cmd, args.num_processes, args.devices, port, args.env, args.grace)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, launcher.on_signal)
    launcher.start()
    return launcher.wait()


if __name__ == "__main__":
    sys.exit(main())
