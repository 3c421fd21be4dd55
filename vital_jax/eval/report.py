"""A Markdown table comparing runs side by side (tools vs no tools, SFT vs RL, …).

``compare(runs) -> str`` where ``runs`` maps a column name to a metrics dict (``vital score``'s
JSON, or any nested dict of numbers such as the trainer's ``report.json``). Rows are the flattened
metric names (``metrics.miou``, ``per_task.grounding.miou``, …) present in at least one run;
values are shown in % (fractions × 100), counts (``n``, ``samples``…) as integers; a run without a
metric shows ``–``. With two or more runs a last column gives the change of the last run over the
first. Command line: ``python -m vital_jax.eval.report NAME=metrics.json NAME=metrics.json``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from vital_jax.eval.metrics import flatten

_COUNTS = {"n", "samples", "predicted", "missing", "unknown_ids", "duplicates"}
_SKIP_PREFIXES = ("status.", "settings.", "timing.n")
DEFAULT_SECTIONS = ("metrics", "per_task", "per_category", "groups", "tools")


def _is_count(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in _COUNTS


def _fmt(key: str, v: float | None) -> str:
    if v is None:
        return "–"
    if _is_count(key):
        return str(int(v))
    if key.startswith(("tools.mean", "timing.")):
        return f"{v:.2f}"
    return f"{100 * v:.1f}"


def compare(runs: Mapping[str, Mapping], *, sections: Sequence[str] | None = DEFAULT_SECTIONS,
            keys: Sequence[str] | None = None, title: str | None = None) -> str:
    """The Markdown table (see the module docstring). ``sections`` keeps only top-level keys with
    these names (``None``: all); ``keys`` picks exact rows in order."""
    if not runs:
        raise ValueError("compare: no runs")
    flat = {}
    for name, m in runs.items():
        part = m if sections is None else {k: v for k, v in m.items() if k in sections}
        flat[name] = {k: v for k, v in flatten(part).items() if not k.startswith(_SKIP_PREFIXES)}
    if keys is None:
        keys = list(dict.fromkeys(k for f in flat.values() for k in f))
    names = list(runs)
    header = ["metric", *names] + (["Δ (last − first)"] if len(names) > 1 else [])
    lines = ([f"### {title}", ""] if title else []) + [
        "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for k in keys:
        vals = [flat[n].get(k) for n in names]
        cells = [k, *(_fmt(k, v) for v in vals)]
        if len(names) > 1:
            a, b = vals[0], vals[-1]
            if a is None or b is None or _is_count(k):
                cells.append("")
            else:
                scale = 1.0 if k.startswith(("tools.mean", "timing.")) else 100.0
                cells.append(f"{scale * (b - a):+.{2 if scale == 1.0 else 1}f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compare_files(paths: Mapping[str, str | Path], **kw) -> str:
    return compare({n: json.loads(Path(p).read_text()) for n, p in paths.items()}, **kw)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("usage: python -m vital_jax.eval.report NAME=metrics.json [NAME=metrics.json ...]", file=sys.stderr)
        return 2
    paths = {}
    for a in argv:
        name, _, path = a.partition("=") if "=" in a else (Path(a).stem, "", a)
        paths[name] = path
    print(compare_files(paths), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
