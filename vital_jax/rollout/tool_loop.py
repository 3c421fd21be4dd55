"""The host-side tool loop: episodes for a batch of (video, question) pairs over one KV cache.

Per row: prefill the prompt (with the question's video) -> decode until a stop (``</tool_call>``,
``</answer>``, ``<|im_end|>``) -> parse -> run the tool (VITAL's clip rule) -> encode the clip and
APPEND the tool turn (text + video tokens) to the row's live cache -> decode again ... up to
``max_turns`` assistant turns. Nothing is ever re-prefilled.

Rows progress independently: decode calls exit as soon as any row stops, that row's tool runs
(synchronously, or on an executor while the other rows keep decoding), and its observation is
appended in the next extend call. Failures stay inside their episode:

- malformed / invalid tool call -> an error observation, the episode goes on;
- the video cannot be read (at the prompt or by the tool) -> that episode ends, ``video_error``;
- the context is full -> the episode ends ``length``, flagged ``truncated`` (RL masks it).

Every episode records what RL needs: token ids, loss mask (1 = policy, 0 = observation),
log-probs (0 on observations), the visual inputs in order, turn spans, tool outcomes, end reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vital_jax.rollout.tools import SyncExecutor, ToolContext, ToolResult, get_tool
from vital_jax.prompt.parsers import ParseError, parse_tool_call
from vital_jax.prompt.render import ChatRenderer, Vision
from vital_jax.rollout.sampler import Sampler, SamplingOptions, Segment, find_stop_string, stop_sequences
from vital_jax.video import load_video
from vital_jax.video.errors import VideoError

TOOL_STOP = "</tool_call>"
ANSWER_STOP = "</answer>"
END_REASONS = ("answer", "eos", "max_turns", "length", "max_new_tokens", "video_error")


@dataclasses.dataclass
class EpisodeRequest:
    """One (video, question) pair. ``video`` None = text-only question. ``visual``: the question
    video already loaded (e.g. augmented frames); None = load ``video`` with the config's kwargs."""

    question: str
    video: str | None = None
    use_tool: bool = True
    visual: Any = None


@dataclasses.dataclass
class AgentConfig:
    """Loop settings. ``sampling.stop_*`` are filled in by the loop (eos, tool/answer tags).

    video_kwargs / clip_kwargs: keyword arguments of ``load_video`` / ``load_clip`` (pixel and
    frame limits, ``timestamps`` drawn on the frames); keep them consistent with the sampler's
    ``max_visual_tokens``.
    text_timestamps: write each temporal group's time as text before its visual tokens
    (Qwen3-VL style, :class:`vital_jax.prompt.Vision` ``times``), for the question video and
    the tool clips. Off = Qwen2.5-VL's layout. Must match what the model was trained with.
    prompts: the prompt set the episodes' renderer uses (``data.vision.prompt``; the caller builds
    the renderer with ``ChatRenderer(tok, prompts=config.prompts)``).
    """

    sampling: SamplingOptions = SamplingOptions(temperature=1.0, repetition_penalty=1.05, max_new_tokens=512)
    max_turns: int = 3
    video_kwargs: dict = dataclasses.field(default_factory=dict)
    clip_kwargs: dict = dataclasses.field(default_factory=dict)
    tools: dict | None = None            # registry (None = the default TOOLS)
    text_timestamps: bool = False
    prompts: str = "vital"


@dataclasses.dataclass
class ToolOutcome:
    turn: int
    name: str | None
    ok: bool
    code: str          # "ok" or an error code (ParseError codes, invalid_window, unknown_tool, ...)
    message: str
    start: float | None = None
    end: float | None = None


@dataclasses.dataclass
class Episode:
    """Everything one rollout produced.

    ids / loss_mask / logprobs: aligned per token (prompt, generated, observations ...).
    visuals: the visual inputs in order of their placeholders (question video, then clips).
    turns: ``(role, start, end)`` token spans: ``prompt``, ``assistant``, ``tool``.
    """

    request: EpisodeRequest
    ids: list[int] = dataclasses.field(default_factory=list)
    loss_mask: list[int] = dataclasses.field(default_factory=list)
    logprobs: list[float] = dataclasses.field(default_factory=list)
    visuals: list[Any] = dataclasses.field(default_factory=list)
    turns: list[tuple[str, int, int]] = dataclasses.field(default_factory=list)
    tool_calls: list[ToolOutcome] = dataclasses.field(default_factory=list)
    texts: list[str] = dataclasses.field(default_factory=list)   # assistant turns, decoded
    end_reason: str | None = None
    truncated: bool = False
    error: str | None = None
    duration: float | None = None

    @property
    def done(self) -> bool:
        return self.end_reason is not None

    @property
    def response_text(self) -> str:
        return "".join(self.texts)

    def _add(self, role: str, ids, mask: int, logprobs=None):
        a = len(self.ids)
        self.ids += [int(i) for i in ids]
        self.loss_mask += [mask] * len(ids)
        self.logprobs += [0.0] * len(ids) if logprobs is None else [float(x) for x in logprobs]
        self.turns.append((role, a, len(self.ids)))


class _Row:
    """Per-row bookkeeping of the turn in progress."""

    def __init__(self, ep: Episode, ctx: ToolContext):
        self.ep, self.ctx = ep, ctx
        self.turn = 0
        self.toks: list[int] = []
        self.lps: list[float] = []
        self.pending = None          # (future, call name, ToolCall) while a tool runs
        self.obs: Segment | None = None


def run_episodes(sampler: Sampler, renderer: ChatRenderer, requests: Sequence[EpisodeRequest],
                 config: AgentConfig = AgentConfig(), *, seed: int = 0, executor=None,
                 script: Callable[[int, int], str | None] | None = None) -> list[Episode]:
    """Run one batch of episodes (``len(requests) <= sampler.config.batch_size``).

    ``script(row, turn) -> text | None``: a scripted policy (tests, demos): the row's turn must
    produce that text's tokens (forced through the real decode path, stop matching included);
    None = the model samples. ``executor``: where tool calls run (default synchronous).
    """
    B = sampler.config.batch_size
    if len(requests) > B:
        raise ValueError(f"{len(requests)} requests for sampler batch size {B}")
    tok = renderer.tok
    executor = executor or SyncExecutor()
    stop_strs = [TOOL_STOP, ANSWER_STOP]
    opts = dataclasses.replace(config.sampling, stop_token_ids=(tok.special.eos,),
                               stop_sequences=stop_sequences(tok, stop_strs))
    cap = sampler.config.cache_length
    rows: list[_Row | None] = [None] * B
    prompts: list[Segment | None] = [None] * B
    for b, req in enumerate(requests):
        ep = Episode(req)
        visual = None
        if req.video is not None:
            try:
                visual = req.visual if req.visual is not None else load_video(req.video, **config.video_kwargs)
                ep.duration = _duration(req.video)
            except VideoError as e:
                ep.end_reason, ep.error = "video_error", f"{type(e).__name__}: {e}"
                rows[b] = _Row(ep, ToolContext(req.video, None))
                continue
        vision = None if visual is None else Vision.of(visual, text_timestamps=config.text_timestamps)
        pr = renderer.prompt(req.question, vision,
                             duration=ep.duration, use_tool=req.use_tool)
        if len(pr.ids) >= cap:
            ep.end_reason, ep.truncated, ep.error = "length", True, f"prompt has {len(pr.ids)} tokens >= {cap}"
            rows[b] = _Row(ep, ToolContext(req.video, ep.duration))
            continue
        ep._add("prompt", pr.ids, 0)
        if visual is not None:
            ep.visuals.append(visual)
        prompts[b] = Segment(pr.ids, [visual] if visual is not None else [])
        rows[b] = _Row(ep, ToolContext(req.video, ep.duration, dict(config.clip_kwargs)))
    state = sampler.prefill(prompts, seeds=seed)
    lengths = np.asarray([0 if p is None else len(p.ids) for p in prompts])

    def live(r):
        return r is not None and not r.ep.done

    while any(live(r) for r in rows):
        # 1) decode the rows that are generating (not waiting on a tool)
        gen = [live(r) and r.pending is None for r in rows]
        if any(gen):
            # the device stops a row at the context limit itself (reason "length")
            budget = np.asarray([max(0, opts.max_new_tokens - len(r.toks)) if gen[b] else 0
                                 for b, r in enumerate(rows)], np.int32)
            forced = []
            for b, r in enumerate(rows):
                text = script(b, r.turn) if (gen[b] and script is not None) else None
                forced.append(None if text is None else renderer.text_ids(text)[len(r.toks):])
            sp = sampler.sampling_params(opts, forced=forced)
            state, res = sampler.decode(state, sp, budget, exit_on_stop=True)
            drop = np.zeros(B, np.int32)
            for b, r in enumerate(rows):
                if not gen[b]:
                    continue
                r.toks += res.tokens[b].tolist()
                r.lps += res.logprobs[b].tolist()
                lengths[b] += len(res.tokens[b])
                reason = res.reason[b]
                if reason in ("running", "budget", "length"):
                    # host fallback for a stop-string tokenisation the device table missed
                    k = find_stop_string(tok, r.toks, stop_strs)
                    if k is not None:
                        drop[b] = len(r.toks) - k
                        lengths[b] -= drop[b]
                        del r.toks[k:], r.lps[k:]
                        reason = "stop_sequence"
                if reason == "running" and len(r.toks) >= opts.max_new_tokens:
                    reason = "budget"
                if reason != "running":
                    _end_turn(r, reason, renderer, config, executor, cap - lengths[b])
            if drop.any():
                state = sampler.rewind(state, drop)
        # 2) wait for tools only when nothing else can run
        waiting = [r for r in rows if live(r) and r.pending is not None]
        if waiting and not any(live(r) and r.pending is None for r in rows):
            waiting[0].pending[0].result()
        # 3) append every finished observation in one extend call
        segs: list[Segment | None] = [None] * B
        for b, r in enumerate(rows):
            if live(r) and r.pending is not None and r.pending[0].done():
                _collect_tool(r, renderer, config, cap - lengths[b])
            if live(r) and r.obs is not None:
                segs[b], r.obs = r.obs, None
                lengths[b] += len(segs[b].ids)
        if any(s is not None for s in segs):
            state = sampler.extend(state, segs, lengths=lengths - np.asarray([0 if s is None else len(s.ids)
                                                                              for s in segs]))
    return [r.ep for r in rows[:len(requests)]]


def _duration(path: str) -> float:
    from vital_jax.video import video_info

    info = video_info(path)
    return float(info.num_frames / info.fps)


def _end_turn(r: _Row, reason: str, renderer: ChatRenderer, config: AgentConfig, executor, room: int) -> None:
    """A turn stopped: record it and decide what happens next."""
    ep = r.ep
    text = renderer.tok.decode(r.toks)
    ep._add("assistant", r.toks, 1, r.lps)
    ep.texts.append(text)
    eos = renderer.tok.special.eos
    toks, r.toks, r.lps = r.toks, [], []
    r.turn += 1
    if reason == "length":
        ep.end_reason, ep.truncated = "length", True
    elif reason == "budget":
        ep.end_reason, ep.truncated = "max_new_tokens", True
    elif toks and toks[-1] == eos:
        ep.end_reason = "eos"
    elif text.rstrip().endswith(ANSWER_STOP):
        ep.end_reason = "answer"
    elif text.rstrip().endswith(TOOL_STOP):
        call = parse_tool_call(text[text.rfind("<tool_call>"):] if "<tool_call>" in text else text)
        if r.turn >= config.max_turns:
            ep.end_reason = "max_turns"
            ep.tool_calls.append(ToolOutcome(r.turn - 1, getattr(call, "name", None), False, "max_turns",
                                             "tool call after the last allowed turn; not run"))
            return
        if isinstance(call, ParseError):
            _error_obs(r, renderer, call.code, call.message, None, room)
            return
        if not ep.request.use_tool:
            _error_obs(r, renderer, "tools_disabled", "tools are not available for this question", call.name, room)
            return
        tool = get_tool(call.name, config.tools)
        if tool is None:
            _error_obs(r, renderer, "unknown_tool", f"unknown tool {call.name!r}", call.name, room)
            return
        r.pending = (executor.submit(tool, call.arguments, r.ctx), call.name, call)
    else:  # a stop id other than eos, or a stop string inside the text: treat as end of answer
        ep.end_reason = "eos"


def _error_obs(r: _Row, renderer: ChatRenderer, code: str, message: str, name: str | None, room: int) -> None:
    r.ep.tool_calls.append(ToolOutcome(r.turn - 1, name, False, code, message))
    _set_obs(r, Segment(renderer.tool_text_ids(f"Error: {message}"), []), room)


def _set_obs(r: _Row, seg: Segment, room: int) -> None:
    """Record an observation to append, unless it (plus one token to answer) does not fit."""
    ep = r.ep
    if len(seg.ids) + 1 > room:
        ep.end_reason, ep.truncated = "length", True
        return
    r.obs = seg
    ep._add("tool", seg.ids, 0)
    ep.visuals.extend(seg.visuals)


def _collect_tool(r: _Row, renderer: ChatRenderer, config: AgentConfig, room: int) -> None:
    fut, name, _ = r.pending
    r.pending = None
    ep = r.ep
    try:
        res: ToolResult = fut.result()
    except Exception as e:  # noqa: BLE001 - a crashing tool is that episode's problem only
        res = ToolResult(fatal=f"tool {name!r} raised {type(e).__name__}: {e}")
    if res.fatal is not None:
        ep.tool_calls.append(ToolOutcome(r.turn - 1, name, False, "fatal", res.fatal))
        ep.end_reason, ep.error = "video_error", res.fatal
        return
    if res.error is not None:
        _error_obs(r, renderer, res.error[0], res.error[1], name, room)
    elif res.visual is None:   # a text observation: the tool turn holds the text alone
        ep.tool_calls.append(ToolOutcome(r.turn - 1, name, True, "ok", ""))
        _set_obs(r, Segment(renderer.tool_text_ids(res.text or ""), []), room)
    else:
        clip = Vision.of(res.visual, text_timestamps=config.text_timestamps)
        ids = renderer.tool_result_ids(res.start, res.end, clip)
        ep.tool_calls.append(ToolOutcome(r.turn - 1, name, True, "ok", "", res.start, res.end))
        _set_obs(r, Segment(ids, [res.visual]), room)
