"""Training metrics: JSON lines, TensorBoard event files (no TensorFlow) and the console progress bar.

:class:`MetricsWriter` writes each ``write(step, metrics)`` call to

- ``<log_dir>/metrics.jsonl``: one JSON object per call, ``{"step": int, "time": float (unix
  seconds), "<key>": value, ...}``. Integers stay integers, everything else is a float.
  **Non-finite floats are written as the strings** ``"nan"``, ``"inf"`` and ``"-inf"``: plain
  ``json`` would emit the bare tokens ``NaN``/``Infinity``, which are not JSON, and ``null`` would
  lose which one it was. :func:`read_jsonl` turns them back into floats.
- ``<log_dir>/events.out.tfevents.*``: TensorBoard scalars, one per key, written by
  ``tensorboardX`` (no TensorFlow). TensorBoard reads every event file in the directory, so each
  writer opens a file of its own and a resumed run simply adds one.

Only process 0 writes (``process_index`` defaults to ``jax.process_index()``, so create the
writer after ``jax.distributed.initialize``); on other processes every method is a no-op and
the metric values are not even converted (no device transfer). A writer on a directory that
already has a ``metrics.jsonl`` appends to it.

:func:`progress_bar` is a ``tqdm`` bar for a terminal (steps, rate, ETA, the chosen metrics as its
postfix); off a terminal the trainers print one log line per ``log_every`` steps instead (CI logs
keep every line, and a ``\\r``-rewritten bar is unreadable there).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from typing import IO, Any, Self

import numpy as np

from vital_jax.jsonl import BadLine, cut_partial_line, parse_lines

__all__ = ["MetricsWriter", "progress_bar", "read_jsonl", "show_progress"]

JSONL_NAME = "metrics.jsonl"
_RESERVED = ("step", "time")
_NONFINITE_STR = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _to_number(key: str, value: Any) -> int | float:
    """Python int (ints and bools) or float from a Python/NumPy/JAX scalar."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if hasattr(value, "__array__"):  # np.ndarray, jax.Array (device → host here)
        arr = np.asarray(value)
        if arr.size != 1:
            raise ValueError(
                f"metric {key!r}: expected a scalar, got shape {arr.shape}"
            )
        return _to_number(key, arr.reshape(()).item())
    raise TypeError(f"metric {key!r}: expected a number, got {type(value).__name__}")


def _json_number(value: float) -> int | float | str:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a ``metrics.jsonl`` (the file or its directory) back, ``"nan"``/``"inf"``/``"-inf"``
    strings as floats. Lines that are not JSON (a line cut short by a crash) are skipped."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, JSONL_NAME)
    with open(path, encoding="utf-8") as f:
        parsed = parse_lines(f.read())
    rows = []
    for _, row in parsed:
        if isinstance(row, BadLine):
            continue
        rows.append({k: _NONFINITE_STR.get(v, v) if isinstance(v, str) else v for k, v in row.items()})
    return rows


def _join(prefix: str, key: str) -> str:
    if not prefix:
        return key
    return prefix + key if prefix.endswith("/") else f"{prefix}/{key}"


class MetricsWriter:
    """Scalar metrics to JSON lines, TensorBoard and (optionally) stdout; process 0 only.

    ``write(step, metrics, prefix="train")`` logs ``train/<key>`` for each key (a prefix ending in
    ``/`` is used as is). ``"step"`` and ``"time"`` are reserved keys. Files are flushed on
    ``flush()``, ``close()`` and at most ``flush_secs`` after a write. ``console=True`` also
    prints ``step N | key value | ...`` per write (to ``stream``, default stdout); pass
    ``console=False`` when a :func:`progress_bar` shows the numbers instead.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike,
        *,
        jsonl: bool = True,
        tensorboard: bool = True,
        console: bool = True,
        process_index: int | None = None,
        flush_secs: float = 5.0,
        stream: IO[str] | None = None,
    ):
        if process_index is None:
            import jax

            process_index = jax.process_index()
        self.log_dir = os.fspath(log_dir)
        self.process_index = int(process_index)
        self.active = self.process_index == 0
        self.flush_secs = float(flush_secs)
        self.console = console
        self._stream = stream
        self._jsonl: IO[str] | None = None
        self._events = None
        self.jsonl_path: str | None = None
        self._last_flush = time.monotonic()
        self._closed = False
        if not self.active:
            return
        os.makedirs(self.log_dir, exist_ok=True)
        if jsonl:
            self.jsonl_path = os.path.join(self.log_dir, JSONL_NAME)
            if os.path.exists(self.jsonl_path):
                cut_partial_line(self.jsonl_path)
            self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")  # noqa: SIM115
        if tensorboard:
            from tensorboardX import SummaryWriter

            # flushing is ours (flush_secs below); tensorboardX's own thread would flush too
            # a unique suffix: two writers in the same second (a quick restart) get two files
            self._events = SummaryWriter(self.log_dir, flush_secs=max(1, int(self.flush_secs)),
                                         filename_suffix=f".{os.getpid()}.{time.time_ns()}")

    def write(self, step: int, metrics: Mapping[str, Any], *, prefix: str = "") -> None:
        if not self.active:
            return
        if self._closed:
            raise RuntimeError("MetricsWriter.write after close()")
        step = int(step)
        values: dict[str, int | float] = {}
        for key, value in metrics.items():
            name = _join(prefix, str(key))
            if name in _RESERVED:
                raise ValueError(f"metric name {name!r} is reserved in metrics.jsonl")
            values[name] = _to_number(name, value)
        now = time.time()
        if self._jsonl is not None:
            row = {"step": step, "time": round(now, 3)}
            row.update((k, _json_number(v)) for k, v in values.items())
            # allow_nan=False: a non-finite number that slipped through must fail, not write
            # invalid JSON.
            self._jsonl.write(json.dumps(row, allow_nan=False) + "\n")
        if self._events is not None:
            for k, v in values.items():
                self._events.add_scalar(k, float(v), global_step=step, walltime=now)
        if self.console:
            stream = self._stream or sys.stdout
            body = " | ".join(f"{k} {_fmt(v)}" for k, v in values.items())
            print(
                f"step {step} | {body}" if body else f"step {step}",
                file=stream,
                flush=True,
            )
        if time.monotonic() - self._last_flush >= self.flush_secs:
            self.flush()

    def drop_after(self, step: int) -> None:
        """Remove ``metrics.jsonl`` lines of steps after ``step`` (a resumed run re-runs them).

        The file is rewritten through a temporary file and an atomic rename; TensorBoard event
        files cannot be edited, and TensorBoard shows the re-run steps' newer values anyway.
        """
        if not self.active or self._jsonl is None:
            return
        self._jsonl.flush()
        with open(self.jsonl_path, encoding="utf-8") as f:
            lines = f.readlines()

        def kept(line: str) -> bool:
            try:
                return int(json.loads(line).get("step", 0)) <= step
            except (ValueError, AttributeError):
                return True   # not a metrics record: not ours to drop

        keep = [ln for ln in lines if not ln.strip() or kept(ln)]
        if len(keep) == len(lines):
            return
        self._jsonl.close()
        tmp = self.jsonl_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(keep)
        os.replace(tmp, self.jsonl_path)
        self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")  # noqa: SIM115

    def flush(self) -> None:
        if self._jsonl is not None and not self._jsonl.closed:
            self._jsonl.flush()
        if self._events is not None and not self._closed:
            self._events.flush()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        if self._jsonl is not None:
            self._jsonl.close()
        if self._events is not None:
            self._events.close()
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# Console progress bar
# --------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-2):
        return f"{v:.3g}"
    return f"{v:.2f}"


def progress_bar(total_steps: int, *, stream: IO[str] | None = None):
    """A ``tqdm`` bar over the run's steps (drawn on ``stream``, default stdout)."""
    from tqdm import tqdm

    return tqdm(total=int(total_steps), file=stream if stream is not None else sys.stdout, unit="step",
                dynamic_ncols=True, mininterval=0.1, smoothing=0.1)


def show_progress(bar, step: int, metrics: Mapping[str, Any], labels: Mapping[str, str]) -> None:
    """Move ``bar`` to ``step`` steps done, with ``{label: value}`` of the metrics in ``labels``
    (keys missing from ``metrics`` are left out)."""
    bar.set_postfix({label: _fmt(metrics[k]) for k, label in labels.items() if k in metrics}, refresh=False)
    bar.update(int(step) - bar.n)

