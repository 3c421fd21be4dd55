"""Parse model text into actions (tool calls). Never raises on model output.

Answers and the format rule live in one place, :mod:`vital_jax.rl.rewards` (``extract_answer``,
``parse_choice``, ``parse_number``, ``parse_span``, ``format_reward``), which the RL reward and the
evaluation metrics (:mod:`vital_jax.eval.metrics`) both use.


Every parser returns either its result or a :class:`ParseError` (a value, not an
exception), so a malformed generation becomes an observation or a zero reward rather than
a crashed rollout. Tolerant of whitespace and of text around the payload; strict about what
the payload means (tool name, argument names and types).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re

from vital_jax.prompt.templates import CLIP_TOOL_NAME


@dataclasses.dataclass(frozen=True)
class ParseError:
    """Why a parse failed: a stable ``code`` for metrics and a human ``message``."""

    code: str
    message: str

    def __bool__(self) -> bool:  # lets callers write `if not result: ...`
        return False


@dataclasses.dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict


@dataclasses.dataclass(frozen=True)
class ClipCall:
    """A valid-looking ``get_video_clip_frame`` call (range checks are the tool's job)."""

    start_time: float
    end_time: float


_TOOL_RE = re.compile(r"<tool_call>(.*?)(</tool_call>|$)", re.DOTALL)


def _first_json_object(body: str) -> dict | ParseError:
    body = body.strip()
    start = body.find("{")
    if start < 0:
        return ParseError("tool_call_no_json", "no JSON object inside <tool_call></tool_call>")
    try:
        obj, _ = json.JSONDecoder().raw_decode(body[start:])  # trailing text is tolerated
    except json.JSONDecodeError as e:
        return ParseError("tool_call_bad_json", f"invalid JSON in <tool_call>: {e.msg} at char {e.pos}")
    if not isinstance(obj, dict):
        return ParseError("tool_call_bad_json", "tool call JSON is not an object")
    return obj


def parse_tool_call(text: str) -> ToolCall | ParseError:
    """The first ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` in ``text``."""
    if not isinstance(text, str):
        return ParseError("not_text", f"expected a string, got {type(text).__name__}")
    m = _TOOL_RE.search(text)
    if m is None:
        return ParseError("no_tool_call", "no <tool_call> tag")
    if not m.group(2):
        return ParseError("tool_call_unterminated", "<tool_call> without </tool_call>")
    obj = _first_json_object(m.group(1))
    if isinstance(obj, ParseError):
        return obj
    name, args = obj.get("name"), obj.get("arguments", {})
    if not isinstance(name, str) or not name:
        return ParseError("tool_call_no_name", 'tool call needs a string "name"')
    if isinstance(args, str):  # some models double-encode arguments
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return ParseError("tool_call_bad_arguments", '"arguments" is a string that is not JSON')
    if not isinstance(args, dict):
        return ParseError("tool_call_bad_arguments", '"arguments" must be a JSON object')
    return ToolCall(name, args)


def _number(value, field: str) -> float | ParseError:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ParseError("tool_call_bad_argument_type", f"{field} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        return ParseError("tool_call_bad_argument_type", f"{field} must be finite, got {value}")
    return float(value)


def parse_clip_call(text: str, *, name: str = CLIP_TOOL_NAME) -> ClipCall | ParseError:
    """A ``get_video_clip_frame(start_time, end_time)`` call with exactly two numeric args."""
    call = parse_tool_call(text)
    if isinstance(call, ParseError):
        return call
    if call.name != name:
        return ParseError("unknown_tool", f"unknown tool {call.name!r}; the only tool is {name!r}")
    want = {"start_time", "end_time"}
    if set(call.arguments) != want:
        missing, extra = want - set(call.arguments), set(call.arguments) - want
        detail = "; ".join(
            s for s in (f"missing {sorted(missing)}" if missing else "", f"unexpected {sorted(extra)}" if extra else "") if s
        )
        return ParseError("tool_call_bad_arguments", f"{name} takes start_time and end_time ({detail})")
    start = _number(call.arguments["start_time"], "start_time")
    if isinstance(start, ParseError):
        return start
    end = _number(call.arguments["end_time"], "end_time")
    if isinstance(end, ParseError):
        return end
    return ClipCall(start, end)
