"""VITAL rewards, per ``data_source`` family; host-side plain Python.

``reward(data_source, response, solution, *, num_tool_calls=0, **options)`` returns floats:

- ``format``: 1 iff the response is a sequence of ``<think>``/``<tool_call>``/``<answer>`` blocks,
  nothing but whitespace around and between them, no tag twice in a row, no nesting, first block
  ``think``, last block ``answer`` (VITAL's rule; we also reject text before the first / after the
  last block, which VITAL's regex let through);
- ``tool``: ``tool_bonus · min(num_tool_calls, max_tool_calls)`` (0.5 and 2), where
  ``num_tool_calls`` counts the *successful* tool executions, supplied by the agent;
- ``accuracy`` (QA families) and/or ``iou`` (grounding families; ``iou_raw`` is the unscaled IoU);
- ``hack``: 1.0 when the response is a reward hack, in which case every other entry is 0;
- ``total``: the plain sum ``format + tool + accuracy + iou``.

Reward hacks (score 0 in total): no ``<answer>`` block, several answer blocks, an empty answer,
a ``<tool_call>`` after the answer, and (multiple-choice families) an answer that offers more than
one option letter ("A, B, C, D", "A or B", "A) cat B) dog"). The answer is always read from the
single ``<answer>…</answer>`` block (VITAL fell back to the whole response; we do not).

``response`` is the assistant's generated text; a multi-turn episode may be passed as a list of
its assistant turns (joined with newlines), so tool-result observations never reach the format
check. ``solution`` forms: QA — the gold answer string (``"B"``, ``"(B) a dog"``, ``"3.5"``, …) or
``{"answer": …}``; grounding — ``[start, end]`` seconds, a string containing them, or
``{"span": [start, end]}`` (also ``timestamps``/``window``/``segment``); grounded QA —
``{"answer": …, "span": […]}``, or one string holding both (as in VITAL's data).

Answer/tag parsing here is deliberately minimal and local to rewards.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

from vital_jax.registry import Registry
from vital_jax.rl.text_metrics import rouge_mean, word_error_rate

ACCURACY: Registry = Registry("accuracy scorer")

FORMAT_TAGS = ("think", "tool_call", "answer")
DEFAULT_TOOL_BONUS = 0.5
DEFAULT_MAX_TOOL_CALLS = 2


# --------------------------------------------------------------------------- data sources


@dataclass(frozen=True)
class SourceSpec:
    """How one data-source family is scored."""

    name: str
    accuracy: str | None  # ACCURACY scorer name, or "auto" (multiple_choice if the gold is a letter)
    iou_scale: tuple[float, float] | None  # (a, b): iou -> clamp((iou - a) / (b - a), 0, 1)


_GROUNDING = (0.2, 0.8)
SOURCES: dict[str, SourceSpec] = {
    s.name: s
    for s in (
        SourceSpec("charades", None, _GROUNDING),
        SourceSpec("activitynet", None, _GROUNDING),
        SourceSpec("vidchapters", None, (0.0, 0.5)),
        SourceSpec("nextgqa", "multiple_choice", _GROUNDING),
        # ReXTime's gold is an option letter in the benchmark and free text in VITAL's data.
        SourceSpec("rextime", "auto", _GROUNDING),
        SourceSpec("multiple_choice", "multiple_choice", None),
        SourceSpec("numerical", "numerical", None),
        SourceSpec("free_form", "free_form", None),
        SourceSpec("regression", "regression", None),
        SourceSpec("ocr", "ocr", None),
    )
}
_SOURCE_ALIASES = {
    "charades_sta": "charades",
    "charadessta": "charades",
    "activitynet_captions": "activitynet",
    "anet": "activitynet",
    "vidchapters_7m": "vidchapters",
    "next_gqa": "nextgqa",
    "mcq": "multiple_choice",
    "mc": "multiple_choice",
    "numeric": "numerical",
    "number": "numerical",
    "freeform": "free_form",
    "open": "free_form",
    "open_ended": "free_form",
}


def source_spec(data_source: str) -> SourceSpec:
    """Resolve an MTVR ``data_source`` (``./data/charades_cutreward``, ``video_r1/OCR``) or a
    short name (``charades``, ``ocr``, …) to its :class:`SourceSpec`."""
    if not isinstance(data_source, str):
        raise TypeError(f"reward: data_source must be a string, got {type(data_source).__name__}")
    key = data_source.strip().lower().replace("-", "_")
    key = re.sub(r"^(\./)?data/", "", key)
    key = key.rsplit("/", 1)[-1]  # video_r1/multiple_choice -> multiple_choice
    key = re.sub(r"\.(py|json|jsonl|parquet)$", "", key)
    key = re.sub(r"_(cutreward|reward|rl|sft|train|val|test)$", "", key)
    key = _SOURCE_ALIASES.get(key, key)
    if key not in SOURCES:
        raise KeyError(
            f"reward: unknown data_source {data_source!r}; known families: {', '.join(SOURCES)} "
            f"(MTVR paths like './data/charades_cutreward' and 'video_r1/<problem_type>' work too; "
            f"pass problem_type=... for generic sources)"
        )
    return SOURCES[key]


# --------------------------------------------------------------------------- parsing (minimal)

_TAG = re.compile(r"<(/?)([A-Za-z_][\w\-]*)>")
_ANSWER_OPEN = "<answer>"
_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def format_reward(response: str) -> float:
    """VITAL's format rule, see the module docstring. 1.0 or 0.0."""
    blocks: list[str] = []
    pos = 0
    open_tag: str | None = None
    for m in _TAG.finditer(response):
        closing, name = m.group(1) == "/", m.group(2)
        if open_tag is None:
            # Outside a block: only whitespace may precede, and this must open an allowed tag.
            if response[pos : m.start()].strip() or closing or name not in FORMAT_TAGS:
                return 0.0
            if blocks and blocks[-1] == name:
                return 0.0
            open_tag = name
        else:
            # Inside a block: the only tag allowed is its own closing tag.
            if not closing or name != open_tag:
                return 0.0
            blocks.append(name)
            open_tag = None
            pos = m.end()
    if open_tag is not None or response[pos:].strip() or not blocks:
        return 0.0
    return 1.0 if blocks[0] == "think" and blocks[-1] == "answer" else 0.0


def extract_answer(response: str) -> tuple[str | None, str | None]:
    """``(answer_text, hack_reason)``: the single answer block's content, or why there is none."""
    n_open = response.count(_ANSWER_OPEN)
    if n_open == 0:
        return None, "no_answer"
    if n_open > 1:
        return None, "multiple_answers"
    m = _ANSWER_BLOCK.search(response)
    if m is None:
        return None, "no_answer"  # opened, never closed (truncated)
    if "<tool_call>" in response[m.end() :]:
        return None, "tool_call_after_answer"
    text = m.group(1).strip()
    if not text:
        return None, "empty_answer"
    return text, None


_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")


def parse_number(text: str) -> float | None:
    """First number in ``text`` (thousands commas allowed), or None."""
    m = _NUMBER.search(text)
    return float(m.group().replace(",", "")) if m else None


_CLOCK = r"\d{1,2}:\d{2}(?::\d{2})?(?:\.\d+)?"
_TIME = re.compile(rf"{_CLOCK}|\d+(?:\.\d+)?")


def _seconds(token: str) -> float:
    if ":" not in token:
        return float(token)
    total = 0.0
    for part in token.split(":"):
        total = total * 60 + float(part)
    return total


def span_pairs(text: str) -> list[tuple[float, float]]:
    """Every ``(start, end)`` pair in ``text`` as written: numbers (seconds, or ``mm:ss`` /
    ``hh:mm:ss``) paired in order within each line or ``!``/``?`` sentence."""
    pairs = []
    for sentence in re.split(r"[!?\n]", text):
        times = [_seconds(t) for t in _TIME.findall(sentence)]
        pairs.extend(zip(times[0::2], times[1::2]))
    return pairs


def parse_span(text: str) -> tuple[float, float] | None:
    """The last pair of :func:`span_pairs` with ``start <= end``."""
    pairs = span_pairs(text)
    for start, end in reversed(pairs):
        if start <= end:
            return start, end
    return None


# A letter offered as a choice: "A", "(B)", "C.", "D," "A or", "B and", at the end.
_CHOICE = re.compile(r"(?<![A-Za-z0-9'])[(\[]?([A-Z])(?=[)\]]|\s*(?:[.,;:/&]|\band\b|\bor\b|$))")
# A letter marker followed by option text: "B. a dog", "(C) The cat".
_MARKED_OPTION = re.compile(r"(?<![A-Za-z0-9'])[(\[]?([A-Z])[)\].:]\s+[A-Za-z]*[a-z]")
_LONE_CAPITAL = re.compile(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])")
# "A" as an article ("A man opens the door") is not an option letter; neither is the pronoun "I"
_ARTICLE_A = re.compile(r"A(?=\s+[a-z])")


def _option_letters(text: str) -> set[str]:
    """Every standalone capital that can be an option letter, however it is separated."""
    return {m.group(1) for m in _LONE_CAPITAL.finditer(text)
            if m.group(1) != "I" and not _ARTICLE_A.match(text, m.start())}


def parse_choice(text: str) -> tuple[str | None, bool]:
    """``(letter, hedged)`` for a multiple-choice answer. ``hedged`` is True when more than one
    option letter is offered (a reward hack)."""
    marked = _MARKED_OPTION.findall(text)
    lead = re.match(r"\s*" + _MARKED_OPTION.pattern, text)
    if lead and len(set(marked)) == 1:
        return lead.group(1), False  # "D. Both A and C" is one choice, D
    choices = list(dict.fromkeys(_CHOICE.findall(text)))
    if len(choices) > 1 or len(_option_letters(text)) > 1:   # "A or B", "A B C D", "B, not C"
        return None, True
    if choices:
        return choices[0], False
    m = _LONE_CAPITAL.search(text)
    return (m.group(1) if m else None), False


# --------------------------------------------------------------------------- accuracy scorers


@ACCURACY.register("multiple_choice")
def multiple_choice(answer: str, gold: str) -> float:
    """1 if the chosen option letter equals the gold letter, else 0."""
    pred, _ = parse_choice(answer)
    ref, _ = parse_choice(str(gold))
    return float(pred is not None and pred == ref)


@ACCURACY.register("numerical")
def numerical(answer: str, gold: str) -> float:
    """1 if equal after rounding to one decimal, 0.5 if equal after rounding to an integer."""
    p, g = parse_number(answer), parse_number(str(gold))
    if p is None or g is None:
        return 0.0
    if round(p, 1) == round(g, 1):
        return 1.0
    return 0.5 if round(p) == round(g) else 0.0


@ACCURACY.register("free_form")
def free_form(answer: str, gold: str) -> float:
    """Mean of ROUGE-1, ROUGE-2, ROUGE-L F1 (no stemming), in [0, 1]."""
    return min(1.0, max(0.0, rouge_mean(str(gold), answer)))


@ACCURACY.register("regression")
def regression(answer: str, gold: str) -> float:
    """``clamp(1 - |p - g| / |g|, 0, 1)``; the absolute error when g = 0."""
    p, g = parse_number(answer), parse_number(str(gold))
    if p is None or g is None:
        return 0.0
    err = abs(p - g) / (abs(g) if g != 0 else 1.0)
    return min(1.0, max(0.0, 1.0 - err))


@ACCURACY.register("ocr")
def ocr(answer: str, gold: str) -> float:
    """``clamp(1 - WER, 0, 1)`` with a word-level, whitespace-split, case-sensitive WER."""
    return min(1.0, max(0.0, 1.0 - word_error_rate(str(gold), answer)))


def temporal_iou(pred: tuple[float, float], gold: tuple[float, float]) -> float:
    """Plain 1-D IoU of two ``(start, end)`` segments; 0 for an empty union."""
    inter = max(0.0, min(pred[1], gold[1]) - max(pred[0], gold[0]))
    union = max(pred[1], gold[1]) - min(pred[0], gold[0])
    return inter / union if union > 0 else 0.0


def scaled_iou(iou: float, scale: tuple[float, float]) -> float:
    """``clamp((iou - a) / (b - a), 0, 1)``."""
    a, b = scale
    return min(1.0, max(0.0, (iou - a) / (b - a)))


# --------------------------------------------------------------------------- solution forms

_SPAN_KEYS = ("span", "timestamps", "timestamp", "window", "segment", "solution_span")


def _gold_span(solution: Any) -> tuple[float, float]:
    if isinstance(solution, dict):
        for k in _SPAN_KEYS:
            if k in solution:
                return _gold_span(solution[k])
        if "answer" in solution:
            return _gold_span(solution["answer"])
        raise ValueError(f"reward: grounding solution dict needs one of {_SPAN_KEYS}, got keys {list(solution)}")
    if isinstance(solution, str):
        span = parse_span(solution)
        if span is None:
            raise ValueError(f"reward: no (start, end) span in grounding solution {solution!r}")
        return span
    if isinstance(solution, Sequence) and len(solution) == 2:
        start, end = float(solution[0]), float(solution[1])
        if not (math.isfinite(start) and math.isfinite(end)) or end < start:
            raise ValueError(f"reward: grounding solution must be [start <= end], got {solution!r}")
        return start, end
    raise ValueError(f"reward: cannot read a (start, end) span from solution {solution!r}")


def _gold_answer(solution: Any) -> str:
    if isinstance(solution, dict):
        if "answer" not in solution:
            raise ValueError(f"reward: QA solution dict needs an 'answer' key, got keys {list(solution)}")
        return str(solution["answer"])
    if isinstance(solution, (list, tuple)):
        raise ValueError(f"reward: QA solution must be a string or {{'answer': ...}}, got {solution!r}")
    return str(solution)


def _is_letter(gold: str) -> bool:
    return re.fullmatch(r"\s*[(\[]?[A-Z][)\].:]?\s*", gold) is not None


# --------------------------------------------------------------------------- front door


def reward(
    data_source: str,
    response: str | Sequence[str],
    solution: Any,
    *,
    num_tool_calls: int = 0,
    problem_type: str | None = None,
    iou_scale: tuple[float, float] | None = None,
    tool_bonus: float = DEFAULT_TOOL_BONUS,
    max_tool_calls: int = DEFAULT_MAX_TOOL_CALLS,
) -> dict[str, float]:
    """Score one response; see the module docstring for the components and hacks.

    ``problem_type`` (e.g. ``"nextgqa"``, ``"multiple_choice"``) overrides the family named by
    ``data_source`` — for generic MTVR sources that store the type in a separate field.
    ``iou_scale=(a, b)`` overrides the family's IoU scaling.
    """
    spec = source_spec(problem_type if problem_type is not None else data_source)
    if not isinstance(response, str):
        response = "\n".join(response)
    if int(num_tool_calls) != num_tool_calls or num_tool_calls < 0:
        raise ValueError(f"reward: num_tool_calls must be a non-negative int, got {num_tool_calls!r}")
    scale = spec.iou_scale
    if iou_scale is not None:
        if scale is None:
            raise ValueError(f"reward: iou_scale given, but {spec.name!r} is not a grounding source")
        a, b = (float(v) for v in iou_scale)
        if not b > a:
            raise ValueError(f"reward: iou_scale (a, b) needs b > a, got {iou_scale!r}")
        scale = (a, b)

    out = {"total": 0.0, "format": 0.0, "tool": 0.0}
    kind = spec.accuracy
    if kind is not None:
        # grounded QA may carry answer and span in one string (VITAL's data); QA needs the answer
        gold = _gold_answer(solution) if scale is None or isinstance(solution, dict) else str(solution)
        if kind == "auto":
            kind = "multiple_choice" if _is_letter(gold) else "free_form"
        out["accuracy"] = 0.0
    if scale is not None:
        gold_span = _gold_span(solution)
        out["iou"] = 0.0
        out["iou_raw"] = 0.0

    answer, hack = extract_answer(response)
    if hack is None and kind == "multiple_choice" and parse_choice(answer)[1]:
        hack = "multiple_options"
    out["hack"] = 0.0 if hack is None else 1.0
    if hack is not None:
        return out

    out["format"] = format_reward(response)
    out["tool"] = tool_bonus * min(int(num_tool_calls), max_tool_calls)
    if kind is not None:
        out["accuracy"] = ACCURACY.get(kind)(answer, gold)
    if scale is not None:
        span = parse_span(answer)
        raw = 0.0 if span is None else temporal_iou(span, gold_span)
        out["iou_raw"] = raw
        out["iou"] = scaled_iou(raw, scale)
    out["total"] = out["format"] + out["tool"] + out.get("accuracy", 0.0) + out.get("iou", 0.0)
    return out
