"""Training metrics: JSON lines, TensorBoard event files (no TensorFlow) and a console progress line.

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

:class:`ProgressBar` prints ``step 12/200 | loss 1.23 | reward 0.41 | acc 0.30 | 3.1 s/step |
eta 9m``: rewritten in place (``\\r``) on a terminal, one line per update at most every
``min_interval`` seconds otherwise (CI logs).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any, Self

import numpy as np

from vital_jax.jsonl import BadLine, cut_partial_line, parse_lines

__all__ = ["MetricsWriter", "ProgressBar", "read_jsonl"]

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
    ``console=False`` when a :class:`ProgressBar` shows the numbers instead.
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
# Console progress line
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


def _fmt_duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class ProgressBar:
    """One console line with the step, chosen metrics, seconds per step and the ETA.

    ``keys`` names the metrics to show, in order; a mapping ``{key: label}`` sets the labels (a
    plain key is shown by its last ``/`` component). Missing keys are left out of the line. The
    rate counts from the first update on, so a slow first step (compilation) does not skew it.
    Like :class:`MetricsWriter`, only process 0 (default ``jax.process_index()``) prints.
    """

    def __init__(
        self,
        total_steps: int,
        keys: Sequence[str] | Mapping[str, str] = ("loss", "reward", "accuracy"),
        *,
        stream: IO[str] | None = None,
        min_interval: float | None = None,
        process_index: int | None = None,
        clock=time.monotonic,
    ):
        self.total_steps = int(total_steps)
        if isinstance(keys, Mapping):
            self.labels = dict(keys)
        else:
            self.labels = {k: k.rsplit("/", 1)[-1] for k in keys}
        self.stream = stream if stream is not None else sys.stdout
        try:
            self.tty = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            self.tty = False
        # A terminal line is cheap to redraw; a CI log keeps every line, so print rarely there.
        self.min_interval = (
            (0.1 if self.tty else 30.0) if min_interval is None else min_interval
        )
        if process_index is None:
            import jax

            process_index = jax.process_index()
        self.active = int(process_index) == 0
        self._clock = clock
        self._first: tuple[int, float] | None = None
        self._last_print: float | None = None
        self._last_len = 0
        self._open_line = False

    def format_line(
        self, step: int, metrics: Mapping[str, Any], now: float | None = None
    ) -> str:
        now = self._clock() if now is None else now
        parts = [f"step {int(step)}/{self.total_steps}"]
        for key, label in self.labels.items():
            if key in metrics:
                parts.append(f"{label} {_fmt(metrics[key])}")
        if self._first is not None and step > self._first[0]:
            rate = (now - self._first[1]) / (step - self._first[0])
            parts.append(f"{rate:.2g} s/step" if rate < 10 else f"{rate:.0f} s/step")
            parts.append(f"eta {_fmt_duration(rate * max(self.total_steps - step, 0))}")
        return " | ".join(parts)

    def update(self, step: int, metrics: Mapping[str, Any] | None = None) -> bool:
        """Show ``step`` (the number of steps done); returns whether a line was written."""
        if not self.active:
            return False
        now = self._clock()
        step = int(step)
        if self._first is None:
            self._first = (step, now)
        last = step >= self.total_steps
        if (
            self._last_print is not None
            and not last
            and now - self._last_print < self.min_interval
        ):
            return False
        line = self.format_line(step, metrics or {}, now)
        if self.tty:
            pad = " " * max(
                self._last_len - len(line), 0
            )  # blank out a longer previous line
            self.stream.write("\r" + line + pad)
            self._open_line = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._last_len = len(line)
        self._last_print = now
        return True

    def close(self) -> None:
        """End the in-place line on a terminal, so later output starts on a fresh line."""
        if self.active and self.tty and self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
