"""Run a model over a benchmark: the tool loop in fixed-shape batches, predictions, metrics.

``evaluate(cfg, params, tokenizer, benchmark, samples, out_dir=...)`` is what ``vital eval``
and the trainer's demo call. It writes into ``out_dir``:

- ``predictions.jsonl``: one line per sample (format: :mod:`vital_jax.eval.predictions`), with
  ``id``, ``video`` (the resolved path), ``response`` (all assistant turns), ``answer`` (the
  last ``<answer>`` block, or None), ``task`` and ``gold`` (the reference: ``answer``,
  ``intervals``), ``tool_calls`` (``name, start_time, end_time, ok, code, message, turn``), ``end_reason``,
  ``truncated``, ``error``, ``prompt`` and ``transcript`` (decoded; runs of visual placeholder
  tokens collapsed to ``<|video_pad|>×N``), token counts and ``timing`` (``total_s`` is the
  batch's wall time shared among its rows). ``end_reason`` is the loop's, or ``sampler_error``
  when a sample does not fit the sampler's shapes even alone (``error`` says why; it scores 0);
- ``run.json``: the settings that change predictions (tools on/off, frame and pixel limits,
  textual timestamps, sampling, max turns, caller's ``run_info``). Rerunning into the same
  folder with other settings is refused, so a resumed run never mixes two configurations;
- ``metrics.json``: :func:`vital_jax.eval.scoring.score` on every sample's line, the same
  numbers ``vital score`` prints for that predictions file.

Resumable: a sample whose id already has a line is skipped, so after a crash the rerun picks up
where it stopped (a half-written last line is cut off first). One :class:`~vital_jax.rollout.contract.Rollout` is
built per call (shapes sized from the samples' video headers) and reused for every batch; a short last batch leaves rows empty instead of building a
smaller sampler, so nothing recompiles between batches. Decoding is greedy (temperature 0) as
VITAL evaluated, unless ``agent_config`` says otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vital_jax.rollout.contract import Rollout, request_budget
from vital_jax.rollout.tool_loop import AgentConfig, Episode, EpisodeRequest
from vital_jax.jsonl import cut_partial_line
from vital_jax.rollout.tools import TOOLS, ToolContext, ToolResult
from vital_jax.eval.benchmarks import BENCHMARKS, Benchmark, Sample
from vital_jax.eval.predictions import answer_text, append_prediction, read_predictions
from vital_jax.eval.scoring import score
from vital_jax.prompt import ChatRenderer
from vital_jax.prompt.tokens import IMAGE_PAD, VIDEO_PAD
from vital_jax.rollout import SamplerConfig, SamplerError, SamplingOptions
from vital_jax.video.overlay import overlay_timestamps
from vital_jax.video.patchify import Processing, to_patches
from vital_jax.errors import VitalError

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.jsonl"
METRICS_FILE = "metrics.json"
RUN_FILE = "run.json"

# VITAL's setting for short benchmarks (method.md, section 8): <= 256 frames at about 384^2.
EVAL_VIDEO_KWARGS: dict[str, Any] = {"max_frames": 256, "max_pixels": 384 * 384}
# Greedy, as VITAL evaluated; 3 assistant turns = up to 2 tool calls, 1024 tokens a turn.
EVAL_AGENT_CONFIG = AgentConfig(
    sampling=SamplingOptions(temperature=0.0, repetition_penalty=1.0, max_new_tokens=1024), max_turns=3)
# Files whose name lacks an extension (Video-MME's videoID, Charades ids) are looked up with these.
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")

# The blind control's frames: every pixel mid-grey (a constant image, no content, no edges).
BLANK_LEVEL = 128


class EvalSettingsError(VitalError, ValueError):
    """``out_dir`` holds predictions made with other settings (names the file and the keys)."""


# --------------------------------------------------------------------------- inputs


def question_text(sample: Sample) -> str:
    """The question as the trainer shows it: the text, then the options one per line (as
    :func:`vital_jax.data.sft.prompt_question`). Options already written in the question
    (LongVideo-Reason) are not repeated; bare option texts (MVBench) get their letters."""
    q = sample.question
    opts = [o if re.match(r"^\s*\(?[A-Z][).:]\s", o) else f"{chr(65 + i)}. {o}" for i, o in enumerate(sample.options)]
    if opts and all(o in q for o in opts):
        return q
    return q + "".join("\n" + o for o in opts)


def resolve_video(video: str | None, root: str | os.PathLike | None) -> str | None:
    """``root/video`` (or ``video`` itself without a root / when absolute); a name without an
    extension is tried with the usual ones. A file that is not found keeps its joined path, so
    the episode ends ``video_error`` naming it."""
    if video is None:
        return None
    path = video if (root is None or os.path.isabs(video)) else os.path.join(os.fspath(root), video)
    if os.path.exists(path):
        return path
    for ext in VIDEO_EXTENSIONS:
        if os.path.exists(path + ext):
            return path + ext
    return path


# --------------------------------------------------------------------------- blind control


def blank_frames(frames: np.ndarray) -> np.ndarray:
    """``load_video``'s ``frame_transform`` of the blind control: the frames' shape, no content."""
    return np.full_like(frames, BLANK_LEVEL)


def _blank_clip(result: ToolResult, ctx: ToolContext) -> ToolResult:
    """A tool result whose clip is rebuilt from blank frames of its own size and times: what
    ``load_clip`` would return with a ``frame_transform`` (it has no such hook)."""
    v = result.visual
    if v is None:
        return result
    t, h, w = (int(x) for x in np.asarray(v.grid_thw).reshape(3))
    proc = ctx.clip_kwargs.get("processing") or Processing()   # the model family's patches
    p = proc.patch_size
    frames = blank_frames(np.zeros((len(v.frame_times), h * p, w * p, 3), np.uint8))
    if ctx.clip_kwargs.get("timestamps"):
        frames = overlay_timestamps(frames, v.frame_times)   # the clock stays, as on the question video
    pixels, grid = to_patches(frames, proc)
    if pixels.shape != np.asarray(v.pixel_values).shape or not np.array_equal(grid.reshape(3), [t, h, w]):
        raise ValueError(f"blind clip: rebuilt grid {grid.tolist()} differs from the clip's {[t, h, w]}")
    return dataclasses.replace(result, visual=dataclasses.replace(v, pixel_values=pixels))


def blind_tools(registry: Mapping[str, Callable] | None = None) -> dict[str, Callable]:
    """``registry`` (None: the default tools) with every returned clip blanked."""
    def wrap(fn):
        return lambda arguments, ctx: _blank_clip(fn(arguments, ctx), ctx)
    return {name: wrap(fn) for name, fn in (TOOLS if registry is None else registry).items()}


# --------------------------------------------------------------------------- outputs


def _collapse_pads(text: str) -> str:
    """``<|video_pad|>`` × 1000 → ``<|video_pad|>×1000``: transcripts stay readable and small."""
    for pad in (VIDEO_PAD, IMAGE_PAD):
        text = re.sub(f"(?:{re.escape(pad)})+", lambda m, p=pad: f"{p}×{len(m.group()) // len(p)}", text)
    return text


def _gold(sample: Sample) -> dict[str, Any]:
    """The reference next to the prediction, so a line can be read (and paired) on its own."""
    return {"task": sample.category or sample.task,
            "gold": {"answer": sample.answer, "intervals": [list(i) for i in sample.intervals]}}


def prediction_row(sample: Sample, ep: Episode, tokenizer, timing: Mapping[str, float]) -> dict[str, Any]:
    """One predictions line for an episode (fields in the module docstring)."""
    response = ep.response_text
    answer, _ = answer_text({"response": response})
    spans = {role: [] for role in ("prompt", "assistant", "tool")}
    transcript = []
    for role, a, b in ep.turns:
        text = _collapse_pads(tokenizer.decode(ep.ids[a:b]))
        spans[role].append(text)
        if role != "prompt":
            transcript.append({"role": role, "text": text})
    calls = [{"name": c.name, "start_time": c.start, "end_time": c.end, "ok": c.ok, "code": c.code,
              "message": c.message, "turn": c.turn} for c in ep.tool_calls]
    return {
        "id": sample.id, "response": response, "answer": answer, "tool_calls": calls,
        "end_reason": ep.end_reason, "truncated": ep.truncated, "error": ep.error,
        "use_tool": ep.request.use_tool, "video": ep.request.video, "duration": ep.duration,
        "prompt": "".join(spans["prompt"]), "transcript": transcript,
        "tokens": len(ep.ids), "generated_tokens": int(sum(ep.loss_mask)), "timing": dict(timing),
        **_gold(sample),
    }


def _error_row(sample: Sample, request: EpisodeRequest, reason: str, message: str,
               timing: Mapping[str, float]) -> dict[str, Any]:
    return {"id": sample.id, "response": "", "answer": None, "tool_calls": [], "end_reason": reason,
            "truncated": False, "error": message, "use_tool": request.use_tool, "video": request.video,
            "duration": None, "prompt": None, "transcript": [], "tokens": 0, "generated_tokens": 0,
            "timing": dict(timing), **_gold(sample)}


def _check_settings(path: Path, settings: Mapping[str, Any], has_predictions: bool) -> None:
    if path.exists() and has_predictions:
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise EvalSettingsError(f"{path}: cannot read the previous run's settings: {e}") from e
        differ = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if differ:
            raise EvalSettingsError(
                f"{path}: this folder holds predictions made with other settings ({', '.join(differ)}: "
                f"{ {k: old.get(k) for k in differ} } now { {k: settings.get(k) for k in differ} }); "
                f"use another output folder or delete it")
    path.write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=repr, sort_keys=True))


# --------------------------------------------------------------------------- the run


def evaluate(
    cfg,
    params,
    tokenizer,
    benchmark: str | Benchmark,
    samples: Sequence[Sample],
    *,
    out_dir: str | os.PathLike,
    use_tools: bool = True,
    batch_size: int = 8,
    video_root: str | os.PathLike | None = None,
    sampler_config: SamplerConfig | Mapping[str, Any] | None = None,
    agent_config: AgentConfig | None = None,
    video_kwargs: Mapping[str, Any] | None = None,
    clip_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
    limit: int | None = None,
    mesh=None,
    run_info: Mapping[str, Any] | None = None,
    blind: bool = False,
) -> dict[str, Any]:
    """Evaluate ``params`` on ``samples``; returns the metrics dict (also in ``metrics.json``).

    Args:
      cfg, params: the model (``ModelConfig`` and its params, e.g. from ``load_pretrained``).
      tokenizer: a :class:`vital_jax.prompt.Tokenizer` matching the model.
      benchmark: a name in ``BENCHMARKS`` (or a :class:`Benchmark`): picks the metric set.
      samples: from ``load_benchmark``; ``limit`` keeps the first N (and scores only those).
      out_dir: where predictions, ``run.json`` and ``metrics.json`` go; rerunning resumes.
      use_tools: offer the clip tool (False: the prompt has no tools block and a tool call
        gets an error observation).
      batch_size: rows decoded together (capped at the number of samples left to run).
      video_root: folder the samples' video paths are relative to (None: paths as written).
      sampler_config: static shapes; None = :func:`vital_jax.rollout.contract.size_sampler` over
        the budgets of the samples left to run; a mapping = those fields replaced in that
        default (e.g. cache_length).
      agent_config: sampling, max turns, tool registry; None = greedy, 3 turns, 1024 tokens.
      video_kwargs / clip_kwargs: ``load_video`` / ``load_clip`` options; None = the
        agent_config's when it has them, else ``EVAL_VIDEO_KWARGS`` / the tool's defaults.
      run_info: extra settings recorded in ``run.json`` and checked on resume (e.g. the ckpt).
      blind: the blind control: every frame the model sees (question video and tool clips) is
        mid-grey, shapes and timing kept; a model that reads the video scores lower so. Recorded
        in ``run.json`` as ``"blind": true``.

    Progress goes to the ``vital_jax.eval.runner`` logger.
    """
    bench = BENCHMARKS[benchmark] if isinstance(benchmark, str) else benchmark
    base = agent_config or EVAL_AGENT_CONFIG
    if video_kwargs is None:
        video_kwargs = base.video_kwargs or EVAL_VIDEO_KWARGS
    if clip_kwargs is None:
        clip_kwargs = base.clip_kwargs or {}
    from vital_jax.trainers.sft import with_family

    # the model's family decides the pixel processing and whether times are written as text
    fam = with_family({"video_kwargs": video_kwargs, "clip_kwargs": clip_kwargs,
                       "text_timestamps": base.text_timestamps}, cfg)
    video_kwargs, clip_kwargs = fam["video_kwargs"], fam["clip_kwargs"]
    agent = dataclasses.replace(base, video_kwargs=dict(video_kwargs), clip_kwargs=dict(clip_kwargs),
                                text_timestamps=fam["text_timestamps"])
    if blind:
        agent = dataclasses.replace(agent, video_kwargs={**agent.video_kwargs, "frame_transform": blank_frames},
                                    tools=blind_tools(agent.tools))
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    samples = list(samples)[:limit] if limit is not None else list(samples)
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        raise ValueError(f"sample id {next(i for i in ids if ids.count(i) > 1)!r} appears more than once")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pred_path = out / PREDICTIONS_FILE
    cut_partial_line(pred_path)   # a run killed mid-write: that sample runs again
    done = read_predictions(pred_path)[0] if pred_path.exists() else {}
    s = agent.sampling
    settings = _jsonable({
        "benchmark": bench.name, "use_tools": bool(use_tools), "video_kwargs": dict(video_kwargs),
        "clip_kwargs": dict(clip_kwargs), "max_turns": agent.max_turns,
        # only when on: folders written before the option existed still resume
        **({"text_timestamps": True} if agent.text_timestamps else {}),
        **({"prompts": agent.prompts} if agent.prompts != "vital" else {}),
        "sampling": {"temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p,
                     "repetition_penalty": s.repetition_penalty, "max_new_tokens": s.max_new_tokens},
        "run_info": dict(run_info or {}),
        # only when on: folders written before the option existed still resume
        **({"blind": True} if blind else {}),
    })
    _check_settings(out / RUN_FILE, settings, bool(done))

    todo = [x for x in samples if x.id not in done]
    log.info(f"{bench.name}: {len(samples)} samples, {len(samples) - len(todo)} already in {pred_path}, "
        f"{len(todo)} to run ({'with' if use_tools else 'without'} tools)")
    if todo:
        _run(cfg, params, tokenizer, todo, pred_path, use_tools=use_tools, batch_size=batch_size,
             video_root=video_root, sampler_config=sampler_config, agent=agent, seed=seed, mesh=mesh)

    preds, counts = read_predictions(pred_path)
    result = score(bench, samples, preds)
    result["duplicates"] = counts["duplicates"]
    result["predictions"] = str(pred_path)
    result["run"] = settings
    (out / METRICS_FILE).write_text(json.dumps(result, indent=1) + "\n")
    log.info(f"wrote {out / METRICS_FILE}: " + ", ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items()))
    return result


def _run(cfg, params, tokenizer, todo: Sequence[Sample], pred_path: Path, *, use_tools: bool, batch_size: int,
         video_root, sampler_config: SamplerConfig | Mapping[str, Any] | None, agent: AgentConfig, seed: int, mesh) -> None:
    renderer = ChatRenderer(tokenizer, prompts=agent.prompts)
    requests = [EpisodeRequest(question_text(x), resolve_video(x.video, video_root), use_tool=use_tools) for x in todo]
    # built once: its compiled programs serve every batch (a short last batch runs with empty rows)
    if isinstance(sampler_config, SamplerConfig):
        rollout = Rollout(cfg, params, renderer, sampler_config, mesh=mesh)
    else:
        t0 = time.perf_counter()
        budgets = [request_budget(renderer, r, agent) for r in requests]
        log.info(f"{len(budgets)} prompts budgeted in {time.perf_counter() - t0:.1f} s")
        rollout = Rollout.sized(cfg, params, renderer, budgets, batch_size=min(batch_size, len(todo)),
                                max_turns=agent.max_turns, max_new_tokens=agent.sampling.max_new_tokens,
                                overrides=sampler_config, mesh=mesh)
    B = rollout.config.batch_size
    n_batches = -(-len(todo) // B)
    with pred_path.open("a", encoding="utf-8") as f:
        def write(k: int, episodes, dt: float) -> None:
            batch, reqs = todo[k * B:(k + 1) * B], requests[k * B:(k + 1) * B]
            timing = {"total_s": round(dt / len(batch), 4), "batch_s": round(dt, 4), "batch_rows": len(batch)}
            for sample, req, ep in zip(batch, reqs, episodes):
                if isinstance(ep, SamplerError):
                    append_prediction(f, _error_row(sample, req, "sampler_error", str(ep), timing))
                else:
                    append_prediction(f, prediction_row(sample, ep, tokenizer, timing))
            log.info(f"batch {k + 1}/{n_batches}: {len(batch)} samples in {dt:.1f} s")

        rollout.run(requests, agent, seed=seed, isolate_errors=True, on_batch=write)
