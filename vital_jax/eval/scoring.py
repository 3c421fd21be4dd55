"""Score predictions against benchmark samples: per-sample values, then the benchmark's metrics.

``score(benchmark, samples, predictions) -> dict`` is what ``vital score`` prints and saves and
what ``vital eval`` will call on its own predictions. The result::

    {"benchmark", "metric_set", "samples", "predicted", "missing", "unknown_ids",
     "status": {"ok": …, "missing": …, "no_answer": …, "unparseable": …, "hedged": …,
                "reversed": …, "clipped": …, "outside": …, "empty": …},
     "metrics": {…},                      # by metric set, below
     "per_category": {category: {"n", <metric>: …}},
     "groups": {group key: {value: {"n", <metric>: …}}},   # e.g. Video-MME's duration
     "per_task": {task: {…}},              # synthetic and mixed files
     "tools": {"mean_calls", "mean_ok_calls", "with_calls"}, "timing": {"mean_s"},
     "settings": {"lenient", "reversed_policy"}}

Metric sets: ``grounding`` → ``miou, r@0.3, r@0.5, r@0.7`` (+ ``accuracy`` when the file has QA,
e.g. ReXTime's options); ``grounded_qa`` → NExT-GQA's set (see :mod:`.metrics`); ``mcqa`` →
``accuracy`` (mean per-sample score: 0/1, or MRA for VSI-Bench numbers) and ``category_mean``;
``synthetic`` → ``accuracy`` (over samples with an answer), ``miou`` (over samples with an
interval) and ``score`` = the mean over the tasks present of each task's metric (grounding:
mIoU; multiple choice and counting: accuracy; grounded QA: the mean of accuracy and mIoU) —
the ``eval.*.{accuracy,miou,score}`` entries of the trainer's report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vital_jax.eval import metrics as M
from vital_jax.eval.benchmarks import BENCHMARKS, Benchmark, Sample
from vital_jax.eval.predictions import answer_text, num_tool_calls, seconds

_STATUS_ORDER = ("missing", "no_answer", "empty_answer", "hedged", "unparseable", "outside", "empty", "reversed", "clipped", "ok")


def _worst(*statuses: str) -> str:
    return min(statuses, key=lambda s: _STATUS_ORDER.index(s) if s in _STATUS_ORDER else len(_STATUS_ORDER))


def score_sample(
    sample: Sample,
    row: Mapping[str, Any] | None,
    *,
    multi_gt: str = "max",
    numeric: str = "exact",
    lenient: bool = False,
    reversed_policy: str = "swap",
) -> dict[str, Any]:
    """One sample's values: ``correct`` (QA tasks, in [0, 1]), ``iou``/``iop`` (grounding
    tasks), the parsed ``pred`` and a ``status``."""
    text, status = answer_text(row, lenient=lenient)
    out: dict[str, Any] = {"id": sample.id, "task": sample.task}
    statuses = [status]
    if sample.task in ("multiple_choice", "grounded_qa"):
        letter, st = M.read_choice(text, sample.options)
        statuses.append(st if text is not None else status)
        out["pred"] = letter
        out["correct"] = float(letter is not None and letter == sample.answer)
    elif sample.task == "numeric":
        value, st = M.read_number(text)
        statuses.append(st if text is not None else status)
        out["pred"] = value
        gold = float(sample.answer.replace(",", ""))
        p = np.array([np.nan if value is None else value])
        g = np.array([gold])
        out["correct"] = float((M.mean_relative_accuracy(p, g) if numeric == "mra" else M.numeric_correct(p, g))[0])
    elif sample.task == "open":
        out["pred"] = text
        out["correct"] = M.text_match(text, sample.answer)
    if sample.task in ("grounding", "grounded_qa"):
        raw, st = M.read_interval(text)
        norm, st2 = M.normalize_interval(raw, sample.duration, reversed_policy=reversed_policy) if raw is not None else (None, st)
        statuses.append(st2 if text is not None else status)
        out["interval"] = list(norm) if norm is not None else None
        out["iou"], out["iop"] = M.multi_iou(norm, sample.intervals, multi_gt=multi_gt)
    out["status"] = _worst(*statuses)
    out["tool_calls"], out["tool_calls_ok"] = num_tool_calls(row)
    out["seconds"] = seconds(row)
    return out


def _metrics_for(rows: Sequence[Mapping[str, Any]], metric_set: str) -> dict[str, float]:
    """Aggregate a set of per-sample rows by metric set (every row counts; missing = 0)."""
    correct = np.array([r["correct"] for r in rows if "correct" in r], dtype=np.float64)
    ious = np.array([r["iou"] for r in rows if "iou" in r], dtype=np.float64)
    if metric_set == "grounded_qa":
        both = [r for r in rows if "correct" in r and "iou" in r]
        return M.grounded_qa_metrics([r["correct"] for r in both], [r["iou"] for r in both], [r["iop"] for r in both])
    out: dict[str, float] = {}
    if metric_set == "grounding" or (metric_set != "mcqa" and ious.size):
        out.update(M.grounding_metrics(ious))
    if correct.size:
        out["accuracy"] = M.mean(correct)
    return out


def _task_score(m: Mapping[str, float]) -> float:
    parts = [m[k] for k in ("accuracy", "miou") if k in m]
    return float(np.mean(parts)) if parts else 0.0


def score(
    benchmark: str | Benchmark,
    samples: Sequence[Sample],
    predictions: Mapping[str, Mapping[str, Any]],
    *,
    lenient: bool = False,
    reversed_policy: str = "swap",
    return_rows: bool = False,
) -> dict[str, Any]:
    """Metrics of ``predictions`` (``{id: row}``, see :mod:`.predictions`) on ``samples``."""
    bench = BENCHMARKS[benchmark] if isinstance(benchmark, str) else benchmark
    rows = [score_sample(s, predictions.get(s.id), multi_gt=bench.multi_gt, numeric=bench.numeric,
                         lenient=lenient, reversed_policy=reversed_policy) for s in samples]
    ids = {s.id for s in samples}
    result: dict[str, Any] = {
        "benchmark": bench.name,
        "metric_set": bench.metric_set,
        "samples": len(samples),
        "predicted": sum(1 for s in samples if s.id in predictions),
        "missing": sum(1 for s in samples if s.id not in predictions),
        "unknown_ids": sum(1 for k in predictions if k not in ids),
        "status": M.summarize_status([r["status"] for r in rows]),
    }
    ms = bench.metric_set
    if ms == "synthetic":
        tasks = sorted({s.category or s.task for s in samples})
        per_task = {t: _metrics_for([r for r, s in zip(rows, samples) if (s.category or s.task) == t], "synthetic")
                    for t in tasks}
        for t, m in per_task.items():
            m["n"] = sum(1 for s in samples if (s.category or s.task) == t)
            m["score"] = _task_score(m)
        correct = [r["correct"] for r in rows if "correct" in r]
        ious = [r["iou"] for r in rows if "iou" in r]
        result["metrics"] = {"accuracy": M.mean(correct), "miou": M.mean(ious),
                             "score": M.mean([per_task[t]["score"] for t in tasks])}
        result["per_task"] = per_task
    else:
        result["metrics"] = _metrics_for(rows, ms)
        if ms == "mcqa":
            tasks = {s.task for s in samples}
            if len(tasks) > 1:
                result["per_task"] = {t: {"n": sum(s.task == t for s in samples),
                                          **_metrics_for([r for r, s in zip(rows, samples) if s.task == t], ms)}
                                      for t in sorted(tasks)}
    result["per_category"] = _breakdown(rows, [s.category for s in samples], ms)
    if ms == "mcqa" and result["per_category"]:
        result["metrics"]["category_mean"] = M.mean([v["accuracy"] for v in result["per_category"].values()])
    keys = sorted({k for s in samples for k in s.groups})
    if keys:
        result["groups"] = {k: _breakdown(rows, [s.groups.get(k) for s in samples], ms) for k in keys}
    calls = np.array([r["tool_calls"] for r in rows], dtype=np.float64)
    ok_calls = np.array([r["tool_calls_ok"] for r in rows], dtype=np.float64)
    result["tools"] = {"mean_calls": M.mean(calls), "mean_ok_calls": M.mean(ok_calls),
                       "with_calls": M.mean(calls > 0)}
    secs = [r["seconds"] for r in rows if r["seconds"] is not None]
    result["timing"] = {"mean_s": M.mean(secs), "n": len(secs)}
    result["settings"] = {"lenient": lenient, "reversed_policy": reversed_policy, "multi_gt": bench.multi_gt,
                          "numeric": bench.numeric}
    if return_rows:
        result["rows"] = rows
    return result


def sample_values(samples: Sequence[Sample], rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per-sample values ``{metric: {sample id: value}}`` whose plain means are the synthetic
    metric set's headline numbers, so an interval over samples is an interval of that number:

    - ``accuracy``: ``correct`` of the samples that have an answer to check;
    - ``miou``: ``iou`` of the samples that have an interval;
    - ``score``: the sample's task metric (``correct``, ``iou``, or their mean for grounded QA)
      times ``n / (tasks · n_task)``: ``score`` is the mean over tasks of the task means, i.e. a
      weighted mean of per-sample metrics; folding the fixed weights into the values makes it a
      plain mean (equal to ``score``'s when, as in the synthetic suite, every sample of a task
      has the same fields).

    ``rows``: :func:`score_sample`'s, in the order of ``samples`` (``score(..., return_rows=True)``).
    """
    if len(rows) != len(samples):
        raise ValueError(f"sample_values: {len(rows)} rows for {len(samples)} samples")
    tasks = [s.category or s.task for s in samples]
    counts = {t: tasks.count(t) for t in set(tasks)}
    out: dict[str, dict[str, float]] = {"accuracy": {}, "miou": {}, "score": {}}
    for s, r, t in zip(samples, rows, tasks):
        parts = [float(r[k]) for k in ("correct", "iou") if k in r]
        if "correct" in r:
            out["accuracy"][s.id] = float(r["correct"])
        if "iou" in r:
            out["miou"][s.id] = float(r["iou"])
        out["score"][s.id] = (float(np.mean(parts)) if parts else 0.0) * len(samples) / (len(counts) * counts[t])
    return out


def _breakdown(rows, keys: Sequence[str | None], metric_set: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for k in sorted({k for k in keys if k is not None}):
        sel = [r for r, kk in zip(rows, keys) if kk == k]
        m = _metrics_for(sel, "grounding" if metric_set == "grounding" else metric_set)
        out[str(k)] = {"n": len(sel), **m}
    return out


def summary_table(result: Mapping[str, Any]) -> str:
    """A plain-text table: counts, the headline metrics (in %), and the per-category lines."""
    lines = [f"{result['benchmark']}: {result['samples']} samples, {result['predicted']} predicted, "
             f"{result['missing']} missing, {result['unknown_ids']} unknown ids"]
    bad = {k: v for k, v in result["status"].items() if k != "ok"}
    if bad:
        lines.append("  status: " + ", ".join(f"{k} {v}" for k, v in bad.items()))
    width = max([len(k) for k in result["metrics"]] + [8])
    lines.append(f"  {'metric':<{width}}  value")
    for k, v in result["metrics"].items():
        lines.append(f"  {k:<{width}}  {100 * v:6.2f}")
    for title, table in (("task", result.get("per_task", {})), ("category", result.get("per_category", {}))):
        for name, m in table.items():
            if title == "category" and name in result.get("per_task", {}):
                continue  # the synthetic suite's categories are its tasks
            vals = ", ".join(f"{k} {100 * v:.1f}" for k, v in m.items() if k in ("accuracy", "miou", "score", "r@0.5"))
            lines.append(f"  {title} {name} (n={int(m['n'])}): {vals}")
    t = result.get("tools", {})
    if t.get("mean_calls"):
        lines.append(f"  tool calls: {t['mean_calls']:.2f}/sample, {100 * t['with_calls']:.1f}% of samples call")
    return "\n".join(lines)
