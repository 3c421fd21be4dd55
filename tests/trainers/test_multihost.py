"""Multi-process training on one machine: ``scripts/launch_local.py`` starts 2 processes x 2 fake
CPU devices (4 global devices, mesh data=4) on 127.0.0.1.

- the launcher: flags appended, output prefixed, Ctrl-C forwarded once, a failed process named;
- the train step (SFT and RL losses) on a fixed global batch, each process feeding its half with
  ``put_batch``, equals one process with 4 devices fed the whole batch (per-step losses, per-row
  log-probs in global row order, final params). Comparing whole ``vital train`` runs would not be
  honest: the pipeline shards records per host, so 1 and 2 processes see different batches;
- ``vital train`` end to end with 2 processes: SFT with a peer SIGKILLed mid-run (the survivor
  stops within the heartbeat bound), resumed from the checkpoint the two processes wrote (the
  next step's loss equals the interrupted run's), finished with ``final/``; then RL from it.

Running this file as a script is the step-equality worker (``python test_multihost.py worker``).
Every launch compiles from scratch (compile caches do not carry across processes), so the runs
use one token bucket and one vision bucket and start from a model written with NumPy (a fresh
``init_params`` costs ~25 s per process on a busy 2-core machine).
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "scripts" / "launch_local.py"
pytestmark = pytest.mark.timeout(900)

# one token bucket, one vision bucket: a single train-step shape per run
TRAIN = ["data.vision.max_frames=4", "data.vision.clip_max_frames=2", "data.token_buckets=[1024]",
         "data.vision_buckets=[256]", "log_every=1"]


def _env() -> dict:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)          # the suite's 8-device flag: the launcher sets its own
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _launch(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(LAUNCH), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_env(), cwd=ROOT, **kw)


def _vital(*args: str) -> list[str]:
    return [sys.executable, "-m", "vital_jax.cli", *args]


def _lines(text: str, rank: int) -> list[str]:
    tag = f"[p{rank}] "
    return [ln[len(tag):] for ln in text.splitlines() if ln.startswith(tag)]


_READERS: dict[int, queue.Queue[str | None]] = {}


def _reader(proc: subprocess.Popen) -> queue.Queue[str | None]:
    """Lines of the launcher's output through a thread, so waiting for one can time out
    (a bare readline() blocks forever when the children go quiet)."""
    q = _READERS.get(proc.pid)
    if q is None:
        q = _READERS[proc.pid] = queue.Queue()

        def pump():
            for line in proc.stdout:
                q.put(line)
            q.put(None)
        threading.Thread(target=pump, daemon=True).start()
    return q


def _read_until(proc: subprocess.Popen, pattern: str, timeout: float, seen: list[str]) -> re.Match:
    """Lines until ``pattern`` matches (all kept in ``seen``). Lines already in ``seen`` count
    too: the processes' output interleaves in any order."""
    rx = re.compile(pattern)
    for line in seen:
        m = rx.search(line)
        if m:
            return m
    q = _reader(proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = q.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        m = rx.search(line)
        if m:
            return m
    raise AssertionError(f"no line matching {pattern!r} in {timeout} s:\n" + "".join(seen[-40:]))


def _rest(proc: subprocess.Popen, timeout: float) -> str:
    """The remaining output once the launcher exits."""
    proc.wait(timeout=timeout)
    q = _reader(proc)
    out = []
    while True:
        line = q.get(timeout=30)
        if line is None:
            return "".join(out)
        out.append(line)


def _losses(text: str, rank: int = 0) -> dict[int, float]:
    out = {}
    for ln in _lines(text, rank):
        m = re.match(r"(?:sft|rl) step (\d+)/\d+ \|.* loss ([-0-9.naninf]+)", ln)
        if m:
            out[int(m.group(1))] = float(m.group(2))
    return out


# --------------------------------------------------------------------------- fixtures


def write_init_model(out: Path, data_root: Path) -> None:
    """The run's tiny model with NumPy-random params (N(0, 0.02), norms 1, biases 0) + tokenizer."""
    import jax

    from vital_jax.models.qwen2_5_vl import export_pretrained, modeling
    from vital_jax.trainers.common import build_tokenizer, tiny_config_for
    from vital_jax.config.run_config import load_config

    tok = build_tokenizer(load_config(None, [f"data.root={data_root}"]))
    mcfg = tiny_config_for(tok)
    rng = np.random.default_rng(0)

    def leaf(path, s):
        name = jax.tree_util.keystr(path)
        if "norm" in name:
            return np.ones(s.shape, s.dtype)
        if "bias" in name:
            return np.zeros(s.shape, s.dtype)
        return (rng.standard_normal(s.shape) * 0.02).astype(s.dtype)

    params = jax.tree_util.tree_map_with_path(leaf, modeling.abstract_params(mcfg))
    export_pretrained(mcfg, params, out)
    tok.save(out)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    base = tmp_path_factory.mktemp("multihost")
    data = base / "data"
    subprocess.run(_vital("synth", "--out", str(data), "--num", "16", "--min-seconds", "30", "--max-seconds",
                          "40", "--size", "64"), check=True, env=_env(), cwd=ROOT, capture_output=True)
    init = base / "init"
    write_init_model(init, data)
    return base, data, init


# --------------------------------------------------------------------------- launcher


CHILD = textwrap.dedent("""
    import os, signal, sys, time
    args = sys.argv[1:]
    rank = int(args[args.index("--process-id") + 1])
    print("args", " ".join(args), "devices", os.environ["JAX_NUM_CPU_DEVICES"], os.environ["XLA_FLAGS"], flush=True)
    if sys.argv[0] == "-c" and os.environ.get("MODE") == "fail":
        if rank == 1:
            sys.exit(5)
        time.sleep(120)
    got = []
    signal.signal(signal.SIGINT, lambda s, f: got.append(s))
    print("ready", flush=True)
    while not got:
        time.sleep(0.05)
    time.sleep(0.5)   # a second forwarded signal would land here
    print("signals", len(got), flush=True)
""")


def test_launcher_prefixes_forwards_sigint_once_and_names_the_failed_process():
    p = _launch(["-n", "2", "--devices", "3", "--", sys.executable, "-c", CHILD])
    seen: list[str] = []
    _read_until(p, r"\[p0\] ready", 60, seen)
    _read_until(p, r"\[p1\] ready", 60, seen)
    p.send_signal(signal.SIGINT)
    out = "".join(seen) + _rest(p, 60)
    assert p.returncode == 0, out
    for r in (0, 1):
        lines = _lines(out, r)
        assert any(f"--num-processes 2 --process-id {r}" in ln and "--coordinator 127.0.0.1:" in ln
                   and "devices 3 " in ln and "xla_force_host_platform_device_count=3" in ln for ln in lines), out
        assert "signals 1" in lines, out          # exactly one SIGINT each: the trainers checkpoint

    env = {"MODE": "fail"}
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, str(LAUNCH), "-n", "2", "--grace", "1", "--", sys.executable, "-c", CHILD],
                       capture_output=True, text=True, env={**_env(), **env}, timeout=120, check=False)
    assert p.returncode == 5, p.stdout + p.stderr
    assert time.monotonic() - t0 < 30            # p0 (sleeping 120 s) was terminated after the grace
    assert re.search(r"process 1 \(pid \d+\) failed: exit status 5", p.stderr), p.stderr
    assert "p0: killed by SIGTERM" in p.stderr, p.stderr


# --------------------------------------------------------------------------- train step == 1 process


def test_train_step_two_processes_equals_one_process(suite, tmp_path):
    """SFT and RL train steps on a fixed global batch: 2 processes x 2 devices == 1 x 4."""
    _, _, init = suite
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    worker = [sys.executable, str(Path(__file__).resolve()), "worker", "--init", str(init)]
    env1 = {**_env(), "JAX_NUM_CPU_DEVICES": "4", "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    # both at once: each spends much of its time waiting (compiling, or on its peer)
    p1 = subprocess.Popen(worker + ["--out", str(one)], env=env1, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    p2 = _launch(["-n", "2", "--devices", "2", "--", *worker, "--out", str(two)])
    out2 = p2.communicate(timeout=600)[0]
    out1 = p1.communicate(timeout=600)[0]
    assert p1.returncode == 0, out1
    assert p2.returncode == 0, out2
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert a["devices"] == b["devices"] == 4 and (a["processes"], b["processes"]) == (1, 2)
    for k in ("sft_loss", "sft_grad_norm", "rl_loss", "rl_grad_norm", "row_nll", "params_abs_sum"):
        assert np.all(np.isfinite(a[k])), (k, a[k])
        np.testing.assert_allclose(b[k], a[k], rtol=2e-5, atol=1e-6, err_msg=k)
    # the steps really trained, and rows are distinguishable (a swapped host half would show)
    assert a["sft_loss"][-1] < a["sft_loss"][0]
    assert len(set(np.round(a["row_nll"], 3))) == len(a["row_nll"])


def worker_main(argv: list[str]) -> int:
    """Step-equality worker: the same global rows on any number of processes; process 0 writes
    the per-step metrics, the per-row log-likelihoods (global row order) and a params checksum."""
    import argparse
    import functools

    from vital_jax.trainers.distributed import (
        add_distributed_arguments,
        initialize_from_args,
    )

    ap = argparse.ArgumentParser()
    ap.add_argument("--init", required=True)
    ap.add_argument("--out", required=True)
    add_distributed_arguments(ap)
    args = ap.parse_args(argv)
    initialize_from_args(args)      # before anything touches devices

    import jax
    from jax.experimental import multihost_utils

    from vital_jax.sharding import make_mesh
    from vital_jax.trainers.batch import Sequence_, batch_shardings, build_batch
    from vital_jax.trainers.common import (
        build_model,
        build_tokenizer,
        host_metrics,
        put_batch,
    )
    from vital_jax.config.run_config import load_config
    from vital_jax.trainers.optim import make_optimizer
    from vital_jax.trainers.rl import rl_loss
    from vital_jax.trainers.batch import global_pads, global_shapes
    from vital_jax.trainers.sft import _sft_loss
    from vital_jax.trainers.step import init_state, jit_train_step, token_logps

    cfg = load_config(None, [f"model.init_from={args.init}", "data.token_buckets=[64]", "rl.group_size=2",
                             "sft.optim.warmup_steps=0"])
    mesh = make_mesh(*cfg.mesh.resolve(jax.device_count()))
    tok = build_tokenizer(cfg)
    mcfg, params0 = build_model(cfg, tok, mesh)
    hosts, rank = jax.process_count(), jax.process_index()
    R, V = 8, mcfg.text.vocab_size   # global rows: 2 per device

    def rows(seed: int, rl: bool) -> list:
        """The global batch of one step (identical on every process); text only."""
        rng = np.random.default_rng(seed)
        out = []
        for i in range(R):
            n = int(rng.integers(24, 64))
            ids = rng.integers(10, V, n).tolist()
            prompt = int(rng.integers(4, 12))
            mask = [0] * prompt + [1] * (n - prompt)
            adv = float((i // 2) % 2 * 2 - 1) * (1.0 + i / 10) if rl else 0.0
            out.append(Sequence_(ids, mask, [], adv, group=i // 2))
        return out

    def local(global_rows):
        k = R // hosts
        return global_rows[rank * k:(rank + 1) * k]

    def batch_of(global_rows):
        mine = local(global_rows)
        nb = build_batch(mcfg, mine, micro_batches=1, token_buckets=cfg.data.token_buckets,
                         vision_buckets=cfg.data.vision_buckets,
                         **global_pads(cfg.data.token_buckets, cfg.data.vision_buckets, mine))
        return put_batch(nb, batch_shardings(mesh, global_shapes(nb)))

    def row_nll(params, batch):
        """Per-row masked NLL of micro-batch 0, ``[rows]`` in global row order."""
        mb = jax.tree.map(lambda x: x[0], batch)
        return -jax.numpy.sum(token_logps(mcfg, params, mb) * mb["loss_mask"], axis=-1)

    result: dict = {"devices": jax.device_count(), "processes": hosts}
    with jax.set_mesh(mesh):
        for name, loss_fn, optim, steps in (
                ("sft", functools.partial(_sft_loss, mcfg), cfg.sft.optim, 3),
                ("rl", functools.partial(rl_loss, mcfg, cfg.rl), cfg.rl.optim, 2)):
            opt = make_optimizer(optim, steps)
            # a copy: the train step donates the state's buffers
            state, state_sh = init_state(mcfg, opt, jax.tree.map(jax.numpy.copy, params0), mesh)
            fn = None
            for s in range(steps):
                # SFT: one batch again and again (its loss must fall); RL: a new batch per step
                batch = batch_of(rows(0, False) if name == "sft" else rows(100 + s, True))
                if fn is None:
                    fn = jit_train_step(loss_fn, opt, state_sh, jax.tree.map(lambda x: x.sharding, batch))
                state, m = fn(state, batch)
                m = host_metrics(m)
                result.setdefault(f"{name}_loss", []).append(m["loss"])
                result.setdefault(f"{name}_grad_norm", []).append(m["grad_norm"])
            if name == "sft":
                batch = batch_of(rows(7, False))
                nll = jax.jit(row_nll)(state.params, batch)
                result["row_nll"] = np.asarray(multihost_utils.process_allgather(nll, tiled=True)).tolist()
            full = multihost_utils.process_allgather(state.params, tiled=True)
            result.setdefault("params_abs_sum", []).append(
                float(sum(np.abs(np.asarray(x, np.float64)).sum() for x in jax.tree.leaves(full))))
    if rank == 0:
        Path(args.out).write_text(json.dumps(result))
    return 0


# --------------------------------------------------------------------------- vital train, 2 processes


def test_vital_train_two_processes_peer_killed_resume_finish_then_rl(suite):
    base, data, init = suite
    run = base / "sft"
    sft = _vital("train", f"data.root={data}", f"out_dir={run}", f"model.init_from={init}", "sft.steps=4",
                 "sft.batch_size=4", "checkpoint.every=2", *TRAIN)

    # 1. p1 is SIGKILLed after step 3; the sync checkpoint of step 2 is complete by then
    p = _launch(["-n", "2", "--grace", "150", "--", *sft, "checkpoint.async_save=false", "--heartbeat-timeout", "10"])
    seen: list[str] = []
    pid = int(_read_until(p, r"process 1: pid (\d+)", 60, seen).group(1))
    _read_until(p, r"\[p1\] sft step 3/4", 400, seen)
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    out1 = "".join(seen) + _rest(p, 200)
    stop_s = time.monotonic() - t0
    assert p.returncode != 0, out1
    # the launcher names the killed process, whichever of the two it saw exit first
    assert (re.search(rf"process 1 \(pid {pid}\) failed: killed by SIGKILL", out1)
            or re.search(r"FAILED: .*p1: killed by SIGKILL", out1)), out1
    assert stop_s < 120, (stop_s, out1)
    p0 = "\n".join(_lines(out1, 0))
    # the survivor either failed its next collective (our one line, no traceback) or was stopped
    # by JAX's coordination service after the heartbeat timeout
    one_line = re.search(r"vital train: error: process 0/2: .*peer process died", p0)
    assert one_line or "JAX distributed service detected fatal errors" in p0, p0
    if one_line:
        assert "Traceback" not in p0, p0
    print(f"survivor stopped {stop_s:.1f} s after the kill ({'one line' if one_line else 'JAX abort'})")
    assert sorted(int(d.name) for d in (run / "checkpoints").iterdir() if d.name.isdigit()) == [2]
    killed = _losses(out1, 1)      # p1 printed step 3 before it was killed

    # 2. the same command resumes from step 2 on both processes and finishes (async saves)
    p = _launch(["-n", "2", "--", *sft])
    out2 = p.communicate(timeout=600)[0]
    assert p.returncode == 0, out2
    for r in (0, 1):
        assert any(re.match(r"resumed from .*checkpoints/2$", ln) for ln in _lines(out2, r)), out2
        assert "done: 4 steps" in "\n".join(_lines(out2, r)), out2
    resumed = _losses(out2)
    assert sorted(resumed) == [3, 4]
    assert resumed[3] == pytest.approx(killed[3], rel=1e-5)     # same next batch + state on both hosts
    assert _losses(out2, 1) == resumed                            # metrics are global
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (run / "final" / f).is_file()
    ck = run / "checkpoints" / "4"
    assert {f.name for f in (ck / "data").glob("process_*.json")} == {"process_0-of-2.json", "process_1-of-2.json"}
    steps = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]     # the killed run's line of step 3 was dropped on resume (step 3 re-ran)

    # 3. RL from the SFT model (rollouts per host, update on the global batch)
    rl_run = base / "rl"
    p = _launch(["-n", "2", "--", *_vital("train", "stage=rl", f"data.root={data}", f"out_dir={rl_run}",
                                          f"model.init_from={run / 'final'}", "rl.steps=2", "rl.prompts_per_step=2",
                                          "rl.group_size=2", "rl.rollout_batch=2", "rl.max_new_tokens=16",
                                          "model.freeze_vision=true", "checkpoint.every=0", *TRAIN)])
    out3 = p.communicate(timeout=600)[0]
    assert p.returncode == 0, out3
    assert "done: 2 steps" in "\n".join(_lines(out3, 1)), out3
    recs = [json.loads(ln) for ln in (rl_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2]
    for r in recs:
        for k in ("rl/loss", "rl/grad_norm", "rl/reward_mean"):
            assert math.isfinite(r[k]), (k, r)
        assert r["rl/skipped"] == 0.0
    assert (rl_run / "final" / "model.safetensors").is_file()


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        sys.exit(worker_main(sys.argv[2:]))
    sys.exit(f"usage: {sys.argv[0]} worker --init DIR --out FILE [--coordinator ...]")
