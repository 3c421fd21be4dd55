"""Run the benchmark scripts (``scripts/bench_<suite>.py``) and collect their JSON lines.

Contract with a script: it accepts ``--quick``; it prints on stdout one JSON object per line
(``name``, ``value``, ``unit``, optionally ``baseline``, ``raw`` and context keys); anything else
goes to stderr. The runner does not rely on any other flag: every stdout line that parses as a
JSON object with a ``name`` is a result (other stdout text is kept with the stderr tail). Each
result gets ``"suite": <suite>``. A script that exits non-zero (or cannot start, or times out)
yields a :func:`failure_line` and the next script still runs.

Scripts run with the same interpreter (``sys.executable``) from the checkout's root, with the
checkout on ``PYTHONPATH``.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vital_jax.errors import VitalError

DEFAULT_SUITES = ("model", "sampler", "train", "data")
STDERR_TAIL_LINES = 40


class BenchError(VitalError):
    """The suite cannot run as asked (not a source checkout, unknown suite name)."""


@dataclasses.dataclass
class SuiteResult:
    suite: str
    script: Path
    returncode: int | None           # None: the script could not start or was killed on timeout
    lines: list[dict[str, Any]]
    stderr_tail: str
    seconds: float
    error: str | None = None         # why it failed, when not just a non-zero exit

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.error is None


def find_scripts_dir() -> Path:
    """``scripts/`` of the source checkout this package was imported from."""
    import vital_jax

    root = Path(vital_jax.__file__).resolve().parents[1]
    scripts = root / "scripts"
    if not any(scripts.glob("bench_*.py")):
        raise BenchError(f"vital bench runs the benchmark scripts of a source checkout, but {scripts} has no "
                         "bench_*.py (vital_jax is installed from a wheel?). Run it from a git clone installed "
                         "with `pip install -e .`, or pass --scripts-dir.")
    return scripts


def available_suites(scripts_dir: Path) -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in Path(scripts_dir).glob("bench_*.py"))


def resolve_suites(only: str | Sequence[str] | None, scripts_dir: Path) -> list[str]:
    """The suites to run, in the order given: ``only`` is a comma-separated string or a list;
    ``None`` means the default suites."""
    if only is None:
        return list(DEFAULT_SUITES)
    names = [s.strip() for s in (only.split(",") if isinstance(only, str) else only) if s.strip()]
    if not names:
        raise BenchError("--only: no suite named")
    known = available_suites(scripts_dir)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BenchError(f"--only: unknown suite(s) {unknown}; {scripts_dir} has {known}")
    return list(dict.fromkeys(names))


def parse_line(text: str) -> dict[str, Any] | None:
    """A result object from one stdout line, or None for other text."""
    text = text.strip()
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and "name" in obj else None


def failure_line(result: SuiteResult) -> dict[str, Any]:
    """The JSON line that records a failed script (kept in ``--out`` files and the README)."""
    why = result.error or f"exit status {result.returncode}"
    return {"name": "bench_suite_failed", "value": result.returncode, "unit": "exit code", "suite": result.suite,
            "script": str(result.script), "error": why, "stderr_tail": result.stderr_tail,
            "seconds": round(result.seconds, 2)}


def run_suite(suite: str, scripts_dir: Path, *, quick: bool = False, python: str | None = None,
              extra_args: Sequence[str] = (), timeout: float | None = None,
              on_line: Callable[[dict], None] | None = None,
              on_stderr: Callable[[str], None] | None = None) -> SuiteResult:
    """Run ``scripts_dir/bench_<suite>.py`` to the end; ``on_line`` sees each result as it comes
    (streaming), ``on_stderr`` each line of its stderr."""
    scripts_dir = Path(scripts_dir).resolve()
    script = scripts_dir / f"bench_{suite}.py"
    t0 = time.perf_counter()
    if not script.is_file():
        return SuiteResult(suite, script, None, [], "", 0.0, error=f"no script {script}")
    cmd = [python or sys.executable, str(script), *(["--quick"] if quick else []), *extra_args]
    root = scripts_dir.parent
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
    lock = threading.Lock()
    try:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True, bufsize=1)
    except OSError as e:
        return SuiteResult(suite, script, None, [], "", time.perf_counter() - t0, error=f"cannot start: {e}")

    def read_stderr():
        for raw in proc.stderr:
            line = raw.rstrip("\n")
            with lock:
                tail.append(line)
            if on_stderr is not None:
                on_stderr(line)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    timed_out = threading.Event()

    def kill():
        timed_out.set()
        proc.kill()

    timer = threading.Timer(timeout, kill) if timeout else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    lines: list[dict[str, Any]] = []
    try:
        for raw in proc.stdout:
            obj = parse_line(raw)
            if obj is None:
                if raw.strip():
                    with lock:
                        tail.append(raw.rstrip("\n"))
                continue
            # every line has the full schema: no baseline -> null, no raw timings -> {}
            obj = {"baseline": None, "raw": {}, **obj, "suite": suite}
            lines.append(obj)
            if on_line is not None:
                on_line(obj)
        rc = proc.wait()
    finally:
        if timer is not None:
            timer.cancel()
        if proc.poll() is None:   # interrupted while reading (KeyboardInterrupt): do not leave it running
            proc.kill()
            proc.wait()
    reader.join(timeout=5)
    error = f"timed out after {timeout:g} s" if timed_out.is_set() else None
    return SuiteResult(suite, script, None if timed_out.is_set() else rc, lines, "\n".join(tail),
                       time.perf_counter() - t0, error=error)


def run_all(suites: Sequence[str], scripts_dir: Path, *, quick: bool = False, python: str | None = None,
            timeout: float | None = None, on_line: Callable[[dict], None] | None = None,
            on_stderr: Callable[[str, str], None] | None = None,
            on_start: Callable[[str, Path], None] | None = None,
            on_done: Callable[[SuiteResult], None] | None = None) -> list[SuiteResult]:
    """Each suite in turn (a failure does not stop the others). A failed suite's
    :func:`failure_line` goes through ``on_line`` too and is appended to its ``lines``."""
    results = []
    for suite in suites:
        if on_start is not None:
            on_start(suite, Path(scripts_dir) / f"bench_{suite}.py")
        res = run_suite(suite, scripts_dir, quick=quick, python=python, timeout=timeout, on_line=on_line,
                        on_stderr=None if on_stderr is None else (lambda s, n=suite: on_stderr(n, s)))
        if not res.ok:
            fail = failure_line(res)
            res.lines.append(fail)
            if on_line is not None:
                on_line(fail)
        results.append(res)
        if on_done is not None:
            on_done(res)
    return results
