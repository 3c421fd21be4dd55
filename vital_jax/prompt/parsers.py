"""Parse model text into actions and answers. Never raises on model output.

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
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_NUM = r"[-+]?(?:\d+(?:,\d{3})*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_NUM_RE = re.compile(_NUM)


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


# ---------------------------------------------------------------------- answers
def extract_answer(text: str) -> str | ParseError:
    """Content of the last ``<answer>...</answer>``, stripped."""
    if not isinstance(text, str):
        return ParseError("not_text", f"expected a string, got {type(text).__name__}")
    found = _ANSWER_RE.findall(text)
    if not found:
        return ParseError("no_answer", "no <answer></answer> tag")
    return found[-1].strip()


_CHOICE_RES = (
    re.compile(r"^\(?([A-Z])\)?(?:[.):\s]|$)"),  # "B", "(B)", "B.", "B) text", "B: text"
    re.compile(r"\b(?:answer|option|choice)\s*(?:is)?\s*[:：]?\s*\(?([A-Z])\)?(?![A-Za-z])", re.IGNORECASE),
)


def parse_choice(answer: str) -> str | ParseError:
    """A multiple-choice letter from an answer's content."""
    s = answer.strip()
    for rx in _CHOICE_RES:
        m = rx.search(s)
        if m:
            return m.group(1).upper()
    return ParseError("no_choice", f"no option letter in {s[:40]!r}")


def parse_number(answer: str) -> float | ParseError:
    """The first number in an answer's content ("1,234.5" -> 1234.5)."""
    m = _NUM_RE.search(answer)
    if not m:
        return ParseError("no_number", f"no number in {answer.strip()[:40]!r}")
    try:
        return float(m.group(0).replace(",", ""))
    except ValueError:
        return ParseError("no_number", f"cannot read {m.group(0)!r} as a number")


_INTERVAL_RES = (
    re.compile(rf"[\[(]\s*({_NUM})\s*s?\s*,\s*({_NUM})\s*s?\s*[\])]"),  # [a, b] or (a, b)
    re.compile(rf"({_NUM})\s*(?:s|sec|secs|seconds)?\s*(?:-|–|—|to|until)\s*({_NUM})", re.IGNORECASE),  # a - b, a to b
)


def parse_interval(answer: str) -> tuple[float, float] | ParseError:
    """The last ``(start, end)`` pair: "[a, b]", "(a, b)", "a - b", "a to b", "from a to b seconds"."""
    pairs = []
    for rx in _INTERVAL_RES:
        for m in rx.finditer(answer):
            pairs.append((m.end(), m.group(1), m.group(2)))
    if not pairs:
        return ParseError("no_interval", f"no start/end pair in {answer.strip()[:60]!r}")
    _, a, b = max(pairs, key=lambda p: p[0])
    try:
        start, end = float(a.replace(",", "")), float(b.replace(",", ""))
    except ValueError:
        return ParseError("no_interval", f"cannot read ({a!r}, {b!r}) as numbers")
    if not (math.isfinite(start) and math.isfinite(end)):
        return ParseError("no_interval", "interval bounds must be finite")
    return start, end


def parse_answer(text: str, kind: str):
    """Extract ``<answer>`` and parse it as ``kind``: choice, number, text or interval."""
    content = extract_answer(text)
    if isinstance(content, ParseError):
        return content
    if kind == "choice":
        return parse_choice(content)
    if kind == "number":
        return parse_number(content)
    if kind == "text":
        return content if content else ParseError("empty_answer", "empty <answer></answer>")
    if kind == "interval":
        return parse_interval(content)
    return ParseError("bad_kind", f"unknown answer kind {kind!r} (choice, number, text, interval)")


# ---------------------------------------------------------------------- format
ALLOWED_TAGS = ("think", "tool_call", "answer")
_ANY_TAG = re.compile(r"</?([A-Za-z_][\w-]*)>")
_BLOCK = re.compile(r"\s*<(think|tool_call|answer)>(.*?)</\1>\s*", re.DOTALL)


def check_format(text: str) -> ParseError | None:
    """VITAL's format rule on the concatenated assistant text; None if it holds.

    Tags only think/tool_call/answer; the text is a sequence of such blocks with only
    whitespace between them; it starts with think and ends with answer; no tag repeats
    back to back; blocks do not nest.
    """
    if not isinstance(text, str):
        return ParseError("not_text", f"expected a string, got {type(text).__name__}")
    for m in _ANY_TAG.finditer(text):
        if m.group(1) not in ALLOWED_TAGS:
            return ParseError("format_bad_tag", f"tag <{m.group(1)}> is not allowed")
    pos, tags = 0, []
    while pos < len(text):
        m = _BLOCK.match(text, pos)
        if m is None:
            if text[pos:].strip():
                return ParseError("format_text_outside_tags", f"unexpected text at char {pos}: {text[pos:pos + 30]!r}")
            break
        if _ANY_TAG.search(m.group(2)):
            return ParseError("format_nested_tags", f"<{m.group(1)}> contains another tag")
        tags.append(m.group(1))
        pos = m.end()
    if not tags:
        return ParseError("format_no_tags", "no think/tool_call/answer blocks")
    if tags[0] != "think":
        return ParseError("format_bad_start", f"must start with <think>, starts with <{tags[0]}>")
    if tags[-1] != "answer":
        return ParseError("format_bad_end", f"must end with <answer>, ends with <{tags[-1]}>")
    for a, b in zip(tags, tags[1:]):
        if a == b:
            return ParseError("format_repeated_tag", f"<{a}> repeats back to back")
    return None


def format_ok(text: str) -> bool:
    return check_format(text) is None
