"""Helpers shared by the tests and the benchmarks: fake devices, compile counting, the library's log lines.

Fake CPU devices must be requested before JAX's backend starts; ``tests/conftest.py`` does that
for the whole suite (8 devices), so any test can build a (2, 2, 2) mesh with
:func:`vital_jax.sharding.make_mesh`. Single-device code simply runs on device 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable

NUM_FAKE_DEVICES = 8


def request_fake_cpu_devices(n: int = NUM_FAKE_DEVICES) -> None:
    """Ask for ``n`` CPU devices. Call before any JAX computation (e.g. in conftest or main)."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    flag = f"--xla_force_host_platform_device_count={n}"
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " " + flag).strip()
    import jax

    jax.config.update("jax_num_cpu_devices", n)


class CompileCounter:
    """Counts the XLA programs built while active: backend compilations (and their seconds) and
    programs loaded from the persistent compilation cache (``hits``; the test suite runs with one),
    so a program rebuilt after warm-up counts even when the disk cache spares its compile.

    >>> with CompileCounter() as cc:
    ...     f(x)
    >>> cc.count, cc.seconds, cc.hits
    """

    _EVENT = "/jax/core/compile/backend_compile_duration"
    _HIT = "/jax/compilation_cache/cache_hits"
    _installed = False
    _active: list["CompileCounter"] = []

    def __init__(self):
        self.count, self.seconds, self.hits = 0, 0.0, 0

    @classmethod
    def _listener(cls, event, duration, **kwargs):
        if event == cls._EVENT:
            for c in cls._active:
                c.count += 1
                c.seconds += duration

    @classmethod
    def _hit_listener(cls, event, *args, **kwargs):
        if event == cls._HIT:
            for c in cls._active:
                c.count += 1
                c.hits += 1

    def __enter__(self):
        import jax

        if not CompileCounter._installed:
            jax.monitoring.register_event_duration_secs_listener(CompileCounter._listener)
            jax.monitoring.register_event_listener(CompileCounter._hit_listener)
            CompileCounter._installed = True
        CompileCounter._active.append(self)
        return self

    def __exit__(self, *exc):
        CompileCounter._active.remove(self)
        return False


@contextlib.contextmanager
def no_recompiles():
    """Fail if anything is traced inside (``jax.no_tracing``), for after-warm-up checks."""
    import jax

    with jax.no_tracing(True):
        yield


# Reading the library's log (tests, benchmarks): a handler on the ``vital_jax`` logger that keeps
# each message and can act on one (e.g. send SIGTERM when a step line appears, as a preemption would).
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
