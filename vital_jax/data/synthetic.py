"""A synthetic long-video task suite: the embedded default data set.

Why it looks the way it does. A tiny model (a few M parameters, minutes of CPU) must be able to
learn these tasks a little, and the clip tool must *matter*, as it does on real long videos:

- **Short salient events in long videos.** A target event (an object appears, a white box changes
  colour, a ball crosses a line, or a square flashes N times) lasts 1–3 s inside a 30–180 s video.
  Uniform sampling of the whole video at a coarse rate (e.g. 16 frames) usually misses it or sees
  one frame of it; a 2 fps clip of the right window shows all of it.
- **A coarse cue.** Every target event sits inside a *cue window* (8–16 s) during which a white bar
  is drawn across the top of the frame. Coarse sampling catches the bar, so a model can learn
  *where* to look; only the dense clip tells *what* happened and *exactly when*. Decoy events
  (other event types, other colours) get no bar.
- **Small vocabularies.** Four salient colours (also the four multiple-choice letters, in a fixed
  order), two shapes, counts 1–4, intervals written ``(s.s, e.e)``, templated questions and
  short reasoning (one sentence a turn: every generated token is one a small model can get wrong); big solid colours on dark flat backgrounds, muted moving distractors.
- **Difficulty levels** 1–3 shorten the event (3 → 1 s), add moving distractors (1 → 4) and
  decoy events (0 → 2), and widen the cue window, so DGRPO's difficulty weights and
  DeepVideo-R1's augmentation have something to act on.

Everything is a pure function of ``(seed, video index)``: a video's scene does not depend on how
many videos are generated, so ``--num 10`` is a prefix of ``--num 300``.

Outputs of :func:`generate` (all paths relative to ``out``, which is the media root)::

    videos/synth_00000.mp4 ...   H.264, ``size``×``size``, ``fps`` (2 by default, the tool's rate)
    scenes.jsonl                 ground truth per video (events, boxes, times) for tests
    sft_tool.jsonl               Tool-CoT SFT records (think, tool call, think, answer)
    sft_cot.jsonl                no-tool CoT SFT records
    rl.jsonl                     RL records (train videos)
    eval.jsonl                   RL-format records on held-out videos
    manifest.json                arguments, counts by task and split

Data sources select the reward: ``synthetic/charades`` (temporal IoU), ``synthetic/multiple_choice``
(letter), ``synthetic/numerical`` (count), ``synthetic/nextgqa`` (letter and IoU both).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vital_jax.data.records import Record, Solution, parse_record, write_records

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- vocabulary

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 230),
    "yellow": (240, 220, 40),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
LETTERS: tuple[str, ...] = ("A", "B", "C", "D")
OPTIONS: tuple[str, ...] = tuple(f"{l}. {c}" for l, c in zip(LETTERS, COLOUR_NAMES))
SHAPES: tuple[str, ...] = ("square", "circle")
MUTED: tuple[tuple[int, int, int], ...] = ((110, 100, 90), (90, 110, 120), (120, 90, 110), (100, 120, 100))
BACKGROUNDS: tuple[tuple[int, int, int], ...] = ((30, 30, 40), (40, 35, 30), (25, 40, 35), (35, 35, 35))
WHITE = (250, 250, 250)
LINE = (200, 200, 200)
EVENT_KINDS: tuple[str, ...] = ("appear", "change_colour", "cross_line")
TASKS: tuple[str, ...] = ("grounding", "multiple_choice", "grounded_qa", "counting")
# "synthetic/<family>": counts by source say where records came from, and the reward registry
# reads the part after the slash (charades: IoU scaled (0.2, 0.8); nextgqa: letter and IoU).
DATA_SOURCE = {
    "grounding": "synthetic/charades",
    "multiple_choice": "synthetic/multiple_choice",
    "grounded_qa": "synthetic/nextgqa",
    "counting": "synthetic/numerical",
}
TOOL_NAME = "get_video_clip_frame"
# (event seconds, moving distractors, decoy events, cue window seconds) per difficulty level
LEVELS: dict[int, tuple[tuple[float, float], int, int, tuple[float, float]]] = {
    1: ((2.5, 3.0), 1, 0, (8.0, 10.0)),
    2: ((1.5, 2.0), 2, 1, (10.0, 13.0)),
    3: ((1.0, 1.5), 4, 2, (13.0, 16.0)),
}
TIME_STEP = 0.5  # event times are multiples of this (frame-aligned at 2 and 4 fps)
TOOL_NOISE = 0.2  # tool-call windows in SFT: ground truth ± 20 % noise, as VITAL did
MIN_TOOL_WINDOW = 2.0  # the tool rejects windows of 1 s or less; keep a margin


# --------------------------------------------------------------------------- scene spec


@dataclasses.dataclass(frozen=True)
class Event:
    """One visible event. ``box`` is (x0, y0, x1, y1) pixels; cross_line boxes move (see
    :func:`event_box`)."""

    kind: str            # appear | change_colour | cross_line | flash
    colour: str
    shape: str
    start: float
    end: float
    box: tuple[int, int, int, int]
    target: bool


@dataclasses.dataclass(frozen=True)
class Distractor:
    colour: tuple[int, int, int]
    size: int
    pos: tuple[float, float]     # (x, y) at t = 0
    vel: tuple[float, float]     # pixels per second


@dataclasses.dataclass(frozen=True)
class Scene:
    video_id: str
    duration: float
    fps: float
    size: int
    background: tuple[int, int, int]
    difficulty: int
    family: str                   # "event" (one target event) or "count" (N target flashes)
    cue: tuple[float, float]
    events: tuple[Event, ...]
    distractors: tuple[Distractor, ...]
    split: str                    # train | eval

    @property
    def num_frames(self) -> int:
        return int(round(self.duration * self.fps))

    @property
    def targets(self) -> tuple[Event, ...]:
        return tuple(e for e in self.events if e.target)

    @property
    def target_interval(self) -> tuple[float, float]:
        t = self.targets
        return (min(e.start for e in t), max(e.end for e in t))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Scene":
        d = dict(d)
        d["events"] = tuple(Event(**{**e, "box": tuple(e["box"])}) for e in d["events"])
        d["distractors"] = tuple(
            Distractor(tuple(x["colour"]), x["size"], tuple(x["pos"]), tuple(x["vel"])) for x in d["distractors"]
        )
        d["background"], d["cue"] = tuple(d["background"]), tuple(d["cue"])
        return cls(**d)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SynthConfig:
    num: int = 100
    seed: int = 0
    min_seconds: float = 30.0
    max_seconds: float = 180.0
    size: int = 64
    fps: float = 2.0
    eval_fraction: float = 0.15
    count_fraction: float = 0.25
    difficulty: int | None = None  # None: uniform over LEVELS

    def __post_init__(self):
        if self.num < 1:
            raise ValueError(f"num must be >= 1, got {self.num}")
        if self.size < 32 or self.size % 2:
            raise ValueError(f"size must be even and >= 32, got {self.size}")
        if not 20.0 <= self.min_seconds <= self.max_seconds:
            raise ValueError(f"need 20 <= min_seconds <= max_seconds, got {self.min_seconds}, {self.max_seconds}")
        if not self.fps >= 1.0:
            raise ValueError(f"fps must be >= 1, got {self.fps}")
        if self.difficulty is not None and self.difficulty not in LEVELS:
            raise ValueError(f"difficulty must be one of {sorted(LEVELS)}, got {self.difficulty}")


def _snap(t: float) -> float:
    return round(t / TIME_STEP) * TIME_STEP


def make_scene(cfg: SynthConfig, index: int) -> Scene:
    """The scene of video ``index``: a pure function of ``(cfg.seed, index)`` and the sizes."""
    rng = np.random.default_rng([cfg.seed, index, 0x5EED])
    s = cfg.size
    level = cfg.difficulty or int(rng.integers(1, 4))
    ev_len_rng, n_distract, n_decoys, cue_rng = LEVELS[level]
    duration = float(int(rng.uniform(cfg.min_seconds, cfg.max_seconds + 1e-9)))
    family = "count" if rng.random() < cfg.count_fraction else "event"
    split = "eval" if rng.random() < cfg.eval_fraction else "train"
    bar = s // 8  # the cue bar's rows; events live below it
    big, mid, ball = s // 3, s // 4, s // 5

    def place(w: int) -> tuple[int, int, int, int]:
        x = int(rng.integers(2, s - w - 2))
        y = int(rng.integers(bar + 2, s - w - 2))
        return (x, y, x + w, y + w)

    # cue window first, then the target event(s) inside it
    cue_len = _snap(rng.uniform(*cue_rng))
    cue_start = _snap(rng.uniform(1.0, duration - cue_len - 1.0))
    cue = (cue_start, cue_start + cue_len)
    colours = list(rng.permutation(len(COLOUR_NAMES)))
    target_colour = COLOUR_NAMES[colours[0]]
    events: list[Event] = []
    if family == "event":
        kind = EVENT_KINDS[int(rng.integers(len(EVENT_KINDS)))]
        ev_len = _snap(rng.uniform(*ev_len_rng))
        start = _snap(rng.uniform(cue[0] + 1.0, cue[1] - ev_len - 1.0))
        events.append(_make_event(kind, target_colour, rng, start, start + ev_len, place, s, bar, big, mid, ball, True))
        decoy_kinds = [k for k in EVENT_KINDS if k != kind]
    else:
        count = int(rng.integers(1, 5))
        shape = SHAPES[int(rng.integers(2))]
        box = place(big)
        cue_len = max(cue_len, _snap(3.0 * count + 3.0))
        cue_start = min(cue_start, _snap(duration - cue_len - 1.0))
        cue = (cue_start, cue_start + cue_len)
        t = cue[0] + 1.0 + _snap(rng.uniform(0.0, cue_len - 3.0 * count - 2.0))
        for _ in range(count):
            events.append(Event("flash", target_colour, shape, t, t + 1.0, box, True))
            t += 1.0 + _snap(rng.uniform(1.0, 2.0))
        decoy_kinds = list(EVENT_KINDS)
    # decoys: other kinds, other colours, outside the cue window with 2 s of clearance
    busy = [(cue[0] - 2.0, cue[1] + 2.0)]
    for d in range(n_decoys):
        kind = decoy_kinds[d % len(decoy_kinds)]
        colour = COLOUR_NAMES[colours[1 + d % 3]]
        ev_len = _snap(rng.uniform(*ev_len_rng))
        for _ in range(50):
            start = _snap(rng.uniform(0.5, duration - ev_len - 0.5))
            if all(start + ev_len + 2.0 <= a or start >= b + 2.0 for a, b in busy):
                busy.append((start, start + ev_len))
                events.append(_make_event(kind, colour, rng, start, start + ev_len, place, s, bar, big, mid, ball, False))
                break
    distractors = []
    for _ in range(n_distract):
        size = max(3, s // 8)
        pos = (float(rng.uniform(0, s - size)), float(rng.uniform(bar, s - size)))
        speed = float(rng.uniform(2.0, 6.0)) * s / 64.0
        ang = float(rng.uniform(0, 2 * math.pi))
        distractors.append(Distractor(MUTED[int(rng.integers(len(MUTED)))], size, pos,
                                      (speed * math.cos(ang), speed * math.sin(ang))))
    # one static white box / line at most per video: share the box of the first such event
    events = _share_static_props(events)
    return Scene(
        video_id=f"synth_{index:05d}", duration=duration, fps=cfg.fps, size=s,
        background=BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))], difficulty=level, family=family,
        cue=cue, events=tuple(sorted(events, key=lambda e: e.start)), distractors=tuple(distractors), split=split,
    )


def _make_event(kind, colour, rng, start, end, place, s, bar, big, mid, ball, target) -> Event:
    if kind == "appear":
        return Event(kind, colour, SHAPES[int(rng.integers(2))], start, end, place(big), target)
    if kind == "change_colour":
        return Event(kind, colour, "square", start, end, place(mid), target)
    # cross_line: the ball runs left to right along a row; box is its first position
    y = int(rng.integers(bar + 2, s - ball - 2))
    return Event(kind, colour, "circle", start, end, (0, y, ball, y + ball), target)


def _share_static_props(events: list[Event]) -> list[Event]:
    # A change_colour box is a persistent object: keep one per video (the first one's box).
    boxes = [e.box for e in events if e.kind == "change_colour"]
    if len(boxes) <= 1:
        return events
    return [dataclasses.replace(e, box=boxes[0]) if e.kind == "change_colour" else e for e in events]


def event_box(scene: Scene, event: Event, t: float) -> tuple[int, int, int, int]:
    """Where ``event`` is drawn at time ``t`` (cross_line balls move; others are static)."""
    if event.kind != "cross_line":
        return event.box
    x0, y0, x1, y1 = event.box
    w = x1 - x0
    p = min(max((t - event.start) / (event.end - event.start), 0.0), 1.0)
    x = int(round(p * (scene.size - w)))
    return (x, y0, x + w, y1)


# --------------------------------------------------------------------------- rendering


def _shape_mask(shape: str, w: int) -> np.ndarray:
    if shape == "circle":
        r = (np.arange(w) + 0.5 - w / 2) ** 2
        return (r[:, None] + r[None, :]) <= (w / 2) ** 2
    return np.ones((w, w), dtype=bool)


def render_frames(scene: Scene, frame_indices: Sequence[int] | None = None) -> np.ndarray:
    """uint8 ``[T, size, size, 3]`` frames at ``index / fps`` seconds (all frames by default)."""
    idx = np.arange(scene.num_frames) if frame_indices is None else np.asarray(frame_indices)
    s = scene.size
    times = idx / scene.fps
    frames = np.empty((len(idx), s, s, 3), dtype=np.uint8)
    frames[:] = np.asarray(scene.background, np.uint8)
    bar = s // 8
    # static props: the line (if any cross_line event) and the white box (change_colour)
    if any(e.kind == "cross_line" for e in scene.events):
        frames[:, bar:, s // 2 - 1: s // 2 + 1] = LINE
    boxes = {e.box for e in scene.events if e.kind == "change_colour"}
    for x0, y0, x1, y1 in boxes:
        frames[:, y0:y1, x0:x1] = WHITE
    # moving distractors: triangle-wave bounce inside the frame (below the bar)
    for d in scene.distractors:
        lo = np.array([0.0, bar])
        span = np.array([s - d.size, s - d.size]) - lo
        raw = np.asarray(d.pos)[None] - lo + times[:, None] * np.asarray(d.vel)[None]
        pos = lo + span - np.abs(np.mod(raw, 2 * span) - span)
        for f, (x, y) in enumerate(np.round(pos).astype(int)):
            frames[f, y: y + d.size, x: x + d.size] = d.colour
    # the cue bar
    on = (times >= scene.cue[0]) & (times < scene.cue[1])
    frames[on, :bar] = WHITE
    # events, drawn last so nothing hides them
    for e in scene.events:
        active = np.nonzero((times >= e.start) & (times < e.end))[0]
        colour = np.asarray(COLOURS[e.colour], np.uint8)
        for f in active:
            x0, y0, x1, y1 = event_box(scene, e, float(times[f]))
            mask = _shape_mask(e.shape, x1 - x0)
            frames[f, y0:y1, x0:x1][mask] = colour
    return frames


# --------------------------------------------------------------------------- text


def _fmt(t: float) -> str:
    # one decimal, as the textual timestamps write times (event times are multiples of 0.5 s):
    # every generated digit is one a small model can get wrong
    return f"{t:.1f}"


def interval_text(s: float, e: float) -> str:
    return f"({_fmt(s)}, {_fmt(e)})"


def tool_call_text(start: float, end: float) -> str:
    args = {"start_time": round(start, 2), "end_time": round(end, 2)}
    return "<tool_call>" + json.dumps({"name": TOOL_NAME, "arguments": args}) + "</tool_call>"


def _subject(e: Event) -> str:
    """How questions name the target without giving its colour away."""
    return {
        "appear": f"the {e.shape} that appears",
        "change_colour": "the white box when it changes colour",
        "cross_line": "the ball that crosses the line",
        "flash": f"the flashing {e.shape}",
    }[e.kind]


def _when_question(e: Event) -> str:
    return {
        "appear": f"When does the {e.colour} {e.shape} appear?",
        "change_colour": f"When does the white box turn {e.colour}?",
        "cross_line": f"When does the {e.colour} ball cross the line?",
    }[e.kind]


def _what_question(e: Event) -> str:
    return {
        "appear": f"What colour is the {e.shape} that appears?",
        "change_colour": "What colour does the white box turn?",
        "cross_line": "What colour is the ball that crosses the line?",
    }[e.kind]


@dataclasses.dataclass(frozen=True)
class Task:
    """One question about a scene with everything needed to write its records."""

    task: str
    question: str
    options: tuple[str, ...]
    answer: str                            # what goes inside <answer></answer>
    solution: Solution
    evidence: tuple[float, float]          # the ground-truth interval the tool should look at
    finding: str                           # what the dense clip shows, in words


def scene_tasks(scene: Scene) -> list[Task]:
    """The questions a scene supports (3 for an event scene, 1 for a counting scene)."""
    tasks: list[Task] = []
    if scene.family == "count":
        t = scene.targets
        n, e = len(t), t[0]
        span = scene.target_interval
        tasks.append(Task(
            "counting", f"How many times does the {e.colour} {e.shape} flash?", (), str(n),
            Solution(answer=str(n)), span,
            f"The {e.colour} {e.shape} flashes {n} time{'s' if n > 1 else ''}",
        ))
        return tasks
    e = scene.targets[0]
    letter = LETTERS[COLOUR_NAMES.index(e.colour)]
    iv = (e.start, e.end)
    seen = f"It is {e.colour} from {_fmt(e.start)} to {_fmt(e.end)} s"
    tasks.append(Task("grounding", _when_question(e), (), interval_text(*iv), Solution(interval=iv), iv, seen))
    tasks.append(Task("multiple_choice", _what_question(e), OPTIONS, letter, Solution(answer=letter), iv, seen))
    tasks.append(Task(
        "grounded_qa", _what_question(e)[:-1] + ", and when does it happen?", OPTIONS,
        f"{letter} {interval_text(*iv)}", Solution(answer=letter, interval=iv), iv, seen,
    ))
    return tasks


def cue_window(scene: Scene) -> tuple[float, float]:
    """The tool window of the SFT trajectories: the cue window (the white bar), which the coarse
    frames can show and which holds every target event, clipped to the video, >= MIN_TOOL_WINDOW."""
    s, e = max(0.0, scene.cue[0]), min(scene.duration, scene.cue[1])
    if e - s < MIN_TOOL_WINDOW:
        e = min(scene.duration, s + MIN_TOOL_WINDOW)
    return (round(s, 2), round(e, 2))


def noisy_window(rng: np.random.Generator, interval: tuple[float, float], duration: float) -> tuple[float, float]:
    """Ground truth ± ``TOOL_NOISE`` × length on each end, widened to ``MIN_TOOL_WINDOW``, clipped."""
    s, e = interval
    length = e - s
    s = s + rng.uniform(-TOOL_NOISE, TOOL_NOISE) * length
    e = e + rng.uniform(-TOOL_NOISE, TOOL_NOISE) * length
    if e - s < MIN_TOOL_WINDOW:
        c = (s + e) / 2
        s, e = c - MIN_TOOL_WINDOW / 2, c + MIN_TOOL_WINDOW / 2
    s, e = max(0.0, s), min(duration, e)
    return (round(s, 2), round(e, 2))


def _records_for(scene: Scene, seed: int) -> dict[str, list[dict[str, Any]]]:
    """Raw MTVR-format dicts for one scene, by output file."""
    media = f"videos/{scene.video_id}.mp4"
    cue = f"{_fmt(scene.cue[0])} to {_fmt(scene.cue[1])}"
    out: dict[str, list[dict[str, Any]]] = {"sft_tool": [], "sft_cot": [], "rl": [], "eval": []}
    for task in scene_tasks(scene):
        base = {
            "video": media, "duration": scene.duration, "text": task.question,
            "data_source": DATA_SOURCE[task.task],
            **({"options": list(task.options)} if task.options else {}),
            "task": task.task, "difficulty": scene.difficulty, "video_id": scene.video_id,
        }
        rl_solution: Any
        if task.solution.interval is not None and task.solution.answer is not None:
            rl_solution = {"answer": task.solution.answer, "interval": list(task.solution.interval)}
        elif task.solution.interval is not None:
            rl_solution = list(task.solution.interval)
        else:
            rl_solution = task.solution.answer
        if scene.split == "eval":
            out["eval"].append({**base, "solution": rl_solution})
            continue
        # Short reasoning: where the coarse view shows the cue bar, then what the dense view
        # shows. Every generated token is one a tiny model can get wrong, so no filler.
        bar = f"The white bar spans {cue} s."
        reasoning = f"{bar} {task.finding}."
        # the reference reasoning rides along as DeepVideo-R1's hint for hard prompts
        out["rl"].append({**base, "solution": rl_solution, "hint": reasoning})
        # The tool call asks for the cue window: what the coarse frames can show (the bar), and
        # it always holds the target event (events sit >= 1 s inside it).
        ws, we = cue_window(scene)
        turn0 = f"<think>{bar}</think> " + tool_call_text(ws, we)
        turn1 = f"<think>{task.finding}.</think> <answer>{task.answer}</answer>"
        out["sft_tool"].append({**base, "solution": [turn0, turn1],
                                "tool_params": interval_text(ws, we), "answer": task.answer})
        cot = f"<think>{reasoning}</think> <answer>{task.answer}</answer>"
        out["sft_cot"].append({**base, "solution": cot})
    return out


def text_corpus(num: int = 200, seed: int = 0, *, min_seconds: float = 30.0, max_seconds: float = 180.0) -> list[str]:
    """Every prompt and target string the suite produces for ``num`` scenes (no video rendered),
    plus the fixed vocabulary, so a small tokenizer can be trained on it."""
    cfg = SynthConfig(num=num, seed=seed, min_seconds=min_seconds, max_seconds=max_seconds, eval_fraction=0.0)
    texts: list[str] = list(OPTIONS) + [" ".join(COLOUR_NAMES), " ".join(SHAPES), "0 1 2 3 4 5 6 7 8 9 . , ( ) [ ]"]
    for i in range(num):
        rows = _records_for(make_scene(cfg, i), seed)
        for row in rows["sft_tool"]:
            texts.append(row["text"])
            texts.extend(row["solution"])
        texts.extend(r["solution"] for r in rows["sft_cot"])
    return texts


# --------------------------------------------------------------------------- generation


def iter_scenes(cfg: SynthConfig) -> Iterator[Scene]:
    for i in range(cfg.num):
        yield make_scene(cfg, i)


def generate(out: str | os.PathLike, cfg: SynthConfig) -> dict[str, Any]:
    """Write videos, ground truth and annotation files under ``out``; returns the manifest
    (progress every tenth of the videos to the ``vital_jax.data.synthetic`` logger)."""
    from vital_jax.video.write import write_video  # heavy (PyAV) and only needed here

    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    files: dict[str, list[dict[str, Any]]] = {"sft_tool": [], "sft_cot": [], "rl": [], "eval": []}
    scenes = []
    for scene in iter_scenes(cfg):
        write_video(out / "videos" / f"{scene.video_id}.mp4", render_frames(scene), scene.fps)
        scenes.append(scene.to_json())
        for name, rows in _records_for(scene, cfg.seed).items():
            files[name].extend(rows)
        if len(scenes) % max(50, cfg.num // 10) == 0:
            log.info("%d/%d videos (%.1f s)", len(scenes), cfg.num, time.perf_counter() - t0)
    with (out / "scenes.jsonl").open("w") as f:
        for s in scenes:
            f.write(json.dumps(s) + "\n")
    counts: dict[str, dict[str, int]] = {}
    for name, rows in files.items():
        # parse through the record schema: the generator can never write a file the loader rejects
        records: list[Record] = [parse_record(r, root=out, index=i, file=f"{name}.jsonl") for i, r in enumerate(rows)]
        write_records(out / f"{name}.jsonl", records)
        by_task: dict[str, int] = {}
        for r in rows:
            by_task[r["task"]] = by_task.get(r["task"], 0) + 1
        counts[name] = dict(sorted(by_task.items()))
    manifest = {
        "config": dataclasses.asdict(cfg),
        "videos": len(scenes),
        "splits": {sp: sum(s["split"] == sp for s in scenes) for sp in ("train", "eval")},
        "records": counts,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def load_scenes(out: str | os.PathLike) -> list[Scene]:
    with (Path(out) / "scenes.jsonl").open() as f:
        return [Scene.from_json(json.loads(line)) for line in f if line.strip()]


__all__ = [
    "COLOURS", "COLOUR_NAMES", "DATA_SOURCE", "LETTERS", "LEVELS", "OPTIONS", "TASKS",
    "Event", "Scene", "SynthConfig", "Task",
    "cue_window", "event_box", "generate", "interval_text", "load_scenes", "make_scene", "noisy_window",
    "render_frames", "scene_tasks", "text_corpus", "tool_call_text",
]
