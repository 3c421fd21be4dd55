"""Typed records for MTVR training files and benchmark annotation files.

MTVR ships one JSON (or JSONL) file per source; videos are not included. One record is::

    {"video": "charades/ABC12.mp4",          # or "image": "...", relative to a media root
     "duration": 30.5,                       # seconds (videos)
     "text": "When does the person ...?",    # the question
     "data_source": "charades",              # selects the reward
     "options": ["A. ...", "B. ..."],        # optional (multiple choice)
     "video_kwargs": {...},                  # optional, passed to the frame sampler
     "solution": ...}

``solution`` decides the record's *kind*:

- ``rl``  (MTVR-RL, Tool-RL, benchmark files): ``[start, end]`` for grounding, a string for QA,
  or ``{"answer": ..., "interval": [s, e]}`` for grounded QA (answer and interval both);
- ``cot`` (MTVR-CoT): the whole chain-of-thought string ``<think>…</think><answer>…</answer>``;
- ``tool_cot`` (Tool-CoT): a 2-item list of assistant turns, with ``tool_params`` ``"(st, ed)"``
  and ``answer`` beside it.

RL and Tool-RL records are the same shape; whether the tool is offered is a trainer setting.

Every parse error names the file, the record index (0-based, its position in the file) and the
field, so a user can fix a file with a hundred thousand records. Paths are resolved *lexically*
under the root: ``..`` or an absolute path leaving the root is rejected, while a symlinked
dataset folder inside the root keeps working.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from vital_jax.jsonl import BadLine, parse_lines
from vital_jax.errors import VitalError

Kind = Literal["rl", "cot", "tool_cot"]
KINDS: tuple[str, ...] = ("rl", "cot", "tool_cot")

# Keys this module understands; anything else is kept in ``Record.extra`` and written back.
_QUESTION_KEYS = ("text", "question", "problem")
_KNOWN_KEYS = frozenset(
    {"video", "image", "duration", "data_source", "options", "video_kwargs", "solution",
     "tool_params", "observation", "answer", "use_tool", *_QUESTION_KEYS}
)
# Slack when checking annotated times against the duration (float rounding in annotations).
TIME_TOLERANCE = 0.01

_INTERVAL_RE = re.compile(
    r"^\s*[\(\[]\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*[\)\]]\s*$"
)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


class DataFileError(VitalError, OSError):
    """An annotation file that cannot be read at all (missing, not JSON/JSONL, wrong top level)."""


class RecordError(VitalError, ValueError):
    """One bad record: names the file, the record index and the field."""

    def __init__(self, file: str, index: int, field: str, reason: str):
        self.file, self.index, self.field, self.reason = str(file), index, field, reason
        super().__init__(f"{self.file}: record {index}: field '{field}': {reason}")

    def as_problem(self) -> "Problem":
        return Problem(self.file, self.index, self.field, self.reason)


@dataclasses.dataclass(frozen=True)
class Problem:
    """A problem found while checking a file (a record is skipped, the run goes on)."""

    file: str
    index: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: record {self.index}: field '{self.field}': {self.message}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Solution:
    """What a rollout is scored against: an answer, an interval in seconds, or both."""

    answer: str | None = None
    interval: tuple[float, float] | None = None

    def __post_init__(self):
        if self.answer is None and self.interval is None:
            raise ValueError("a Solution needs an answer, an interval or both")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToolTrajectory:
    """A Tool-CoT SFT target: turn 0 ends with the tool call, turn 1 follows the observation:
    the clip of ``tool_params`` (VITAL's clip tool), or ``observation``, the text a text tool
    returned (then ``tool_params`` is None)."""

    turns: tuple[str, str]
    tool_params: tuple[float, float] | None
    answer: str
    observation: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Record:
    """One parsed annotation. ``file`` and ``index`` say where it came from (not compared)."""

    kind: Kind
    media_type: Literal["video", "image"]
    media: str                      # as written in the file, relative to the root
    media_path: Path                # resolved under the root
    question: str
    data_source: str
    duration: float | None = None   # required for videos
    options: tuple[str, ...] = ()
    solution: Solution | None = None      # rl and tool_cot records
    cot: str | None = None                # cot records: the whole target text
    tool: ToolTrajectory | None = None    # tool_cot records
    video_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # a CoT record trained under the tool prompt (system turn with the tools block): the model
    # also learns to answer without calling (Tool-CoT records always use that prompt)
    use_tool: bool = False
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    file: str = dataclasses.field(default="<memory>", compare=False)
    index: int = dataclasses.field(default=0, compare=False)

    @property
    def is_video(self) -> bool:
        return self.media_type == "video"

    @property
    def answer_text(self) -> str | None:
        """The final answer as text, whatever the kind (a CoT's ``<answer>`` content)."""
        if self.solution is not None and self.solution.answer is not None:
            return self.solution.answer
        if self.cot is not None:
            found = _ANSWER_RE.findall(self.cot)
            return found[-1].strip() if found else None
        if self.solution is not None and self.solution.interval is not None:
            s, e = self.solution.interval
            return f"({s:.2f}, {e:.2f})"
        return None


# --------------------------------------------------------------------------- paths


def resolve_under(root: str | os.PathLike, relative: str) -> Path:
    """``root/relative`` normalised; raises ValueError if the result leaves ``root``."""
    if not isinstance(relative, str) or not relative.strip():
        raise ValueError("must be a non-empty path string")
    root_abs = os.path.normpath(os.path.abspath(os.fspath(root)))
    joined = os.path.normpath(os.path.join(root_abs, relative))
    if os.path.commonpath([root_abs, joined]) != root_abs:
        raise ValueError(f"path {relative!r} escapes the media root {root_abs}")
    return Path(joined)


# --------------------------------------------------------------------------- parsing


def parse_interval(value: Any) -> tuple[float, float]:
    """``[s, e]``, ``(s, e)`` or the strings ``"(s, e)"`` / ``"[s, e]"`` → floats, s < e."""
    if isinstance(value, str):
        m = _INTERVAL_RE.match(value)
        if not m:
            raise ValueError(f"expected '(start, end)', got {value!r}")
        pair = (float(m.group(1)), float(m.group(2)))
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value):
        pair = (float(value[0]), float(value[1]))
    else:
        raise ValueError(f"expected [start, end] seconds, got {value!r}")
    if not all(math.isfinite(v) for v in pair):
        raise ValueError(f"interval {pair} is not finite")
    if not pair[0] < pair[1]:
        raise ValueError(f"interval start {pair[0]} is not before end {pair[1]}")
    return pair


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _detect_kind(raw: Mapping[str, Any]) -> Kind:
    sol = raw.get("solution")
    if isinstance(sol, list) and len(sol) == 2 and all(isinstance(t, str) for t in sol):
        return "tool_cot"
    if "tool_params" in raw or "observation" in raw:
        return "tool_cot"
    if isinstance(sol, str) and ("<think>" in sol or "<answer>" in sol):
        return "cot"
    return "rl"


def parse_record(
    raw: Any,
    *,
    root: str | os.PathLike,
    index: int = 0,
    file: str = "<memory>",
    kind: Kind | None = None,
    time_tolerance: float = TIME_TOLERANCE,
) -> Record:
    """Validate one raw JSON object into a :class:`Record`; raises :class:`RecordError`."""

    def fail(field: str, reason: str):
        raise RecordError(file, index, field, reason)

    if not isinstance(raw, Mapping):
        fail("<record>", f"expected a JSON object, got {type(raw).__name__}")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    kind = kind or _detect_kind(raw)

    # media
    has_video, has_image = "video" in raw, "image" in raw
    if has_video == has_image:
        fail("video", "a record needs exactly one of 'video' or 'image'")
    media_type = "video" if has_video else "image"
    media = raw[media_type]
    try:
        media_path = resolve_under(root, media)
    except ValueError as e:
        fail(media_type, str(e))

    # duration
    duration = raw.get("duration")
    if duration is not None:
        if not _is_number(duration) or not math.isfinite(duration) or duration <= 0:
            fail("duration", f"must be a positive number of seconds, got {duration!r}")
        duration = float(duration)
    elif media_type == "video":
        fail("duration", "missing (required for video records)")

    # question
    qkey = next((k for k in _QUESTION_KEYS if k in raw), None)
    if qkey is None:
        fail("text", "missing question (one of 'text', 'question', 'problem')")
    question = raw[qkey]
    if not isinstance(question, str) or not question.strip():
        fail(qkey, "must be a non-empty string")

    data_source = raw.get("data_source")
    if not isinstance(data_source, str) or not data_source:
        fail("data_source", f"must be a non-empty string, got {data_source!r}")

    options = raw.get("options", [])
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        fail("options", "must be a list of strings")

    video_kwargs = raw.get("video_kwargs", {})
    if video_kwargs is None:
        video_kwargs = {}
    if not isinstance(video_kwargs, Mapping):
        fail("video_kwargs", "must be a JSON object")

    def check_time(field: str, pair: tuple[float, float]):
        if pair[0] < -time_tolerance:
            fail(field, f"start {pair[0]} is negative")
        if duration is not None and pair[1] > duration + time_tolerance:
            fail(field, f"end {pair[1]} is after the video's duration {duration}")

    solution = cot = tool = None
    if "solution" not in raw:
        fail("solution", "missing")
    sol = raw["solution"]
    if kind == "rl":
        try:
            solution = _parse_rl_solution(sol)
        except ValueError as e:
            fail("solution", str(e))
        if solution.interval is not None:
            check_time("solution", solution.interval)
    elif kind == "cot":
        if not isinstance(sol, str) or not sol.strip():
            fail("solution", "a CoT record's solution must be a non-empty string")
        cot = sol
    else:  # tool_cot
        if not (isinstance(sol, list) and len(sol) == 2 and all(isinstance(t, str) and t.strip() for t in sol)):
            fail("solution", "a Tool-CoT record's solution must be a list of 2 non-empty assistant turns")
        observation = raw.get("observation")
        if observation is not None:
            if not isinstance(observation, str) or not observation.strip():
                fail("observation", f"must be a non-empty string (a text tool's answer), got {observation!r}")
            if "tool_params" in raw:
                fail("observation", "a Tool-CoT record has either a clip (tool_params) or a text observation, not both")
            params = None
        else:
            if "tool_params" not in raw:
                fail("tool_params", "missing (expected '(start, end)', or a text 'observation')")
            try:
                params = parse_interval(raw["tool_params"])
            except ValueError as e:
                fail("tool_params", str(e))
            check_time("tool_params", params)
        answer = raw.get("answer")
        if not isinstance(answer, str) or not answer.strip():
            fail("answer", f"must be a non-empty string, got {answer!r}")
        tool = ToolTrajectory(turns=(sol[0], sol[1]), tool_params=params, answer=answer, observation=observation)
        solution = Solution(answer=answer)

    use_tool = raw.get("use_tool", False)
    if not isinstance(use_tool, bool):
        fail("use_tool", f"must be true or false, got {use_tool!r}")
    if use_tool and kind == "rl":
        fail("use_tool", "only SFT records (CoT) take it; RL prompts follow rl.use_tools")

    extra = {k: v for k, v in raw.items() if k not in _KNOWN_KEYS}
    if qkey != "text":
        extra["_question_key"] = qkey  # written back under the same key
    return Record(
        kind=kind, media_type=media_type, media=media, media_path=media_path,
        question=question, data_source=data_source, duration=duration, options=tuple(options),
        solution=solution, cot=cot, tool=tool, video_kwargs=dict(video_kwargs), use_tool=use_tool,
        extra=extra,
        file=str(file), index=index,
    )


def _parse_rl_solution(sol: Any) -> Solution:
    if isinstance(sol, str):
        if not sol.strip():
            raise ValueError("answer is empty")
        return Solution(answer=sol)
    if isinstance(sol, list):
        return Solution(interval=parse_interval(sol))
    if isinstance(sol, Mapping):
        unknown = set(sol) - {"answer", "interval"}
        if unknown or not sol:
            raise ValueError(f"object form takes 'answer' and/or 'interval', got keys {sorted(sol)}")
        answer = sol.get("answer")
        if answer is not None and (not isinstance(answer, str) or not answer.strip()):
            raise ValueError(f"'answer' must be a non-empty string, got {answer!r}")
        interval = parse_interval(sol["interval"]) if "interval" in sol else None
        return Solution(answer=answer, interval=interval)
    raise ValueError(f"expected [start, end], an answer string or an object, got {type(sol).__name__}")


def record_to_json(rec: Record) -> dict[str, Any]:
    """The inverse of :func:`parse_record` (``parse_record(record_to_json(r)) == r``)."""
    extra = dict(rec.extra)
    qkey = extra.pop("_question_key", "text")
    out: dict[str, Any] = {rec.media_type: rec.media}
    if rec.duration is not None:
        out["duration"] = rec.duration
    out[qkey] = rec.question
    out["data_source"] = rec.data_source
    if rec.options:
        out["options"] = list(rec.options)
    if rec.video_kwargs:
        out["video_kwargs"] = dict(rec.video_kwargs)
    if rec.use_tool:
        out["use_tool"] = True
    if rec.kind == "cot":
        out["solution"] = rec.cot
    elif rec.kind == "tool_cot":
        assert rec.tool is not None
        out["solution"] = list(rec.tool.turns)
        if rec.tool.observation is not None:
            out["observation"] = rec.tool.observation
        else:
            s, e = rec.tool.tool_params
            out["tool_params"] = f"({s:.2f}, {e:.2f})" if (round(s, 2), round(e, 2)) == (s, e) else f"({s!r}, {e!r})"
        out["answer"] = rec.tool.answer
    else:
        assert rec.solution is not None
        sol = rec.solution
        if sol.answer is not None and sol.interval is not None:
            out["solution"] = {"answer": sol.answer, "interval": list(sol.interval)}
        elif sol.interval is not None:
            out["solution"] = list(sol.interval)
        else:
            out["solution"] = sol.answer
    out.update(extra)
    return out


# --------------------------------------------------------------------------- files


def read_raw(path: str | os.PathLike) -> list[Any]:
    """The raw objects of a JSON list, ``{"data": [...]}``, or JSONL file.

    Raises :class:`DataFileError` for a file that cannot be read as a whole; a JSONL line that
    is not JSON is kept as a ``BadLine`` marker so the record index still counts it.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataFileError(f"{path}: cannot read: {e}") from e
    if not text.strip():
        return []
    if path.suffix != ".jsonl":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            # a ".json" file that really is JSONL (one object per line) is common: fall through
            if not text.lstrip().startswith("{") or "\n" not in text.strip():
                raise DataFileError(f"{path}: not valid JSON: {e}") from e
        else:
            if isinstance(data, list):
                return data
            if isinstance(data, Mapping) and isinstance(data.get("data"), list):
                return data["data"]
            if isinstance(data, Mapping):
                return [data]
            raise DataFileError(f"{path}: top level must be a list of records, got {type(data).__name__}")
    rows = [row for _, row in parse_lines(text)]
    if rows and all(isinstance(r, BadLine) for r in rows):
        raise DataFileError(f"{path}: neither JSON nor JSONL (line 1: {rows[0].error})")
    return rows


def scan_records(
    path: str | os.PathLike,
    root: str | os.PathLike,
    *,
    kind: Kind | None = None,
    time_tolerance: float = TIME_TOLERANCE,
) -> tuple[list[Record], list[Problem]]:
    """Parse every record of a file; bad ones become :class:`Problem` entries and are skipped."""
    records: list[Record] = []
    problems: list[Problem] = []
    for i, raw in enumerate(read_raw(path)):
        if isinstance(raw, BadLine):
            problems.append(Problem(str(path), i, "<line>", f"line {raw.lineno} is not JSON: {raw.error}"))
            continue
        try:
            records.append(
                parse_record(raw, root=root, index=i, file=str(path), kind=kind, time_tolerance=time_tolerance)
            )
        except RecordError as e:
            problems.append(e.as_problem())
    return records, problems


def load_records(
    path: str | os.PathLike,
    root: str | os.PathLike,
    *,
    kind: Kind | None = None,
    skip_bad: bool = False,
) -> list[Record]:
    """All records of a file; the first bad one raises :class:`RecordError` unless ``skip_bad``."""
    records, problems = scan_records(path, root, kind=kind)
    if problems and not skip_bad:
        p = problems[0]
        raise RecordError(p.file, p.index, p.field, p.message + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""))
    return records


def write_records(path: str | os.PathLike, records: Iterable[Record]) -> None:
    """Write records as JSONL (``.jsonl``) or a JSON list (anything else)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [record_to_json(r) for r in records]
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        if path.suffix == ".jsonl":
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            json.dump(rows, f, ensure_ascii=False, indent=1)
    tmp.replace(path)


def count_by_source(records: Sequence[Record]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r.data_source] = counts.get(r.data_source, 0) + 1
    return dict(sorted(counts.items()))
