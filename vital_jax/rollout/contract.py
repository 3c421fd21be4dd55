"""The rollout contract: params and requests in, episodes out.

:class:`Rollout` is what the RL trainer, ``vital eval`` and ``vital infer`` call. It owns the
sampler and its static shapes, and sizes them from what the requests and the checkpoint's
settings can produce (:func:`request_budget` reads each video's header, never its frames):

- no bucket is compiled that no input needs (a 64x64 video never asks for 198k patches);
- the vision tower's full-attention blocks are banded by the largest frame any input shows
  (``vision_frame_block``), so they never materialise [N, N] over a whole batch of patches;
- running out of device memory becomes one :class:`RolloutResourceError` line naming the
  settings that size the run.

Requests longer than one batch run as several sampler calls on the same compiled programs (a
short last batch runs with empty rows); batch ``k`` samples with ``seed + k * batch_size``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from vital_jax.errors import VitalError
from vital_jax.prompt import ChatRenderer, Vision, group_times
from vital_jax.rollout.sampler import Sampler, SamplerConfig, SamplerError
from vital_jax.rollout.tool_loop import AgentConfig, Episode, EpisodeRequest, run_episodes
from vital_jax.video import sampling as vs
from vital_jax.video import Processing, video_info
from vital_jax.video.errors import VideoError

log = logging.getLogger(__name__)

_PLAN_KEYS = ("start", "end", "fps", "nframes", "min_frames", "max_frames", "min_pixels", "max_pixels", "total_pixels")
# A long tool error as the model sees it: sizes the room an error observation takes in the cache.
_LONG_TOOL_ERROR = ("Error: clip [12345.67, 12345.67] s is not inside [0, 12345.67] s with start < end; "
                    "get_video_clip_frame takes exactly start_time and end_time")


class RolloutResourceError(VitalError, RuntimeError):
    """The device ran out of memory. ``what``: the failure and the shapes it ran with; the message
    adds the settings to lower (a command replaces them with its own flag names)."""

    def __init__(self, what: str, lower: str = "the batch size, the frames / pixels of the video and the clips "
                                                "(video tokens), or max_new_tokens"):
        super().__init__(f"{what}: lower {lower}")
        self.what = what


@dataclasses.dataclass(frozen=True)
class Budget:
    """Token counts of one request, known before any frame is decoded."""

    prompt: int          # prompt ids, visual placeholders included
    visual: int          # merged visual tokens of the question video
    clip: int            # visual tokens of the largest clip the tool could return
    observation: int     # ids of the largest tool turn (clip or error)
    frame_patches: int = 0   # patches of the largest frame (one temporal slice) it can show


def _round_up(n: int, m: int) -> int:
    return -(-int(n) // m) * m


def request_budget(renderer: ChatRenderer, request: EpisodeRequest, agent: AgentConfig) -> Budget:
    """Exact prompt length and visual counts of ``request`` from its video's header (no decoding):
    the frame plan of ``load_video`` and the largest clip ``load_clip`` can return for this video.
    With ``agent.text_timestamps`` the clip's group times are taken as the video's duration (the
    longest numbers it can show), so its observation length is an upper bound. A video that
    cannot be read needs no room (its episode ends ``video_error``)."""
    video, use_tool = request.video, request.use_tool
    video_kwargs, clip_kwargs = agent.video_kwargs, agent.clip_kwargs
    error_obs = len(renderer.tool_text_ids(_LONG_TOOL_ERROR))
    vid = clip = frame = 0
    duration = None
    vid_times = clip_groups = None
    if video is not None:
        try:
            info = video_info(video)
            kw = {k: video_kwargs[k] for k in _PLAN_KEYS if k in video_kwargs}
            if kw.get("nframes") is not None:
                kw["fps"] = None  # as load_video: a frame count replaces the rate
            proc = video_kwargs.get("processing") or Processing()   # the model family's patch grid
            plan = vs.plan_video(info.num_frames, info.fps, info.height, info.width, path=video,
                                 factor=proc.factor, **kw)
            f = proc.factor
            vid = -(-len(plan.indices) // 2) * (plan.height // f) * (plan.width // f)
            vid_times = group_times(plan.times, -(-len(plan.indices) // 2))
            duration = info.num_frames / info.fps
            h, w = vs.smart_resize(info.height, info.width, factor=(clip_kwargs.get("processing") or proc).factor,
                                   min_pixels=clip_kwargs.get("min_pixels", vs.CLIP_MIN_PIXELS),
                                   max_pixels=clip_kwargs.get("max_pixels", vs.CLIP_MAX_PIXELS), path=video)
            ticks = math.floor(clip_kwargs.get("fps", vs.CLIP_FPS) * duration) + 1
            frames = min(ticks, clip_kwargs.get("max_frames", vs.CLIP_MAX_FRAMES))
            clip = -(-frames // 2) * (h // f) * (w // f)
            clip_groups = -(-frames // 2)
            p = proc.patch_size
            frame = max((plan.height // p) * (plan.width // p), (h // p) * (w // p) if use_tool else 0)
        except VideoError:
            vid = clip = 0
            duration = None
    vision = Vision("video", vid, vid_times if agent.text_timestamps else None) if vid else None
    prompt = len(renderer.prompt(request.question, vision, duration=duration, use_tool=use_tool).ids)
    obs = error_obs
    if use_tool and clip:
        stamps = (duration or 0.0,) * clip_groups if agent.text_timestamps else None
        obs = max(obs, len(renderer.tool_result_ids(0.0, duration or 0.0, Vision("video", clip, stamps))))
    return Budget(prompt, vid, clip if use_tool else 0, obs, frame)


def size_sampler(budgets: Sequence[Budget], *, batch_size: int, max_turns: int, max_new_tokens: int,
                 cache_length: int | None = None, max_cache_length: int | None = None) -> SamplerConfig:
    """Static shapes that fit every request budgeted (so no batch fails for lack of room):

    - ``cache_length``: given (a context limit: longer episodes end ``length``), or the longest
      prompt + ``max_turns`` generations + a tool turn between each (the largest clip, or an
      error text), rounded up to 64, at most ``max_cache_length``;
    - ``chunk_buckets``: 32, 128, 512, 2048 up to the next power of two above the longest
      prompt or tool turn (longer segments run as several chunks), never above the cache;
    - ``max_visual_tokens``: every row's largest visual input in one call (prefill encodes all
      rows' videos together, and tool clips of several rows can land in one append);
    - ``vision_buckets``: that many patches and three smaller ones, a factor 4 apart, so a
      single clip is not padded to a whole batch's worth;
    - ``decode_steps``: 32 (one host round trip per 32 tokens), at most ``max_new_tokens``.
    """
    if not budgets:
        raise ValueError("no requests to size the sampler for")
    need = max(b.prompt + max_turns * max_new_tokens + (max_turns - 1) * (b.observation + 1) for b in budgets)
    if cache_length is None:
        cache = max(64, _round_up(need, 64))
        cache = cache if max_cache_length is None else min(cache, int(max_cache_length))
    else:
        cache = int(cache_length)
    longest = max(max(b.prompt, b.observation) for b in budgets)
    top = min(2048, cache, max(32, 1 << (longest - 1).bit_length()))
    chunks = tuple(sorted({c for c in (32, 128, 512, 2048) if c < top} | {top}))
    per_row = max(16, max(max(b.visual, b.clip) for b in budgets))
    patches = _round_up(4 * per_row * batch_size, 64)
    vision = tuple(sorted({_round_up(patches // 4 ** k, 16) for k in range(4) if patches // 4 ** k >= 64} | {patches}))
    return SamplerConfig(batch_size=batch_size, cache_length=cache, chunk_buckets=chunks,
                         vision_buckets=vision, max_visual_tokens=patches // 4,
                         decode_steps=max(1, min(32, max_new_tokens)))


class Rollout:
    """Params and requests in, episodes out; owns the sampler and its shapes.

    Build it with :meth:`sized` (shapes from the requests' budgets) or from an explicit
    :class:`SamplerConfig`. ``params`` may be swapped between calls (the RL policy's live
    buffers, no copy); the compiled programs stay."""

    def __init__(self, model_cfg, params, renderer: ChatRenderer, sampler_config: SamplerConfig, *, mesh=None):
        self.model_cfg = model_cfg
        self.renderer = renderer
        self.sampler = Sampler(model_cfg, params, sampler_config, mesh=mesh)

    @classmethod
    def sized(cls, model_cfg, params, renderer: ChatRenderer, budgets: Sequence[Budget], *, batch_size: int,
              max_turns: int, max_new_tokens: int, cache_length: int | None = None,
              max_cache_length: int | None = None, overrides: Mapping[str, Any] | None = None, mesh=None) -> Rollout:
        """A rollout whose shapes fit ``budgets`` (:func:`size_sampler`; ``overrides`` replace
        single :class:`SamplerConfig` fields). The tower's full-attention blocks are banded by
        the largest frame any input can show, unless the model already bands them or runs
        ``blockwise`` attention (which never materialises [N, N])."""
        sc = size_sampler(budgets, batch_size=batch_size, max_turns=max_turns, max_new_tokens=max_new_tokens,
                          cache_length=cache_length, max_cache_length=max_cache_length)
        sc = dataclasses.replace(sc, **dict(overrides or {}))
        largest = max(b.frame_patches for b in budgets)
        rt = model_cfg.runtime
        if largest and not rt.vision_frame_block and rt.attention != "blockwise":
            model_cfg = model_cfg.with_runtime(vision_frame_block=_round_up(largest, 16))
        log.info(f"rollout shapes: batch {sc.batch_size}, cache {sc.cache_length}, chunks {sc.chunk_buckets}, "
                 f"vision {sc.vision_buckets} (sized from {len(budgets)} requests)")
        return cls(model_cfg, params, renderer, sc, mesh=mesh)

    @property
    def config(self) -> SamplerConfig:
        return self.sampler.config

    @property
    def mesh(self):
        return self.sampler.mesh

    @property
    def params(self):
        return self.sampler.params

    @params.setter
    def params(self, params) -> None:
        self.sampler.params = params

    def run(self, requests: Sequence[EpisodeRequest], agent: AgentConfig, *, seed: int = 0,
            isolate_errors: bool = False,
            on_batch: Callable[[int, Sequence[Episode | SamplerError], float], None] | None = None,
            ) -> list[Episode | SamplerError]:
        """Episodes for ``requests`` in order. ``isolate_errors``: a batch that fails with a
        :class:`SamplerError` (one oversized sample) is rerun one row at a time and a row that
        still fails yields its error in place of an episode; otherwise the error propagates.
        ``on_batch(k, results, seconds)`` is called after each batch (eval writes its
        predictions there, so a stopped run keeps what it finished)."""
        B = self.config.batch_size
        out: list[Episode | SamplerError] = []
        try:
            for k, c in enumerate(range(0, len(requests), B)):
                reqs = list(requests[c:c + B])
                t0 = time.perf_counter()
                try:
                    res: list[Episode | SamplerError] = list(
                        run_episodes(self.sampler, self.renderer, reqs, agent, seed=seed + c))
                except SamplerError as e:
                    if not isolate_errors:
                        raise
                    log.warning(f"batch {k + 1}: {e}; running its requests one by one")
                    res = []
                    for r in reqs:
                        try:
                            res += run_episodes(self.sampler, self.renderer, [r], agent, seed=seed + c)
                        except SamplerError as e1:
                            res.append(e1)
                if on_batch is not None:
                    on_batch(k, res, time.perf_counter() - t0)
                out += res
        except jax.errors.JaxRuntimeError as e:
            if "RESOURCE_EXHAUSTED" not in str(e) and "Out of memory" not in str(e):
                raise
            c = self.config
            raise RolloutResourceError(
                f"out of device memory ({str(e).splitlines()[0][:160]}) with batch {c.batch_size}, cache "
                f"{c.cache_length} tokens, vision buckets up to {max(c.vision_buckets)} patches") from None
        return out
