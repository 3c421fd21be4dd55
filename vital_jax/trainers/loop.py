"""The bookkeeping both trainers do around each optimizer step.

:class:`StepLoop` owns what happens *after* an update, identically for SFT and RL: counting
skipped (non-finite) updates and stopping past the limit, metrics to ``metrics.jsonl`` /
TensorBoard every ``log_every`` steps, the console (a ``tqdm`` bar on a terminal; one log line per
``log_every`` steps otherwise, e.g. in CI logs),
checkpoints every ``checkpoint.every`` steps and on SIGTERM/SIGINT, the last checkpoint and the
final export. The trainer keeps only its step function and curves.

Only process 0 writes metrics and draws the progress bar. Log lines go out on every process (each
host of a pod keeps its own log, and a line from the host that failed is the one you need);
every process takes part in checkpoints, the stop vote and the export (they are collective).

Resuming: metric lines of steps after the restored checkpoint (written by the interrupted run
after its last save) are dropped from ``metrics.jsonl``, so the file has one line per step.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any, Self

import jax

from vital_jax.trainers.common import Run, StopFlag, TrainingError
from vital_jax.config.run_config import RunConfig
from vital_jax.runs.metrics import progress_bar, show_progress

log = logging.getLogger(__name__)


class StepLoop:
    """Per-step tail of a training loop (see the module docstring).

    kind:     "sft" or "rl": the metric prefix and the word in messages.
    total:    the run's step count.
    keys:     metrics shown on the progress bar, ``{metric: label}``.
    line:     formats the log line of a step from its metrics (logged when there is no bar).

    Messages go to the ``vital_jax.trainers.loop`` logger; with stdout a terminal (process 0), a
    ``tqdm`` bar replaces the per-step lines.
    """

    def __init__(self, cfg: RunConfig, run: Run, ckpts, *, kind: str, total: int, keys: Mapping[str, str],
                 line: Callable[[int, dict], str]):
        self.cfg, self.run, self.ckpts = cfg, run, ckpts
        self.kind, self.total, self.line = kind, int(total), line
        use_bar = jax.process_index() == 0 and sys.stdout.isatty()
        self.keys = dict(keys)
        self.bar = progress_bar(self.total) if use_bar else None
        self.max_bad = (cfg.sft if kind == "sft" else cfg.rl).max_bad_steps
        self.bad = 0
        self.stopped: str | None = None
        self._flag = StopFlag()

    # ------------------------------------------------------------------ context
    def __enter__(self) -> Self:
        self._flag.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        if self.bar is not None:
            self.bar.close()
        return self._flag.__exit__(*exc)

    def resumed(self, step: int, host: dict) -> None:
        """After a restore (``host`` = the checkpoint's host state): carry the skipped-update count,
        drop metric lines past ``step``."""
        self.bad = int(host.get("bad_steps", 0))
        self.run.writer.drop_after(step)
        if self.bar is not None:       # count the rate from here, not from step 0
            self.bar.n = self.bar.last_print_n = step
        log.info("resumed from %s/%d", self.ckpts.directory, step)

    # ------------------------------------------------------------------ per step
    def after_step(self, step: int, state, metrics: dict[str, float], it, host: Callable[[], dict]) -> bool:
        """Bookkeeping for ``step`` (steps done so far); True when the loop must stop now.

        ``host()`` returns the trainer's host-side state to checkpoint (curves, buffers, ...); the
        loop adds its skipped-update count as ``bad_steps``.
        """
        if metrics.get("skipped"):
            self.bad += 1
            log.warning("%s step %d: non-finite loss/gradients (loss %s, grad norm %s): update skipped (%d so far)",
                        self.kind, step, metrics.get("loss"), metrics.get("grad_norm"), self.bad)
        last = step == self.total
        if step % self.cfg.log_every == 0 or last:
            self.run.writer.write(step, metrics, prefix=f"{self.kind}/")
        if self.bar is not None:
            show_progress(self.bar, step, metrics, self.keys)
        elif step % self.cfg.log_every == 0 or last:
            log.info(self.line(step, metrics))
        if self.bad > self.max_bad:
            self.ckpts.save(step, state, data_iterator=it, host=self._host(host), wait=True)
            raise TrainingError(f"{self.bad} {self.kind} steps with non-finite loss or gradients (limit "
                                f"{self.kind}.max_bad_steps = {self.max_bad}); checkpoint at step {step}")
        if self._flag.stop_requested():
            self.stopped = self._flag.reason or "signal"
            self.ckpts.save(step, state, data_iterator=it, host=self._host(host), wait=True)
            if self.bar is not None:
                self.bar.close()
            log.info("stopped by %s at step %d; checkpoint saved, resume with the same command", self.stopped, step)
            return True
        every = self.cfg.checkpoint.every
        if every and step % every == 0:
            self.ckpts.save(step, state, data_iterator=it, host=self._host(host))
        return False

    # ------------------------------------------------------------------ end
    def _host(self, host: Callable[[], dict]) -> dict:
        return {**host(), "bad_steps": self.bad}

    def finish(self, step: int, state, it, host: Callable[[], dict], curves: dict) -> dict[str, Any]:
        """Last checkpoint, close writers, export ``final/`` unless stopped; the trainer's result."""
        if self.stopped is None and step not in self.ckpts.steps():
            self.ckpts.save(step, state, data_iterator=it, host=self._host(host))
        self.ckpts.close()
        self.run.writer.close()
        final = self.run.export_final(state.params) if self.stopped is None else None
        return {"final": None if final is None else str(final), "steps": step, "curves": curves,
                "stopped": self.stopped, "out_dir": str(self.run.out)}
