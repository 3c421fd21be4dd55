"""Predictions JSONL: what ``vital eval`` writes and ``vital score`` reads.

One JSON object per line, one line per benchmark sample::

    {"id": "v_abc_0",                       # the Sample id (see vital_jax.eval.benchmarks)
     "response": "<think>…</think> <tool_call>…</tool_call> <think>…</think> <answer>(3.0, 9.5)</answer>",
     "answer": "(3.0, 9.5)",                # optional: the answer text, already extracted
     "tool_calls": [{"start_time": 2.0, "end_time": 12.0, "ok": true}],   # optional
     "timing": {"total_s": 1.84, "prefill_s": 0.21, "decode_s": 1.52},     # optional
     ...}                                   # any other keys (transcript, prompt) are kept

- ``response`` is the model's whole generated text (a list of assistant turns is joined with
  newlines). Its answer is the content of the *last* ``<answer>…</answer>`` block; a response
  with none scores 0 (status ``no_answer``) unless scoring is ``lenient``, which then reads the
  whole response (for systems that do not use the tags).
- ``answer``, when present and a string, wins over ``response``: other systems' outputs can be
  scored from their bare answers (``"B"``, ``"12.5 - 20"``).
- ``tool_calls`` is a list (its length is the number of calls; items with ``"ok": false`` are
  failed calls) or an int. ``timing`` is a number of seconds or an object with ``total_s``.
- A sample with no line is *missing* and scores 0; a line whose id is not in the data is
  counted (``unknown_ids``) and ignored; when an id repeats (a resumed run), the last line wins.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from vital_jax.jsonl import BadLine, parse_lines
from vital_jax.errors import VitalError

_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


class PredictionsError(VitalError, ValueError):
    """A predictions file that cannot be read (names the file and line)."""


def read_predictions(path: str | os.PathLike) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """``({id: row}, counts)`` with ``counts = {"lines", "duplicates"}``. Bad JSON or a line
    without an ``id`` raises :class:`PredictionsError` naming the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PredictionsError(f"{path}: cannot read: {e}") from e
    rows: dict[str, dict[str, Any]] = {}
    lines = dups = 0
    for lineno, row in parse_lines(text):
        if isinstance(row, BadLine):
            if row.partial:
                continue  # a half-written last line (the run was killed mid-write)
            raise PredictionsError(f"{path}: line {lineno}: not JSON: {row.error}")
        if not isinstance(row, Mapping) or row.get("id") is None:
            raise PredictionsError(f"{path}: line {lineno}: expected an object with an 'id'")
        lines += 1
        key = str(row["id"])
        dups += key in rows
        rows[key] = dict(row)
    return rows, {"lines": lines, "duplicates": dups}


def append_prediction(f: TextIO, row: Mapping[str, Any]) -> None:
    """Write one prediction line and flush (so a crash loses at most the line being written)."""
    if row.get("id") is None:
        raise ValueError("a prediction needs an 'id'")
    f.write(json.dumps(dict(row), ensure_ascii=False) + "\n")
    f.flush()


def answer_text(row: Mapping[str, Any] | None, *, lenient: bool = False) -> tuple[str | None, str]:
    """``(answer text or None, status)``: status ``ok``, ``missing``, ``no_answer`` or
    ``empty_answer`` (see the module docstring for the rules)."""
    if row is None:
        return None, "missing"
    ans = row.get("answer")
    if isinstance(ans, str):
        found = _ANSWER_BLOCK.findall(ans)
        text = found[-1] if found else ans
        return (text.strip(), "ok") if text.strip() else (None, "empty_answer")
    response = row.get("response")
    if isinstance(response, list):
        response = "\n".join(str(t) for t in response)
    if not isinstance(response, str):
        return None, "no_answer"
    found = _ANSWER_BLOCK.findall(response)
    if found:
        text = found[-1].strip()
        return (text, "ok") if text else (None, "empty_answer")
    if lenient and response.strip():
        return re.sub(r"<think>.*?</think>", " ", response, flags=re.DOTALL).strip() or None, "ok"
    return None, "no_answer"


def num_tool_calls(row: Mapping[str, Any] | None) -> tuple[int, int]:
    """``(calls, successful calls)`` from ``tool_calls`` (a list or an int)."""
    if row is None:
        return 0, 0
    calls = row.get("tool_calls")
    if isinstance(calls, bool) or calls is None:
        return 0, 0
    if isinstance(calls, int):
        return calls, calls
    if isinstance(calls, list):
        ok = sum(1 for c in calls if not (isinstance(c, Mapping) and c.get("ok") is False))
        return len(calls), ok
    return 0, 0


def seconds(row: Mapping[str, Any] | None) -> float | None:
    if row is None:
        return None
    t = row.get("timing")
    if isinstance(t, Mapping):
        t = t.get("total_s", t.get("seconds"))
    return float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else None
