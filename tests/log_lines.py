"""Reading the library's log in tests: a handler on the ``vital_jax`` logger that keeps each
message and can act on one (e.g. send SIGTERM when a step line appears, as a preemption would)."""

from __future__ import annotations

import logging
from collections.abc import Callable


class LogLines(logging.Handler):
    """``with LogLines(on_line=f) as log: ...``: ``log.lines`` holds every ``vital_jax`` message
    (INFO and up) logged inside the block; ``on_line(message)`` is called on each."""

    def __init__(self, on_line: Callable[[str], None] | None = None):
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.on_line = on_line
        self._logger = logging.getLogger("vital_jax")
        self._level = None

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        self.lines.append(msg)
        if self.on_line is not None:
            self.on_line(msg)

    def __enter__(self) -> "LogLines":
        self._level = self._logger.level
        self._logger.setLevel(logging.INFO)
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)
