"""Tools the agent can call, by name. The clip tool (VITAL's ``get_video_clip_frame``) is the
default; a tool is any callable ``(arguments, context) -> ToolResult``.

A tool never raises for a bad call: a wrong argument becomes ``ToolResult.error`` (the model sees
it as an observation and the episode goes on). A problem with the episode's own input (the video
cannot be read) is ``ToolResult.fatal``: that episode ends with the reason recorded, the batch
goes on.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import math
from collections.abc import Callable
from typing import Any

from vital_jax.prompt.templates import CLIP_TOOL_NAME
from vital_jax.video import load_clip
from vital_jax.video.errors import BadVideoSize, VideoError, WindowOutOfRange


@dataclasses.dataclass(frozen=True)
class ToolContext:
    """What a tool may know about its episode: the video file and its duration, and the clip
    options (``load_clip`` keyword arguments, e.g. ``timestamps=True`` or pixel limits)."""

    video: str | None
    duration: float | None
    clip_kwargs: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ToolResult:
    """One call's outcome: a visual observation (+ the clip range), a text observation (``text``:
    a tool that answers in words, e.g. a lookup or a transcript), an error for the model
    (``error = (code, message)``), or a fatal input problem (``fatal`` message)."""

    visual: Any = None
    text: str | None = None
    start: float | None = None
    end: float | None = None
    error: tuple[str, str] | None = None
    fatal: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.fatal is None


Tool = Callable[[dict, ToolContext], ToolResult]
TOOLS: dict[str, Tool] = {}


def register_tool(name: str):
    """Decorator: make ``fn(arguments, context) -> ToolResult`` callable by the model as ``name``."""
    def deco(fn: Tool) -> Tool:
        TOOLS[name] = fn
        return fn
    return deco


def get_tool(name: str, registry: dict[str, Tool] | None = None) -> Tool | None:
    return (TOOLS if registry is None else registry).get(name)


def _number(args: dict, key: str) -> float | tuple[str, str]:
    v = args.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return ("tool_call_bad_argument_type", f"{key} must be a finite number, got {v!r}")
    return float(v)


@register_tool(CLIP_TOOL_NAME)
def get_video_clip_frame(arguments: dict, ctx: ToolContext) -> ToolResult:
    """VITAL's clip tool: frames of ``[start_time, end_time]`` at 2 fps (at most 64), by
    :func:`vital_jax.video.load_clip` (validation: inside the video, longer than 1 s)."""
    want = {"start_time", "end_time"}
    if set(arguments) != want:
        return ToolResult(error=("tool_call_bad_arguments",
                                 f"{CLIP_TOOL_NAME} takes exactly start_time and end_time, got {sorted(arguments)}"))
    start, end = _number(arguments, "start_time"), _number(arguments, "end_time")
    for v in (start, end):
        if isinstance(v, tuple):
            return ToolResult(error=v)
    if ctx.video is None:
        return ToolResult(error=("no_video", "there is no video to clip"))
    try:
        clip = load_clip(ctx.video, start, end, **ctx.clip_kwargs)
    except (WindowOutOfRange, BadVideoSize) as e:  # the model asked for something invalid
        return ToolResult(error=("invalid_window", e.problem))
    except VideoError as e:  # the file itself is broken: end this episode
        return ToolResult(fatal=f"{type(e).__name__}: {e}")
    return ToolResult(visual=clip, start=start, end=end)


class SyncExecutor:
    """Runs a tool call on the spot; ``submit`` returns a finished future (the default).
    Pass a ``concurrent.futures.ThreadPoolExecutor`` instead to overlap tool work (video
    decoding) with decoding of the other rows: the agent loop only uses ``submit`` and
    ``Future.done()/result()``."""

    def submit(self, fn, *args, **kwargs) -> cf.Future:
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - surfaced by result()
            fut.set_exception(e)
        return fut
