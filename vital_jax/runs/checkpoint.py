"""Train checkpoints with Orbax: train state + data iterator + host state, atomically.

One step directory holds three items:

- ``state``: the :class:`~vital_jax.trainers.step.TrainState` (params, optimizer state, step),
  sharded; restored onto whatever mesh the target shardings describe (another mesh works);
- ``data``: the grain iterator's state, one file per process (grain's own handler);
- ``host``: JSON of the trainer's host-side state (RL difficulty buffer and table, curves for
  the report, counters). Random streams are derived from ``(seed, step)``, so the step restores
  them.

Orbax writes a step into a temporary directory and renames it when every item is complete, so a
run killed mid-save leaves no step that :meth:`TrainCheckpoints.restore` would pick up. If the
latest step exists but cannot be read (a disk error, a truncated file), restore warns, falls
back to the one before it and moves the unreadable step aside (``<step>.unreadable``), so the
resumed run can save that step number again.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from vital_jax.errors import VitalError

log = logging.getLogger(__name__)


class TrainCheckpointError(VitalError, RuntimeError):
    pass


class TrainCheckpoints:
    def __init__(self, directory: str | Path, *, keep: int = 3, async_save: bool = True):
        import orbax.checkpoint as ocp

        self.directory = Path(directory).absolute()
        opts = ocp.CheckpointManagerOptions(max_to_keep=max(1, keep), create=True,
                                            enable_async_checkpointing=async_save)
        self._ocp = ocp
        self.manager = ocp.CheckpointManager(self.directory, options=opts)

    # ------------------------------------------------------------------ save
    def save(self, step: int, state, *, data_iterator=None, host: dict | None = None, wait: bool = False) -> bool:
        import grain

        ocp = self._ocp
        items: dict[str, Any] = {"state": ocp.args.StandardSave(state), "host": ocp.args.JsonSave(host or {})}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        saved = self.manager.save(int(step), args=ocp.args.Composite(**items), force=True)
        if wait:
            self.manager.wait_until_finished()
        return saved

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    # ------------------------------------------------------------------ restore
    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore(self, target_state, *, data_iterator=None, step: int | None = None):
        """``(step, state, host)`` from ``step`` (default: the latest readable one), or None when
        the directory holds no checkpoint. ``data_iterator`` is restored in place."""
        import grain

        ocp = self._ocp
        steps = self.steps() if step is None else [int(step)]
        unreadable: list[int] = []
        for s in reversed(steps):
            items: dict[str, Any] = {"state": ocp.args.StandardRestore(target_state), "host": ocp.args.JsonRestore()}
            if data_iterator is not None:
                items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
            try:
                out = self.manager.restore(s, args=ocp.args.Composite(**items))
            except Exception as e:  # noqa: BLE001 - any unreadable step: try the previous one
                if step is not None:
                    raise TrainCheckpointError(f"{self.directory}: step {s} cannot be restored: {e}") from e
                msg = f"{self.directory}: checkpoint step {s} is unreadable ({type(e).__name__}: {e}); trying an older one"
                warnings.warn(msg, stacklevel=2)
                log.warning(msg)
                unreadable.append(s)
                continue
            self._set_aside(unreadable)
            return s, out["state"], dict(out["host"] or {})
        if steps:
            raise TrainCheckpointError(f"{self.directory}: no readable checkpoint among steps {steps}")
        return None

    def _set_aside(self, steps: list[int]) -> None:
        """Move unreadable steps newer than the restored one to ``<step>.unreadable`` (kept for
        inspection, ignored by Orbax): the resumed run saves those step numbers again, and Orbax
        refuses to overwrite an existing step."""
        if not steps:
            return
        import jax

        if jax.process_index() == 0:
            for s in steps:
                src = self.directory / str(s)
                dst = self.directory / f"{s}.unreadable"
                n = 1
                while dst.exists():
                    dst, n = self.directory / f"{s}.unreadable.{n}", n + 1
                src.rename(dst)
                log.warning("%s: moved unreadable step %d to %s", self.directory, s, dst.name)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("vital_jax.runs.checkpoint:set_aside")
        self.manager.reload()
