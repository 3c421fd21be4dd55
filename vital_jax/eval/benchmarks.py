"""Benchmark registry: name → annotation loader + metric set, all mapped to one :class:`Sample`.

``load_benchmark(name, path) -> list[Sample]``; ``BENCHMARKS[name].metric_set`` says how
:mod:`vital_jax.eval.scoring` aggregates. Every loader also accepts VITAL's own MTVR-format files
(``data_source`` + ``solution``, see :mod:`vital_jax.data.records`), the form VITAL's eval data
ships in. Layouts accepted besides (field names from each benchmark's public release):

=================  ============================================================================
charades_sta       ``vid start end##sentence`` text lines (the original release; no duration);
activitynet        ``{video_id: {"duration", "timestamps": [[s, e], …], "sentences": […]}}``
                   (ActivityNet Captions; also common for Charades-STA JSON); or a list of
                   ``{video|video_id|vid, query|sentence|caption|question, timestamp|span|
                   interval|segment|relevant_windows, duration?}``
vidchapters        ``{video_id: {"duration", "chapters": [{"label", "time"}, …]}}`` (one sample
                   per chapter, ending where the next starts) or the list form above
rextime            list of ``{qid, vid, duration, question, options, ans, span, category}``
                   (grounded QA when ``options``/``ans`` are present)
vue_tr             list of ``{query_id, video_id, duration, query, answer: [[s, e], …]}``
                   (several gold segments: set IoU against their union)
nextgqa            ``val.csv``/``test.csv`` (``video_id, question, answer, qid, type, a0…a4``)
                   with ``gsub_<split>.json`` (``{video_id: {"duration", "location": {qid:
                   [[s, e], …]}}}``) beside it; or a merged JSON list
videomme           flat rows ``{video_id, videoID, duration, domain, sub_category, question_id,
                   task_type, question, options, answer}`` or per-video ``{…, "questions": […]}``
mvbench            per-task lists ``{video, question, candidates, answer (option text)}``; the
                   task (category) is the file name, or ``{task: [...]}`` in one file
longvideobench     ``lvb_val.json``: ``{id, video_id, question, candidates, correct_choice,
                   duration, duration_group, question_category, topic_category}``
videommmu          ``{id, question, options, answer, question_type}`` (category: a ``category``
                   / ``track`` field, else the file name; open questions scored as text)
mmvu               ``{id, video, question, choices: {"A": …}, answer, question_type,
                   metadata: {subject}}``
vsibench           ``{id, scene_name, question_type, question, options|null, ground_truth}``
                   (with options: a letter; without: a number, scored by MRA)
longvideo_reason   ``{problem_id, videos, problem, answer, problem_type}`` (options inside the
                   problem text; ``answer`` may be ``<answer>B</answer>``)
synthetic          ``vital synth``'s ``eval.jsonl`` (MTVR records with ``task``)
=================  ============================================================================

JSON files may be a list, ``{"data": [...]}``, or JSONL. An unrecognised layout raises
:class:`AnnotationLayoutError` naming the file, the keys found and the fields expected.
Sample ids: the benchmark's own id where it has one, else the record's 0-based index in the file
(``vital eval`` writes predictions under the same ids, by loading through this module).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vital_jax.data.records import DataFileError, RecordError, parse_record, read_raw
from vital_jax.errors import VitalError

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
TASKS = ("grounding", "grounded_qa", "multiple_choice", "numeric", "open")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sample:
    """One benchmark item, whatever the source layout.

    ``task`` picks the scoring: ``grounding`` (IoU against ``intervals``), ``grounded_qa``
    (letter and IoU), ``multiple_choice`` (``answer`` is a letter), ``numeric`` (``answer`` is a
    number as text), ``open`` (normalised text match). ``groups`` holds extra breakdown keys
    (e.g. Video-MME's duration group) besides the primary ``category``.
    """

    id: str
    task: str
    video: str | None
    question: str
    options: tuple[str, ...] = ()
    answer: str | None = None
    intervals: tuple[tuple[float, float], ...] = ()
    category: str | None = None
    duration: float | None = None
    groups: Mapping[str, str] = dataclasses.field(default_factory=dict)
    data_source: str | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"Sample.task must be one of {TASKS}, got {self.task!r}")

    @property
    def interval(self) -> tuple[float, float] | None:
        return self.intervals[0] if self.intervals else None


class AnnotationLayoutError(VitalError, ValueError):
    """A file that is not in any layout the benchmark's loader knows."""

    def __init__(self, file: str | Path, benchmark: str, found: Any, expected: Sequence[str]):
        self.file, self.benchmark = str(file), benchmark
        if isinstance(found, Mapping):
            found_s = f"keys {sorted(map(str, found))[:20]}"
        else:
            found_s = f"a {type(found).__name__}"
        lines = "\n".join(f"  - {e}" for e in expected)
        super().__init__(
            f"{file}: not a known {benchmark} annotation layout (first record has {found_s}). "
            f"Expected one of:\n{lines}\n  - MTVR records: video, duration, text|problem|question, data_source, solution"
        )


@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str
    metric_set: str                  # grounding | grounded_qa | mcqa | synthetic
    loader: Callable[[Path], list[Sample]]
    multi_gt: str = "max"            # several gold segments: best IoU ("max") or set IoU ("union")
    numeric: str = "exact"           # numeric answers: "exact" (one decimal) or "mra" (VSI-Bench)
    description: str = ""


BENCHMARKS: dict[str, Benchmark] = {}


def load_benchmark(name: str, path: str | Path) -> list[Sample]:
    """All samples of an annotation file; raises KeyError (unknown name), DataFileError (cannot
    read), AnnotationLayoutError (unknown layout) or ValueError (a bad record, with its index)."""
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"{path}: no such file")
    samples = BENCHMARKS[name].loader(path)
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"{path}: sample id {dup!r} appears more than once")
    return samples


# --------------------------------------------------------------------------- helpers


def _first(d: Mapping, keys: Sequence[str], default=None):
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return default


def _float(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _segments(v: Any) -> tuple[tuple[float, float], ...]:
    """``[s, e]``, ``[[s, e], …]`` or ``"(s, e)"`` → segments; start/end order is normalised."""
    if isinstance(v, str):
        nums = re.findall(r"-?\d+(?:\.\d+)?", v)
        if len(nums) < 2 or len(nums) % 2:
            raise ValueError(f"cannot read segments from {v!r}")
        v = [[float(a), float(b)] for a, b in zip(nums[0::2], nums[1::2])]
    if isinstance(v, Sequence) and len(v) == 2 and all(_float(x) is not None for x in v):
        v = [v]
    if not (isinstance(v, Sequence) and v and all(isinstance(p, Sequence) and len(p) == 2 for p in v)):
        raise ValueError(f"expected [start, end] or [[start, end], ...], got {v!r}")
    out = []
    for a, b in v:
        fa, fb = _float(a), _float(b)
        if fa is None or fb is None:
            raise ValueError(f"segment bounds must be numbers, got {[a, b]!r}")
        out.append((min(fa, fb), max(fa, fb)))
    return tuple(out)


def _letter(gold: Any, options: Sequence[str]) -> str:
    """Gold as an option letter: a letter, ``"(B)"``, an index, or one option's text."""
    if isinstance(gold, bool):
        raise ValueError(f"bad answer {gold!r}")
    if isinstance(gold, int):
        if not 0 <= gold < max(len(options), 1) or gold >= len(LETTERS):
            raise ValueError(f"answer index {gold} out of range for {len(options)} options")
        return LETTERS[gold]
    s = str(gold).strip()
    m = re.fullmatch(r"<answer>\s*(.*?)\s*</answer>", s, re.DOTALL)
    if m:
        s = m.group(1)
    m = re.fullmatch(r"[(\[]?([A-Z])[)\].:]?(?:\s.*)?", s, re.DOTALL)
    if m and (not options or LETTERS.index(m.group(1)) < len(options)):
        return m.group(1)
    norm = re.sub(r"[^a-z0-9]+", " ", s.lower()).strip()
    for i, opt in enumerate(options):
        text = re.sub(r"^\s*[(\[]?[A-Z][)\].:]\s+", "", opt, count=1)
        if norm and norm == re.sub(r"[^a-z0-9]+", " ", text.lower()).strip():
            return LETTERS[i]
    raise ValueError(f"answer {gold!r} is neither an option letter nor one of the options")


def _rows(path: Path) -> list[Any]:
    rows = read_raw(path)
    bad = next((r for r in rows if not isinstance(r, Mapping)), None)
    if bad is not None:
        raise DataFileError(f"{path}: expected JSON objects, found {type(bad).__name__}")
    return rows


def _convert_all(path: Path, rows: Sequence[Mapping], fn: Callable[[int, Mapping], Sample]) -> list[Sample]:
    out = []
    for i, r in enumerate(rows):
        try:
            out.append(fn(i, r))
        except (KeyError, ValueError, TypeError) as e:
            if isinstance(e, AnnotationLayoutError):
                raise
            raise ValueError(f"{path}: record {i}: {e}") from e
    return out


def _is_mtvr(r: Mapping) -> bool:
    return "data_source" in r and "solution" in r


def _from_mtvr(path: Path, rows: Sequence[Mapping]) -> list[Sample]:
    out = []
    for i, raw in enumerate(rows):
        try:
            rec = parse_record(raw, root=path.parent, index=i, file=str(path), kind="rl")
        except RecordError as e:
            raise ValueError(str(e)) from e
        sol = rec.solution
        extra = dict(rec.extra)
        task = extra.get("task")
        if sol.answer is not None and sol.interval is not None:
            kind = "grounded_qa"
        elif sol.interval is not None:
            kind = "grounding"
        elif rec.options or re.fullmatch(r"[(\[]?[A-Z][)\].:]?", sol.answer.strip()):
            kind = "multiple_choice"
        elif _float(sol.answer.replace(",", "")) is not None:
            kind = "numeric"
        else:
            kind = "open"
        answer = sol.answer
        if kind in ("multiple_choice", "grounded_qa"):
            answer = _letter(answer, rec.options)
        sid = extra.get("id", extra.get("qid"))
        out.append(Sample(
            id=str(sid) if sid is not None else str(i), task=kind, video=rec.media,
            question=rec.question, options=rec.options, answer=answer,
            intervals=(sol.interval,) if sol.interval is not None else (),
            category=str(task) if task is not None else rec.data_source, duration=rec.duration,
            groups={k: str(extra[k]) for k in ("difficulty",) if k in extra},
            data_source=rec.data_source,
        ))
    return out


def _load_rows_with(path: Path, name: str, expected: Sequence[str],
                    detect: Callable[[Mapping], bool], fn: Callable[[int, Mapping], Sample],
                    rows: Sequence[Mapping] | None = None) -> list[Sample]:
    rows = _rows(path) if rows is None else rows
    if not rows:
        return []
    if _is_mtvr(rows[0]):
        return _from_mtvr(path, rows)
    if not detect(rows[0]):
        raise AnnotationLayoutError(path, name, rows[0], expected)
    return _convert_all(path, rows, fn)


# --------------------------------------------------------------------------- grounding

_VIDEO_KEYS = ("video", "video_id", "vid", "video_name", "videoID", "video_path")
_QUERY_KEYS = ("query", "sentence", "caption", "description", "question", "text", "problem")
_SPAN_KEYS = ("timestamp", "timestamps", "span", "interval", "segment", "times", "relevant_windows", "gt_span")
_GROUNDING_LIST = (
    "list of {video|video_id|vid, query|sentence|caption|question, "
    "timestamp|span|interval|segment|relevant_windows: [s, e], duration?}"
)


def _grounding_row(i: int, r: Mapping) -> Sample:
    sid = _first(r, ("id", "qid", "query_id", "question_id"), i)
    return Sample(
        id=str(sid), task="grounding", video=_str_or_none(_first(r, _VIDEO_KEYS)),
        question=str(_first(r, _QUERY_KEYS)), intervals=_segments(_first(r, _SPAN_KEYS)),
        category=_str_or_none(_first(r, ("category", "task", "type"))), duration=_float(r.get("duration")),
    )


def _str_or_none(v) -> str | None:
    return None if v is None else str(v)


def _detect_grounding(r: Mapping) -> bool:
    return _first(r, _QUERY_KEYS) is not None and _first(r, _SPAN_KEYS) is not None


def _captions_dict(path: Path, data: Mapping) -> list[Sample]:
    """ActivityNet-Captions style ``{video: {duration, timestamps, sentences}}``."""
    out = []
    for vid, ann in data.items():
        stamps, sents = ann["timestamps"], ann["sentences"]
        if len(stamps) != len(sents):
            raise ValueError(f"{path}: video {vid}: {len(stamps)} timestamps but {len(sents)} sentences")
        for j, (ts, sent) in enumerate(zip(stamps, sents)):
            out.append(Sample(id=f"{vid}_{j}", task="grounding", video=str(vid), question=str(sent).strip(),
                              intervals=_segments(ts), duration=_float(ann.get("duration"))))
    return out


def _chapters_dict(path: Path, data: Mapping) -> list[Sample]:
    """VidChapters ``{video: {duration, chapters: [{label, time}]}}``: chapter i spans to i+1."""
    out = []
    for vid, ann in data.items():
        dur = _float(ann.get("duration"))
        chapters = sorted(ann["chapters"], key=lambda c: float(c["time"]))
        for j, ch in enumerate(chapters):
            start = float(ch["time"])
            end = float(chapters[j + 1]["time"]) if j + 1 < len(chapters) else dur
            if end is None:
                raise ValueError(f"{path}: video {vid}: the last chapter needs the video's duration")
            out.append(Sample(id=f"{vid}_{j}", task="grounding", video=str(vid), question=str(ch["label"]),
                              intervals=((start, end),), duration=dur))
    return out


def _read_json_any(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise DataFileError(f"{path}: cannot read: {e}") from e
    except json.JSONDecodeError:
        return None  # JSONL or text: the caller decides


def _keyed_by_video(data: Any, field: str) -> bool:
    if not isinstance(data, Mapping) or not data or "data" in data:
        return False
    first = next(iter(data.values()))
    return isinstance(first, Mapping) and field in first


def _grounding_loader(name: str, extra_layouts: Sequence[str] = ()):
    expected = (*extra_layouts, "{video_id: {duration, timestamps: [[s, e], ...], sentences: [...]}}", _GROUNDING_LIST)

    def load(path: Path) -> list[Sample]:
        if path.suffix == ".txt":
            return _charades_txt(path)
        data = _read_json_any(path)
        if _keyed_by_video(data, "timestamps"):
            return _captions_dict(path, data)
        if _keyed_by_video(data, "chapters"):
            return _chapters_dict(path, data)
        return _load_rows_with(path, name, expected, _detect_grounding, _grounding_row)

    return load


_CHARADES_LINE = re.compile(r"^\s*(\S+)\s+(-?\d+(?:\.\d+)?)\s+(-?\d+(?:\.\d+)?)\s*##(.*)$")


def _charades_txt(path: Path) -> list[Sample]:
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        m = _CHARADES_LINE.match(line)
        if m is None:
            raise AnnotationLayoutError(path, "charades_sta", {"line": line[:60]},
                                        ["text lines 'VIDEO_ID START END##sentence' (Charades-STA)"])
        out.append(Sample(id=str(len(out)), task="grounding", video=m.group(1), question=m.group(4).strip(),
                          intervals=_segments([m.group(2), m.group(3)])))
    return out


def _rextime_row(i: int, r: Mapping) -> Sample:
    options = tuple(str(o) for o in r.get("options") or ())
    ans = _first(r, ("ans", "answer_letter"))
    has_qa = bool(options) and ans is not None
    return Sample(
        id=str(_first(r, ("qid", "id"), i)), task="grounded_qa" if has_qa else "grounding",
        video=_str_or_none(_first(r, ("vid", "video", "video_id"))), question=str(r["question"]),
        options=options if has_qa else (), answer=_letter(ans, options) if has_qa else None,
        intervals=_segments(_first(r, ("span", "relevant_windows", "timestamp"))),
        category=_str_or_none(r.get("category")), duration=_float(r.get("duration")),
        groups={"source": str(r["source"])} if "source" in r else {},
    )


def _load_rextime(path: Path) -> list[Sample]:
    return _load_rows_with(
        path, "rextime", ["list of {qid, vid, duration, question, options, ans, span: [s, e], category}", _GROUNDING_LIST],
        lambda r: "question" in r and _first(r, ("span", "relevant_windows", "timestamp")) is not None, _rextime_row)


def _vue_row(i: int, r: Mapping) -> Sample:
    return Sample(
        id=str(_first(r, ("query_id", "id"), i)), task="grounding", video=_str_or_none(r.get("video_id")),
        question=str(r["query"]), intervals=_segments(r["answer"]), duration=_float(r.get("duration")),
        category=_str_or_none(_first(r, ("category", "query_type"))),
        groups={k: str(r[k]) for k in ("duration_category", "query_format") if k in r},
    )


def _load_vue_tr(path: Path) -> list[Sample]:
    return _load_rows_with(
        path, "vue_tr", ["list of {query_id, video_id, duration, query, answer: [[s, e], ...]}", _GROUNDING_LIST],
        lambda r: "query" in r and "answer" in r or _detect_grounding(r),
        lambda i, r: _vue_row(i, r) if "query" in r and "answer" in r else _grounding_row(i, r))


# --------------------------------------------------------------------------- NExT-GQA

_NEXTGQA_CSV = "val.csv/test.csv with columns video_id, question, answer, qid, type, a0..a4, and gsub_<split>.json beside it"
_NEXTGQA_JSON = "list of {video_id, qid, question, options|a0..a4, answer, location|span: [[s, e], ...], duration, type}"


def _nextgqa_options(r: Mapping) -> tuple[str, ...]:
    if r.get("options"):
        return tuple(str(o) for o in r["options"])
    return tuple(str(r[f"a{k}"]) for k in range(10) if f"a{k}" in r and str(r[f"a{k}"]).strip())


def _nextgqa_answer(r: Mapping, options: Sequence[str]) -> str:
    ans = r.get("answer")
    if isinstance(ans, str) and re.fullmatch(r"\d+", ans.strip()) and not any(o.strip() == ans.strip() for o in options):
        ans = int(ans)  # NExT-QA's answer index
    return _letter(ans, options)


def _load_nextgqa(path: Path) -> list[Sample]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        need = {"video_id", "question", "answer", "qid"}
        if not rows or not need <= set(rows[0]):
            raise AnnotationLayoutError(path, "nextgqa", rows[0] if rows else {}, [_NEXTGQA_CSV, _NEXTGQA_JSON])
        split = path.stem
        cands = [path.parent / f"gsub_{split}.json", *sorted(path.parent.glob("gsub_*.json"))]
        gsub_path = next((c for c in cands if c.exists()), None)
        if gsub_path is None:
            raise DataFileError(f"{path}: NExT-GQA needs its time spans: no gsub_{split}.json in {path.parent}")
        gsub = json.loads(gsub_path.read_text(encoding="utf-8"))
        out = []
        for i, r in enumerate(rows):
            vid, qid = str(r["video_id"]), str(r["qid"])
            ann = gsub.get(vid, {})
            locs = ann.get("location", {}).get(qid)
            if locs is None:
                continue  # NExT-GQA grounds a subset of the QAs: only those are benchmark samples
            options = _nextgqa_options(r)
            try:
                out.append(Sample(
                    id=f"{vid}_{qid}", task="grounded_qa", video=vid, question=str(r["question"]).strip(),
                    options=options, answer=_nextgqa_answer(r, options), intervals=_segments(locs),
                    category=_str_or_none(r.get("type")), duration=_float(ann.get("duration")),
                ))
            except ValueError as e:
                raise ValueError(f"{path}: row {i}: {e}") from e
        return out

    def row(i: int, r: Mapping) -> Sample:
        options = _nextgqa_options(r)
        vid, qid = r.get("video_id", r.get("video")), r.get("qid", i)
        return Sample(
            id=str(r.get("id", f"{vid}_{qid}")), task="grounded_qa", video=_str_or_none(vid),
            question=str(r["question"]), options=options, answer=_nextgqa_answer(r, options),
            intervals=_segments(_first(r, ("location", "span", "relevant_windows", "timestamps"))),
            category=_str_or_none(r.get("type")), duration=_float(r.get("duration")),
        )

    return _load_rows_with(
        path, "nextgqa", [_NEXTGQA_CSV, _NEXTGQA_JSON],
        lambda r: "question" in r and "answer" in r and _first(r, ("location", "span", "relevant_windows", "timestamps")) is not None,
        row)


# --------------------------------------------------------------------------- multiple choice


def _mc(sid, video, question, options, answer, category=None, duration=None, groups=None) -> Sample:
    options = tuple(str(o) for o in options)
    return Sample(id=str(sid), task="multiple_choice", video=_str_or_none(video), question=str(question),
                  options=options, answer=_letter(answer, options), category=_str_or_none(category),
                  duration=_float(duration), groups=groups or {})


def _load_videomme(path: Path) -> list[Sample]:
    expected = ["list of {video_id, videoID, duration, domain, sub_category, question_id, task_type, question, options, answer}",
                "list of {video_id, videoID, duration, domain, sub_category, questions: [{question_id, task_type, question, options, answer}]}"]
    if path.suffix == ".parquet":
        raise DataFileError(f"{path}: parquet is not read here; convert it to JSON (e.g. with pandas: "
                            f"pd.read_parquet(p).to_json('videomme.json', orient='records'))")
    rows = _rows(path)
    if rows and "questions" in rows[0]:
        rows = [{**{k: v for k, v in vid.items() if k != "questions"}, **q} for vid in rows for q in vid["questions"]]

    def row(i, r):
        groups = {k: str(r[k]) for k in ("duration", "domain", "sub_category") if r.get(k) is not None}
        return _mc(r.get("question_id", i), r.get("videoID", r.get("video_id")), r["question"], r["options"],
                   r["answer"], category=r.get("task_type"), duration=None, groups=groups)

    return _load_rows_with(path, "videomme", expected, lambda r: {"question", "options", "answer"} <= set(r), row, rows)


def _load_mvbench(path: Path) -> list[Sample]:
    expected = ["list of {video, question, candidates, answer (the correct candidate's text)}; task = file name",
                "{task_name: [{video, question, candidates, answer}, ...]}"]
    data = _read_json_any(path)
    if isinstance(data, Mapping) and data and all(isinstance(v, list) for v in data.values()) and "data" not in data:
        out = []
        for task, items in data.items():
            for i, r in enumerate(items):
                if not {"question", "candidates", "answer"} <= set(r):
                    raise AnnotationLayoutError(path, "mvbench", r, expected)
                out.append(_mc(r.get("id", f"{task}_{i}"), r.get("video"), r["question"], r["candidates"],
                               r["answer"], category=task))
        return out
    task = path.stem
    return _load_rows_with(
        path, "mvbench", expected, lambda r: {"question", "candidates", "answer"} <= set(r),
        lambda i, r: _mc(r.get("id", f"{task}_{i}"), r.get("video"), r["question"], r["candidates"], r["answer"],
                         category=r.get("task_type", r.get("task", task))))


def _load_longvideobench(path: Path) -> list[Sample]:
    def row(i, r):
        groups = {k: str(r[k]) for k in ("duration_group", "topic_category", "level") if r.get(k) is not None}
        return _mc(r.get("id", i), r.get("video_path", r.get("video_id")), r["question"], r["candidates"],
                   r["correct_choice"], category=r.get("question_category"), duration=r.get("duration"), groups=groups)

    return _load_rows_with(
        path, "longvideobench",
        ["list of {id, video_id, question, candidates, correct_choice, duration, duration_group, question_category}"],
        lambda r: {"question", "candidates", "correct_choice"} <= set(r), row)


def _qa_or_open(sid, video, question, options, answer, category, groups=None, duration=None) -> Sample:
    """A multiple-choice sample when there are options, else numeric/open by the answer's form."""
    if options:
        return _mc(sid, video, question, options, answer, category, duration, groups)
    ans = str(answer).strip()
    task = "numeric" if _float(ans.replace(",", "")) is not None else "open"
    return Sample(id=str(sid), task=task, video=_str_or_none(video), question=str(question), answer=ans,
                  category=_str_or_none(category), groups=groups or {}, duration=_float(duration))


def _load_videommmu(path: Path) -> list[Sample]:
    def row(i, r):
        sid = r.get("id", i)
        subject = re.match(r"^[a-z]+_(.+)_\d+$", str(sid))
        groups = {"subject": subject.group(1)} if subject else {}
        options = r.get("options") or ()
        if r.get("question_type") == "open":
            options = ()
        return _qa_or_open(sid, r.get("video", r.get("link_selected")), r["question"], options, r["answer"],
                           r.get("category", r.get("track", path.stem)), groups)

    return _load_rows_with(path, "videommmu", ["list of {id, question, options, answer, question_type}"],
                           lambda r: {"question", "answer"} <= set(r), row)


def _load_mmvu(path: Path) -> list[Sample]:
    def row(i, r):
        choices = r.get("choices") or {}
        options = [f"{k}. {v}" for k, v in sorted(choices.items())] if isinstance(choices, Mapping) else list(choices)
        if r.get("question_type") == "open-ended":
            options = []
        meta = r.get("metadata") or {}
        return _qa_or_open(r.get("id", i), r.get("video"), r["question"], options, r["answer"],
                           meta.get("subject", r.get("subject")),
                           {k: str(meta[k]) for k in ("discipline",) if k in meta})

    return _load_rows_with(path, "mmvu", ["list of {id, video, question, choices: {A: ..}, answer, question_type, metadata: {subject}}"],
                           lambda r: {"question", "answer"} <= set(r) and ("choices" in r or "question_type" in r), row)


def _load_vsibench(path: Path) -> list[Sample]:
    def row(i, r):
        return _qa_or_open(r.get("id", i), r.get("scene_name"), r["question"], r.get("options") or (),
                           r["ground_truth"], r.get("question_type"), {"dataset": str(r["dataset"])} if "dataset" in r else {})

    return _load_rows_with(path, "vsibench", ["list of {id, scene_name, question_type, question, options|null, ground_truth}"],
                           lambda r: {"question", "ground_truth"} <= set(r), row)


_OPTION_LINE = re.compile(r"^\s*\(?([A-Z])[).:]\s*(.+?)\s*$", re.MULTILINE)


def _load_longvideo_reason(path: Path) -> list[Sample]:
    def row(i, r):
        question = str(_first(r, ("problem", "question")))
        options = r.get("options")
        if not options:  # options live inside the problem text, one per line ("A. ...")
            found = _OPTION_LINE.findall(question)
            options = [f"{l}. {t}" for l, t in found]
        category = _first(r, ("reasoning_type", "category", "problem_type"))
        return _mc(_first(r, ("problem_id", "id", "question_id"), i), _first(r, ("videos", "video")), question,
                   options, r["answer"], category=category)

    return _load_rows_with(path, "longvideo_reason", ["list of {problem_id, videos, problem (with 'A. ...' option lines), answer, problem_type}"],
                           lambda r: _first(r, ("problem", "question")) is not None and "answer" in r, row)


def _load_synthetic(path: Path) -> list[Sample]:
    rows = _rows(path)
    if rows and not _is_mtvr(rows[0]):
        raise AnnotationLayoutError(path, "synthetic", rows[0], ["`vital synth` eval.jsonl records (MTVR: data_source, solution, task)"])
    return _from_mtvr(path, rows)


def _register(b: Benchmark) -> None:
    BENCHMARKS[b.name] = b


for _name, _desc, _layouts in (
    ("charades_sta", "Charades-STA temporal grounding", ("text lines 'VIDEO_ID START END##sentence'",)),
    ("activitynet", "ActivityNet Captions temporal grounding", ()),
    ("vidchapters", "VidChapters-7M chapter grounding", ("{video_id: {duration, chapters: [{label, time}, ...]}}",)),
):
    _register(Benchmark(_name, "grounding", _grounding_loader(_name, _layouts), description=_desc))
_register(Benchmark("rextime", "grounding", _load_rextime, description="ReXTime reasoning-across-time grounding (+ MC)"))
_register(Benchmark("vue_tr", "grounding", _load_vue_tr, multi_gt="union", description="VUE-TR temporal retrieval"))
_register(Benchmark("nextgqa", "grounded_qa", _load_nextgqa, description="NExT-GQA grounded QA"))
for _name, _fn, _desc in (
    ("videomme", _load_videomme, "Video-MME"),
    ("mvbench", _load_mvbench, "MVBench"),
    ("longvideobench", _load_longvideobench, "LongVideoBench"),
    ("videommmu", _load_videommmu, "VideoMMMU"),
    ("mmvu", _load_mmvu, "MMVU"),
    ("longvideo_reason", _load_longvideo_reason, "LongVideo-Reason"),
):
    _register(Benchmark(_name, "mcqa", _fn, description=_desc))
_register(Benchmark("vsibench", "mcqa", _load_vsibench, numeric="mra", description="VSI-Bench (MC + numeric by MRA)"))
_register(Benchmark("synthetic", "synthetic", _load_synthetic, description="`vital synth` held-out suite"))
