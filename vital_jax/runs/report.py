"""Run report: ``report.json``, a Markdown summary and PNG plots of the training curves.

``write_report(out_dir, report, curves=...)`` writes

- ``report.json``: ``report`` as given (NumPy/JAX scalars made plain numbers) plus
  ``"curves": {name: [[step, value], ...]}``. Non-finite numbers are written as the strings
  ``"nan"``, ``"inf"``, ``"-inf"`` (the convention of ``metrics.jsonl``), so the file is strict JSON.
- ``<group>.png`` per curve group. A curve named ``"group/series"`` is drawn as the line
  ``series`` in ``group.png``; a name without ``/`` is its own group with one line. So
  ``{"reward/train": ..., "accuracy/train": ..., "loss/sft": ..., "loss/rl": ...}`` gives
  ``reward.png``, ``accuracy.png`` and ``loss.png`` (SFT and RL loss in one plot). x = step.
- ``report.md``: the evaluation table (metrics × ``stage · mode`` side by side, with intervals
  and ``n`` when given; RL − SFT and tools − no tools differences, paired with intervals when
  ``eval.paired`` holds them), the curves (summary table and the plots), timings, settings and
  any other top-level entries.

Recognised keys of ``report`` (all optional): ``title`` (str), ``notes`` (str or list of str),
``eval`` (``{stage: {mode: {metric: float}}}``, stages ``sft``/``rl``, modes
``tools``/``no_tools``; missing ones are left out. A cell may carry ``n`` (a row of the table)
and ``ci: {metric: [lo, hi]}`` (shown as ``value [lo, hi]``). Besides the stages: ``blind``, a
cell drawn as the last column ``rl · tools, blind``; ``paired: {name: {"mean", "ci", "n",
"accuracy": {"mean", "ci", "n"}, ...}}`` (top level = score; names in ``PAIRED_LABELS``), drawn
as a table of differences in place of the point differences; ``bootstrap`` (``confidence``,
``method``, ``resamples``, ``seed``), named above the table), ``timings`` (``{name: seconds}``, may nest),
``settings`` or ``config`` (nested mapping), ``curves`` (merged with the ``curves`` argument,
which wins on equal names). Missing or non-finite numbers are rendered ``n/a``.

Matplotlib is used through ``Figure`` + the Agg canvas (no pyplot), so the report neither needs a
display nor changes the backend of the program that calls it.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["group_curves", "to_json_compatible", "write_report"]

STAGE_ORDER = ("sft", "rl")
MODE_ORDER = ("tools", "no_tools")
METRIC_ORDER = ("accuracy", "miou", "score")
# entries of ``eval`` that are not a stage, and of a cell that are not a metric row
EVAL_EXTRAS = ("blind", "paired", "bootstrap")
_CELL_EXTRAS = ("n", "ci", "n_metric")
PAIRED_LABELS = {"rl_minus_sft_tools": "RL − SFT (tools)", "rl_minus_sft_no_tools": "RL − SFT (no tools)",
                 "tools_minus_no_tools_rl": "tools − no tools (RL)",
                 "tools_minus_no_tools_sft": "tools − no tools (SFT)",
                 "rl_tools_minus_blind": "RL tools − blind"}
_KNOWN = ("title", "notes", "eval", "timings", "settings", "config", "curves")
_NONFINITE_STR = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------


def _as_float(value: Any) -> float | None:
    """A float for numbers (incl. NumPy/JAX scalars and the "nan"/"inf" strings), else None."""
    if isinstance(value, str):
        return _NONFINITE_STR.get(value.strip().lower())
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if hasattr(value, "__array__"):
        arr = np.asarray(value)
        if arr.size == 1 and np.issubdtype(arr.dtype, np.number):
            return float(arr.reshape(()))
    return None


def to_json_compatible(value: Any) -> Any:
    """Plain JSON types: mappings → dicts with str keys, sequences/arrays → lists, NumPy/JAX
    scalars → numbers, non-finite floats → "nan"/"inf"/"-inf", anything else → ``str``."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isfinite(v):
            return v
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(value, Mapping):
        return {str(k): to_json_compatible(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_compatible(v) for v in value]
    if hasattr(value, "__array__"):
        arr = np.asarray(value)
        return to_json_compatible(arr.item() if arr.ndim == 0 else arr.tolist())
    return str(value)


def _fmt(value: Any, digits: int | None = None) -> str:
    """Table cell for a number: ``n/a`` when missing or non-finite."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return str(int(value))
    v = _as_float(value)
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:.{digits}f}" if digits is not None else f"{v:.4g}"


def _fmt_seconds(value: Any) -> str:
    v = _as_float(value)
    if v is None or not math.isfinite(v):
        return "n/a"
    if v < 60:
        return f"{v:.1f} s"
    m, s = divmod(round(v), 60)
    if m < 60:
        return f"{m}m {s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {s:02d}s"


def _cell(value: Any) -> str:
    """Table cell for any setting: numbers formatted, text with Markdown's `|` escaped."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, (bool, np.bool_)) or value is None:
        text = str(value)
    elif _as_float(value) is not None:
        text = _fmt(value)
    else:
        text = json.dumps(to_json_compatible(value))
    text = text.replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= 120 else text[:117] + "..."


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, Mapping):
        items = []
        for k, v in value.items():
            items += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return items
    return [(prefix, value)]


def _ordered(keys: Sequence[str], preferred: Sequence[str]) -> list[str]:
    return [k for k in preferred if k in keys] + [k for k in keys if k not in preferred]


# --------------------------------------------------------------------------------------------
# Curves and plots
# --------------------------------------------------------------------------------------------


def _clean_curve(points: Any) -> list[tuple[int, float]]:
    """``[(step, value)]`` sorted by step; unparsable values become NaN (drawn as a gap)."""
    out = []
    for point in points:
        step, value = point
        v = _as_float(value)
        out.append((int(step), math.nan if v is None else v))
    out.sort(key=lambda p: p[0])
    return out


def group_curves(
    curves: Mapping[str, Sequence[tuple[int, float]]],
) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{"loss/sft": pts, "loss/rl": pts, "reward": pts}`` → ``{"loss": {"sft": pts, "rl": pts},
    "reward": {"reward": pts}}`` (see the module docstring)."""
    groups: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for name, points in curves.items():
        group, _, series = str(name).partition("/")
        groups.setdefault(group, {})[series or group] = _clean_curve(points)
    return groups


def _safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "curve"


def _plot_group(
    path: str, group: str, series: Mapping[str, list[tuple[int, float]]]
) -> None:
    # Figure + Agg canvas directly: no pyplot global state, no display, the caller's matplotlib
    # backend left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    any_finite = False
    for label, points in series.items():
        if not points:
            continue
        steps = np.array([p[0] for p in points], dtype=np.float64)
        values = np.array([p[1] for p in points], dtype=np.float64)
        values[~np.isfinite(values)] = (
            np.nan
        )  # inf would wreck the axis limits; NaN is a gap
        any_finite |= bool(np.isfinite(values).any())
        ax.plot(
            steps, values, label=label, marker="o" if len(points) <= 30 else None, ms=3
        )
    if not any_finite:
        ax.text(
            0.5,
            0.5,
            "no finite values",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    ax.set_title(group)
    ax.set_xlabel("step")
    ax.set_ylabel(group)
    ax.grid(True, alpha=0.3)
    if len(series) > 1:
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, format="png")


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _eval_cells(ev: Mapping) -> list[tuple[str, str, Mapping]]:
    """``(stage, mode, cell)`` in table order; the blind control is a last column."""
    cols: list[tuple[str, str, Mapping]] = []
    for stage in _ordered([k for k in ev if k not in EVAL_EXTRAS], STAGE_ORDER):
        modes = ev[stage]
        if not isinstance(modes, Mapping):
            continue
        for mode in _ordered(list(modes), MODE_ORDER):
            if isinstance(modes[mode], Mapping):
                cols.append((str(stage), str(mode), modes[mode]))
    if isinstance(ev.get("blind"), Mapping):
        cols.append(("rl", "tools, blind", ev["blind"]))
    return cols


def _with_ci(value: Any, ci: Any) -> str:
    """``0.123 [0.100, 0.150]``: the value and its interval (the value alone without one)."""
    text = _fmt(value, 3)
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and text != "n/a":
        lo, hi = (_as_float(c) for c in ci)
        if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
            text += f" [{lo:.3f}, {hi:.3f}]"
    return text


def _paired_rows(paired: Mapping) -> list[list[str]]:
    rows = []
    for key in _ordered(list(paired), list(PAIRED_LABELS)):
        d = paired[key]
        if not isinstance(d, Mapping):
            continue
        cells = [PAIRED_LABELS.get(key, key), _fmt(d.get("n"))]
        for metric in ("score", "accuracy", "miou"):
            part = d if metric == "score" else d.get(metric)
            if not isinstance(part, Mapping):
                cells.append("n/a")
                continue
            mean, ci = _as_float(part.get("mean")), part.get("ci")
            text = _signed(mean) if mean is not None else "n/a"
            lo, hi = (_as_float(c) for c in ci) if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)
            if text != "n/a" and lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
                text += f" [{lo:+.3f}, {hi:+.3f}]"
                # the honest reading: an interval with 0 inside is no evidence of a difference
                text += " *" if (lo > 0 or hi < 0) else ""
            cells.append(text)
        rows.append(cells)
    return rows


def _eval_section(ev: Any) -> list[str]:
    lines = ["## Evaluation", ""]
    cols = _eval_cells(ev) if isinstance(ev, Mapping) else []
    if not cols:
        return lines + ["No evaluation results.", ""]
    metric_names: list[str] = []
    for *_, metrics in cols:
        metric_names += [str(m) for m in metrics if str(m) not in metric_names and str(m) not in _CELL_EXTRAS]
    metric_names = _ordered(metric_names, METRIC_ORDER)
    boot = ev.get("bootstrap") if isinstance(ev.get("bootstrap"), Mapping) else {}
    conf = f"{100 * (_as_float(boot.get('confidence')) or 0.95):.0f} %"
    if any(isinstance(c.get("ci"), Mapping) for *_, c in cols):
        how = f"{conf} {boot.get('method', 'bootstrap')} interval over samples" + (
            f" ({_fmt(boot['resamples'])} resamples, seed {_fmt(boot.get('seed'))})" if "resamples" in boot else "")
        lines += [f"Greedy decoding on held-out videos; value [{how}]; `n`: held-out samples.", ""]
    header = ["metric"] + [f"{stage} · {mode}" for stage, mode, _ in cols]
    rows = [[m] + [_with_ci(metrics.get(m), (metrics.get("ci") or {}).get(m)
                            if isinstance(metrics.get("ci"), Mapping) else None) for *_, metrics in cols]
            for m in metric_names]
    if any("n" in metrics for *_, metrics in cols):
        rows.append(["n"] + [_fmt(metrics.get("n")) for *_, metrics in cols])
    lines += _table(header, rows) + [""]
    if isinstance(ev.get("blind"), Mapping):
        lines += ["`rl · tools, blind`: the blind control, the RL model with tools but every frame it sees "
                  "(question video and tool clips) a constant grey: what it scores without reading the video.", ""]

    paired = ev.get("paired")
    if isinstance(paired, Mapping) and paired:
        lines += ["### Paired differences", "",
                  f"Same samples in both runs, resampled in pairs; Δ [{conf} interval]. `*`: the interval "
                  "excludes 0; without it the data show no difference at this n.", ""]
        lines += _table(["comparison", "n", "score Δ", "accuracy Δ", "miou Δ"], _paired_rows(paired)) + [""]
        return lines

    # No per-sample data: the paper's two claims as point differences only.
    key = "score" if "score" in metric_names else metric_names[0]
    value = {(s, m): _as_float(metrics.get(key)) for s, m, metrics in cols}
    diffs = []
    for mode in _ordered(sorted({m for _, m in value}), MODE_ORDER):
        a, b = value.get(("rl", mode)), value.get(("sft", mode))
        if a is not None and b is not None:
            diffs.append(f"- RL − SFT ({mode}), {key}: {_signed(a - b)}")
    for stage in _ordered(sorted({s for s, _ in value}), STAGE_ORDER):
        a, b = value.get((stage, "tools")), value.get((stage, "no_tools"))
        if a is not None and b is not None:
            diffs.append(f"- tools − no tools ({stage}), {key}: {_signed(a - b)}")
    if diffs:
        lines += diffs + [""]
    return lines


def _signed(v: float) -> str:
    return f"{v:+.3f}" if math.isfinite(v) else "n/a"


def _curves_section(groups, plots: Mapping[str, str]) -> list[str]:
    lines = ["## Training curves", ""]
    rows = []
    for group, series in groups.items():
        for label, points in series.items():
            name = group if label == group else f"{group}/{label}"
            finite = [v for _, v in points if math.isfinite(v)]
            rows.append(
                [
                    name,
                    str(len(points)),
                    f"{points[0][0]}–{points[-1][0]}" if points else "n/a",
                    _fmt(points[-1][1]) if points else "n/a",
                    _fmt(min(finite)) if finite else "n/a",
                    _fmt(max(finite)) if finite else "n/a",
                ]
            )
    lines += _table(["curve", "points", "steps", "last", "min", "max"], rows) + [""]
    for group, path in plots.items():
        lines += [f"![{group}]({os.path.basename(path)})", ""]
    return lines


def _render_markdown(
    report: Mapping[str, Any], groups, plots: Mapping[str, str]
) -> str:
    lines = [f"# {report.get('title') or 'Run report'}", ""]
    notes = report.get("notes")
    if isinstance(notes, str) and notes:
        lines += [notes, ""]
    elif isinstance(notes, (list, tuple)) and notes:
        lines += [f"- {n}" for n in notes] + [""]
    lines += _eval_section(report.get("eval"))
    if groups:
        lines += _curves_section(groups, plots)
    timings = report.get("timings")
    if isinstance(timings, Mapping) and timings:
        rows = [[name, _fmt_seconds(v)] for name, v in _flatten(timings)]
        lines += ["## Timings", ""] + _table(["phase", "time"], rows) + [""]
    for key in ("settings", "config"):
        settings = report.get(key)
        if isinstance(settings, Mapping) and settings:
            rows = [[f"`{k}`", _cell(v)] for k, v in _flatten(settings)]
            lines += (
                [f"## {key.capitalize()}", ""] + _table(["key", "value"], rows) + [""]
            )
    other = {k: v for k, v in report.items() if k not in _KNOWN}
    if other:
        rows = [[f"`{k}`", _cell(v)] for k, v in _flatten(other)]
        lines += ["## Other", ""] + _table(["key", "value"], rows) + [""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def _write_text(path: str, text: str) -> None:
    # Write-then-rename: a reader (or a crash) never sees half a report.
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_report(
    out_dir: str | os.PathLike,
    report: dict,
    *,
    curves: Mapping[str, Sequence[tuple[int, float]]] | None = None,
) -> dict[str, str]:
    """Write ``report.json``, ``report.md`` and one ``<group>.png`` per curve group to ``out_dir``.

    Returns the paths written: ``{"json": ..., "markdown": ..., "plot:<group>": ...}``.
    ``report`` is not modified.
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    merged = (
        dict(report.get("curves") or {})
        if isinstance(report.get("curves"), Mapping)
        else {}
    )
    merged.update(curves or {})
    groups = group_curves(merged)

    paths: dict[str, str] = {}
    plots: dict[str, str] = {}
    used: set[str] = set()
    for group, series in groups.items():
        name = _safe_filename(group)
        if (
            name in ("report",) or name in used
        ):  # never overwrite report.* or another plot
            name = f"{name}_{len(used)}"
        used.add(name)
        path = os.path.join(out_dir, f"{name}.png")
        _plot_group(path, group, series)
        plots[group] = path
        paths[f"plot:{group}"] = path

    data = dict(report)
    data["curves"] = {
        name: [[step, value] for step, value in _clean_curve(points)]
        for name, points in merged.items()
    }
    json_path = os.path.join(out_dir, "report.json")
    _write_text(
        json_path,
        json.dumps(to_json_compatible(data), indent=2, allow_nan=False) + "\n",
    )
    md_path = os.path.join(out_dir, "report.md")
    _write_text(md_path, _render_markdown(report, groups, plots))
    return {"json": json_path, "markdown": md_path, **paths}
