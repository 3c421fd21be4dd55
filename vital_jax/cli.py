"""The ``vital`` command.

Each subcommand lives in the package of its stage, in a module exposing
``add_arguments(parser)`` and ``run(args) -> int``; this file only lists them, so importing the
CLI stays cheap (a subcommand's module, and JAX, load only when that subcommand runs).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from vital_jax.errors import VitalError

# name -> (module, one-line help). Keep sorted by pipeline stage.
# Add one line per new subcommand.
COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("vital_jax.models.commands_convert", "HF Qwen2.5-VL or Qwen3-VL directory -> vital_jax checkpoint (Orbax)"),
    "export": ("vital_jax.models.commands_export", "vital_jax checkpoint -> HF directory (config.json + safetensors)"),
    "synth": ("vital_jax.data.commands_synth", "write the synthetic long-video task suite"),
    "data": ("vital_jax.data.commands_check", "check annotation files: schema, videos, times"),
    "infer": ("vital_jax.rollout.commands_infer", "answer a question about a video with the clip tool; print the transcript"),
    "eval": ("vital_jax.eval.commands_eval", "run a checkpoint over a benchmark (tool loop); predictions + metrics, resumable"),
    "demo": ("vital_jax.apps.demo", "the whole method end to end on synthetic videos (SFT -> RL -> eval -> report)"),
    "train": ("vital_jax.trainers.commands_train", "train SFT or RL from a config (YAML + dotted overrides); resumes"),
    "plan": ("vital_jax.apps.commands_plan", "per-device memory of a config on a mesh (no weights allocated); fits or not"),
    "score": ("vital_jax.eval.commands_score", "benchmark metrics from a predictions JSONL (no model needed)"),
    "bench": ("vital_jax.bench.commands_bench", "performance suite (scripts/bench_*.py): JSON lines, README table"),
}


class CommandError(VitalError):
    """A command's own user-facing failure: printed as one line, exit status 2, no traceback
    (so is every other :class:`~vital_jax.errors.VitalError` that reaches ``main``)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vital", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


class _Stdout(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is when a record is emitted (not when the handler was
    made), so redirected or captured stdout gets the lines."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value):
        pass


def setup_logging(level: int = logging.INFO) -> None:
    """The commands' console: ``vital_jax`` log records as plain lines on stdout (idempotent).
    Library code only logs (``logging.getLogger(__name__)``); an application chooses where."""
    pkg = logging.getLogger("vital_jax")
    pkg.setLevel(level)
    pkg.propagate = False    # a library's root handler (absl installs one) would print each line twice
    if not any(isinstance(h, _Stdout) for h in pkg.handlers):
        handler = _Stdout()
        handler.setFormatter(logging.Formatter("%(message)s"))
        pkg.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    from vital_jax.host_alloc import keep_freed_memory

    keep_freed_memory()   # before any JAX buffer exists; see host_alloc.py
    setup_logging()
    args = build_parser().parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except VitalError as e:     # CommandError, and any user-facing error a command did not wrap
        print(f"vital {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
