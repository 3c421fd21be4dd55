"""Evaluation metrics: pure NumPy over arrays of per-sample values, plus answer readers.

All metrics are fractions in ``[0, 1]`` (tables multiply by 100). Every function that averages
takes the *whole* sample set: a missing or unparseable prediction is a sample scored 0, never a
sample dropped (so a model cannot raise its mIoU by refusing to answer).

Temporal grounding (Charades-STA, ActivityNet, VidChapters, ReXTime, VUE-TR)
    ``iou = |pred ∩ gold| / |pred ∪ gold|`` in seconds; ``miou`` = mean IoU; ``r@t`` = fraction
    with ``iou >= t`` for ``t`` in 0.3 / 0.5 / 0.7. A predicted interval is first normalised by
    :func:`normalize_interval`:

    - **reversed** ``(end, start)``: swapped (the model named the segment, in the wrong order);
      ``reversed_policy="zero"`` scores it 0 instead. Counted either way.
    - **outside the video** (``duration`` known): clipped to ``[0, duration]``; an interval wholly
      outside has nothing left and scores 0. Counted as ``clipped`` / ``outside``.
    - **empty** (zero length after the above): IoU 0 (a point names no segment).
    - **unparseable / no answer / missing prediction**: IoU 0.

    Several gold segments (NExT-GQA marks up to 3, VUE-TR lists several): ``multi_gt="max"`` takes
    the best IoU over them (NExT-GQA's official rule); ``"union"`` compares with the union of the
    gold segments as one set of time (VUE-TR style set IoU).
Grounded QA (NExT-GQA): ``accuracy`` (option letter), ``miou``, ``r@0.3/0.5``, ``miop`` with
    ``iop = |pred ∩ gold| / |pred|`` (NExT-GQA's IoP), ``iop@0.3/0.5`` and ``acc@gqa``
    (correct answer *and* IoP >= 0.5, the benchmark's headline grounded accuracy).
Multiple choice: ``accuracy`` plus a per-category breakdown (:func:`per_group`).
Numeric: ``accuracy`` (equal after rounding both to one decimal) and ``mra``, VSI-Bench's mean
    relative accuracy ``mean_θ 1[|p - g| / |g| < 1 - θ]`` over ``θ ∈ {0.50, 0.55, …, 0.95}``.

Answer readers (:func:`read_choice`, :func:`read_interval`, :func:`read_number`) turn the text
inside ``<answer>`` into a value or ``None`` plus a status string; they never raise.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

from vital_jax.rl.rewards import parse_choice as _reward_parse_choice
from vital_jax.rl.rewards import parse_number as _reward_parse_number
from vital_jax.rl.rewards import span_pairs as _reward_span_pairs

THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7)
MRA_THRESHOLDS: np.ndarray = np.linspace(0.5, 0.95, 10)
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# --------------------------------------------------------------------------- intervals


def normalize_interval(
    pred: tuple[float, float] | None,
    duration: float | None = None,
    *,
    reversed_policy: str = "swap",
) -> tuple[tuple[float, float] | None, str]:
    """``(interval or None, status)``; status is ``ok``, ``reversed``, ``clipped``, ``outside``,
    ``empty`` or ``unparseable`` (see the module docstring for the rules)."""
    if reversed_policy not in ("swap", "zero"):
        raise ValueError(f"reversed_policy must be 'swap' or 'zero', got {reversed_policy!r}")
    if pred is None:
        return None, "unparseable"
    s, e = float(pred[0]), float(pred[1])
    if not (math.isfinite(s) and math.isfinite(e)):
        return None, "unparseable"
    status = "ok"
    if s > e:
        if reversed_policy == "zero":
            return None, "reversed"
        s, e, status = e, s, "reversed"
    if duration is not None:
        if e <= 0.0 or s >= duration:
            return None, "outside"
        if s < 0.0 or e > duration:
            s, e = max(s, 0.0), min(e, float(duration))
            status = "clipped" if status == "ok" else status
    if e - s <= 0.0:
        return None, "empty"
    return (s, e), status


def interval_iou(pred: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Row-wise IoU of ``pred[N, 2]`` and ``gold[N, 2]`` (seconds). A NaN row in ``pred`` (no
    prediction) scores 0; so does an empty union."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
    gold = np.asarray(gold, dtype=np.float64).reshape(-1, 2)
    inter = np.clip(np.minimum(pred[:, 1], gold[:, 1]) - np.maximum(pred[:, 0], gold[:, 0]), 0.0, None)
    union = np.maximum(pred[:, 1], gold[:, 1]) - np.minimum(pred[:, 0], gold[:, 0])
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return np.nan_to_num(iou, nan=0.0)


def interval_iop(pred: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Row-wise intersection over the *prediction's* length (NExT-GQA's IoP); NaN rows → 0."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
    gold = np.asarray(gold, dtype=np.float64).reshape(-1, 2)
    inter = np.clip(np.minimum(pred[:, 1], gold[:, 1]) - np.maximum(pred[:, 0], gold[:, 0]), 0.0, None)
    length = pred[:, 1] - pred[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        iop = np.where(length > 0, inter / np.where(length > 0, length, 1.0), 0.0)
    return np.nan_to_num(iop, nan=0.0)


def _merge(segments: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for s, e in sorted((min(a, b), max(a, b)) for a, b in segments):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def _measure(segments: Sequence[tuple[float, float]]) -> float:
    return float(sum(e - s for s, e in _merge(segments)))


def _intersect(a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]]) -> float:
    return float(sum(max(0.0, min(e1, e2) - max(s1, s2)) for s1, e1 in _merge(a) for s2, e2 in _merge(b)))


def multi_iou(pred: tuple[float, float] | None, golds: Sequence[tuple[float, float]], *, multi_gt: str = "max") -> tuple[float, float]:
    """``(iou, iop)`` of one (normalised) prediction against one or more gold segments."""
    if pred is None or not golds:
        return 0.0, 0.0
    if multi_gt == "max":
        p = np.tile(np.asarray(pred, dtype=np.float64), (len(golds), 1))
        g = np.asarray(golds, dtype=np.float64)
        return float(interval_iou(p, g).max()), float(interval_iop(p, g).max())
    if multi_gt == "union":
        inter = _intersect([pred], golds)
        union = _measure([pred, *golds])
        length = pred[1] - pred[0]
        return (inter / union if union > 0 else 0.0), (inter / length if length > 0 else 0.0)
    raise ValueError(f"multi_gt must be 'max' or 'union', got {multi_gt!r}")


def recall_at(ious: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> dict[str, float]:
    """``{"r@0.3": …}``: fraction of samples with IoU >= threshold (empty set → 0)."""
    ious = np.asarray(ious, dtype=np.float64)
    return {f"r@{t:g}": float(np.mean(ious >= t - 1e-12)) if ious.size else 0.0 for t in thresholds}


def grounding_metrics(ious: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> dict[str, float]:
    """``miou`` and ``r@t`` over all samples (missing ones must be included as 0)."""
    ious = np.asarray(ious, dtype=np.float64)
    return {"miou": float(ious.mean()) if ious.size else 0.0, **recall_at(ious, thresholds)}


def grounded_qa_metrics(correct: np.ndarray, ious: np.ndarray, iops: np.ndarray) -> dict[str, float]:
    """NExT-GQA: accuracy, mIoU, R@0.3/0.5 (IoU), mIoP, IoP@0.3/0.5 and Acc@GQA."""
    correct = np.asarray(correct, dtype=np.float64)
    iops = np.asarray(iops, dtype=np.float64)
    out = {"accuracy": mean(correct), **grounding_metrics(ious, (0.3, 0.5))}
    out["miop"] = mean(iops)
    out.update({f"iop@{t:g}": float(np.mean(iops >= t - 1e-12)) if iops.size else 0.0 for t in (0.3, 0.5)})
    out["acc@gqa"] = mean(correct * (iops >= 0.5 - 1e-12))
    return out


# --------------------------------------------------------------------------- QA


def mean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()) if values.size else 0.0


def numeric_correct(pred: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """1 where both round to the same one-decimal value; NaN predictions → 0."""
    pred = np.asarray(pred, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.float64)
    ok = np.isfinite(pred) & (np.round(np.nan_to_num(pred), 1) == np.round(gold, 1))
    return ok.astype(np.float64)


def mean_relative_accuracy(pred: np.ndarray, gold: np.ndarray, thresholds: np.ndarray = MRA_THRESHOLDS) -> np.ndarray:
    """Per-sample MRA: mean over θ of ``|p - g| / |g| < 1 - θ`` (``|g| = 0``: absolute error)."""
    pred = np.asarray(pred, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.float64)
    denom = np.where(gold != 0, np.abs(gold), 1.0)
    rel = np.abs(pred - gold) / denom
    rel = np.where(np.isfinite(rel), rel, np.inf)
    return (rel[:, None] < (1.0 - np.asarray(thresholds))[None, :]).mean(axis=1) if rel.size else np.zeros(0)


def per_group(values: np.ndarray, groups: Sequence[str | None]) -> dict[str, dict[str, float]]:
    """``{group: {"n": count, "mean": value}}``, sorted by name; ``None`` groups are skipped."""
    values = np.asarray(values, dtype=np.float64)
    keys = np.asarray(["" if g is None else str(g) for g in groups], dtype=object)
    out: dict[str, dict[str, float]] = {}
    for g in sorted(set(keys.tolist()) - {""}):
        sel = keys == g
        out[g] = {"n": int(sel.sum()), "mean": float(values[sel].mean())}
    return out


# --------------------------------------------------------------------------- answer readers

def read_interval(text: str | None) -> tuple[tuple[float, float] | None, str]:
    """The last ``(start, end)`` pair in an answer, in the order written (it may be reversed;
    :func:`normalize_interval` decides). Numbers are seconds or ``mm:ss`` / ``hh:mm:ss`` and are
    paired in order within each line or ``!``/``?`` sentence, as the training reward reads them
    (``rl.rewards.parse_span``), except that a reversed final pair is returned, not skipped."""
    if text is None:
        return None, "no_answer"
    pairs = _reward_span_pairs(text)
    if not pairs:
        return None, "unparseable"
    return pairs[-1], "ok"


def _norm_text(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", s.lower()).strip()


_OPTION_MARK = re.compile(r"^\s*[(\[]?([A-Z])[)\].:]\s+")


def option_text(option: str) -> str:
    """An option without its ``"A. "`` / ``"(B) "`` marker."""
    return _OPTION_MARK.sub("", option, count=1)


def read_choice(text: str | None, options: Sequence[str] = ()) -> tuple[str | None, str]:
    """An option letter: a letter as the training reward reads it (``rl.rewards.parse_choice``;
    an answer offering several letters is ``hedged`` and wrong), else an answer equal to one
    option's text (case and punctuation ignored)."""
    if text is None:
        return None, "no_answer"
    letter, hedged = _reward_parse_choice(text)
    if hedged:
        return None, "hedged"
    if letter is not None:
        return letter, "ok"
    want = _norm_text(text)
    for i, opt in enumerate(options):
        if want and want == _norm_text(option_text(opt)):
            return LETTERS[i], "ok"
    return None, "unparseable"


def read_number(text: str | None) -> tuple[float | None, str]:
    """The first number in an answer (thousands commas allowed)."""
    if text is None:
        return None, "no_answer"
    value = _reward_parse_number(text)
    return (value, "ok") if value is not None else (None, "unparseable")


def text_match(pred: str | None, gold: str) -> float:
    """Open answers: equal after lowercasing and dropping punctuation, or equal numbers."""
    if pred is None:
        return 0.0
    if _norm_text(pred) == _norm_text(gold):
        return 1.0
    if re.fullmatch(r"\s*[-+]?(?:\d[\d,]*)?\.?\d+\s*", gold):  # a numeric gold: compare numbers
        p, g = _reward_parse_number(pred), _reward_parse_number(gold)
        if p is not None and g is not None:
            return float(round(p, 1) == round(g, 1))
    return 0.0


def summarize_status(statuses: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    return dict(sorted(counts.items()))


def flatten(metrics: Mapping, prefix: str = "") -> dict[str, float]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (numbers only)."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out
