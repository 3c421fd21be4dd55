"""Append-only rendering of VITAL conversations into token ids and loss masks.

A conversation is a list of :class:`Message`. Rendering is segment-wise: text between
added tokens is tokenised on its own and the special/placeholder ids are inserted directly,
so (1) a video costs no tokenizer call per ``<|video_pad|>``, and (2) the ids after turn k
are a prefix of the ids after turn k+1. The sampler never re-renders: it asks for the ids
of the next piece (:meth:`ChatRenderer.tool_result_ids`, ...) and appends them to its KV
cache; :meth:`ChatRenderer.render` of the whole conversation gives the same ids (tested).

Layout (Qwen2-VL chat format, VITAL's tool turn from method.md section 2)::

    <|im_start|>system\\n{system}{tools block}<|im_end|>\\n
    <|im_start|>user\\n<|vision_start|>{n x <|video_pad|>}<|vision_end|>{text}<|im_end|>\\n
    <|im_start|>assistant\\n{generated ... </tool_call>}                          <- mask 1
    <|im_end|>\\n<|im_start|>tool\\n<|vision_start|>...<|vision_end|>Video clip from
        {s:.2f} to {e:.2f} seconds.<|im_end|>\\n<|im_start|>assistant\\n           <- mask 0
    {generated ... </answer>}<|im_end|>                                           <- mask 1

With textual timestamps (``Vision.times``, Qwen3-VL style; off by default) each video block
becomes one block per temporal group: ``<0.5 seconds><|vision_start|>{pads}<|vision_end|>
<1.5 seconds><|vision_start|>...``.

Caveat of any segment-wise scheme: an assistant text that *starts* with a newline would
merge with the preceding ``\\n`` if the whole string were tokenised at once; the sampler's
ids are what the model produced, so the segment-wise ids are the truth.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from vital_jax.prompt import templates
from vital_jax.prompt.tokenizer import Tokenizer
from vital_jax.prompt.tokens import IMAGE_PAD, IM_END, IM_START, VIDEO_PAD, VISION_END, VISION_START

ROLES = ("system", "user", "assistant", "tool")


def group_times(frame_times, groups: int, temporal_patch: int = 2) -> tuple[float, ...]:
    """Seconds of each temporal group (one temporal patch of ``temporal_patch`` frames).

    Qwen3-VL's convention: the mean of the group's first and last frame times, the frame list
    padded by repeating its last frame (as the patchifier pads the clip). ``groups`` must be
    ``ceil(len(frame_times) / temporal_patch)``.
    """
    t = [float(x) for x in np.asarray(frame_times, np.float64).reshape(-1)]
    if not t:
        raise ValueError("frame_times is empty: a video needs at least one frame time")
    if -(-len(t) // temporal_patch) != groups:
        raise ValueError(f"frame_times has {len(t)} frames, which is not {groups} temporal groups of "
                         f"{temporal_patch}")
    t += [t[-1]] * (groups * temporal_patch - len(t))
    return tuple((t[k * temporal_patch] + t[(k + 1) * temporal_patch - 1]) / 2 for k in range(groups))


def timestamp_text(seconds: float) -> str:
    """The text written before a temporal group's visual tokens (Qwen3-VL: ``<12.5 seconds>``)."""
    return f"<{seconds:.1f} seconds>"


@dataclasses.dataclass(frozen=True)
class Vision:
    """A visual placeholder: ``kind`` ``"video"``/``"image"`` expanding to ``num_tokens`` pads.

    ``times`` (videos only): seconds of each temporal group. When given, the video is written
    Qwen3-VL style, ``<t seconds><|vision_start|>{pads of that group}<|vision_end|>`` per group
    (``num_tokens / len(times)`` pads each) instead of one ``<|vision_start|>...<|vision_end|>``
    block; M-RoPE then positions each group as its own t = 1 item (``rope.row_positions``
    reads that layout from the ids).
    """

    kind: str
    num_tokens: int
    times: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.kind not in ("video", "image"):
            raise ValueError(f"Vision.kind must be 'video' or 'image', got {self.kind!r}")
        if self.num_tokens <= 0:
            raise ValueError(f"Vision.num_tokens must be positive, got {self.num_tokens}")
        if self.times is not None:
            object.__setattr__(self, "times", tuple(float(t) for t in self.times))
            if self.kind != "video":
                raise ValueError(f"Vision.times: only a video has group times, not a {self.kind}")
            if not self.times or self.num_tokens % len(self.times):
                raise ValueError(f"Vision.times: {len(self.times)} groups do not split {self.num_tokens} "
                                 "tokens evenly")

    @property
    def groups(self) -> list[int]:
        """Placeholder tokens per ``<|vision_start|>...<|vision_end|>`` block."""
        if self.times is None:
            return [self.num_tokens]
        return [self.num_tokens // len(self.times)] * len(self.times)

    @classmethod
    def of(cls, visual, *, text_timestamps: bool = False) -> "Vision":
        """From a :class:`vital_jax.video.VisualInput` (anything with ``kind``/``num_tokens``;
        with ``text_timestamps`` a video also needs ``frame_times`` and ``grid_thw``)."""
        times = None
        if text_timestamps and visual.kind == "video":  # images carry no time (as Qwen3-VL)
            times = group_times(visual.frame_times, int(np.asarray(visual.grid_thw).reshape(3)[0]))
        return cls(visual.kind, int(visual.num_tokens), times)


Part = str | Vision


@dataclasses.dataclass(frozen=True)
class Message:
    role: str
    content: str | tuple[Part, ...]

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"Message.role must be one of {ROLES}, got {self.role!r}")
        if not isinstance(self.content, str):
            object.__setattr__(self, "content", tuple(self.content))

    @property
    def parts(self) -> tuple[Part, ...]:
        return (self.content,) if isinstance(self.content, str) else self.content


@dataclasses.dataclass(frozen=True)
class Rendered:
    """Token ids, loss mask (1 on assistant-generated tokens) and the visuals in order."""

    ids: np.ndarray  # int32 [L]
    loss_mask: np.ndarray  # int8 [L]
    visuals: tuple[Vision, ...]

    def __len__(self) -> int:
        return int(self.ids.shape[0])


class _Builder:
    def __init__(self):
        self.ids: list[int] = []
        self.mask: list[int] = []
        self.visuals: list[Vision] = []

    def add(self, ids: Sequence[int], trainable: bool = False) -> None:
        self.ids.extend(ids)
        self.mask.extend([int(trainable)] * len(ids))

    def done(self) -> Rendered:
        return Rendered(np.asarray(self.ids, np.int32), np.asarray(self.mask, np.int8), tuple(self.visuals))


class ChatRenderer:
    """Renders VITAL prompts and turns for one tokenizer.

    Example (the sampler's view)::

        r = ChatRenderer(tok)
        prompt = r.prompt(question, Vision.of(video), duration=info.duration, use_tool=True)
        ids = list(prompt.ids)               # prefill these
        ids += generated                     # ... up to and including </tool_call>
        obs = r.tool_result_ids(12.0, 20.5, Vision.of(clip))   # append (loss mask 0)
        ids += obs; ids += generated2 + r.end_of_turn_ids()

    Args:
      tokenizer: a :class:`Tokenizer` (real Qwen2 vocab or a small trained one).
      prompts: the texts around the model's tokens: a :class:`templates.PromptSet` or the name
        of one (``"vital"``, ``"compact"``; ``data.vision.prompt`` of a run).
      system: system prompt text (default: the prompt set's).
      tools: JSON tool schemas put in the system turn when a prompt uses the tool.
    """

    def __init__(self, tokenizer: Tokenizer, *, prompts: str | templates.PromptSet = "vital",
                 system: str | None = None, tools: Sequence[dict] = (templates.CLIP_TOOL_SCHEMA,)):
        self.tok = tokenizer
        self.prompts = templates.prompt_set(prompts) if isinstance(prompts, str) else prompts
        self.system = self.prompts.system if system is None else system
        self.tools = tuple(tools)
        sp = tokenizer.special
        self._im_start, self._im_end = sp.im_start, sp.im_end
        self._vs, self._ve = sp.vision_start, sp.vision_end
        self._pad = {"video": sp.video_pad, "image": sp.image_pad}
        self._nl = tokenizer.encode("\n")
        self._role_ids = {role: tokenizer.encode(role + "\n") for role in ROLES}

    # ----------------------------------------------------------------- pieces
    def text_ids(self, text: str) -> list[int]:
        return self.tok.encode(text) if text else []

    def vision_ids(self, vision: Vision) -> list[int]:
        """``<|vision_start|>`` + n pads + ``<|vision_end|>``; with ``vision.times`` one such
        block per temporal group, each after its ``<t seconds>`` text (tokenised on its own:
        the added tokens around it cut the text there anyway, so the ids equal a full encode)."""
        pad = self._pad[vision.kind]
        if vision.times is None:
            return [self._vs] + [pad] * vision.num_tokens + [self._ve]
        out: list[int] = []
        for t, n in zip(vision.times, vision.groups):
            out += self.text_ids(timestamp_text(t)) + [self._vs] + [pad] * n + [self._ve]
        return out

    def _open(self, role: str) -> list[int]:
        return [self._im_start] + self._role_ids[role]

    def _close(self) -> list[int]:
        return [self._im_end] + self._nl

    def _content(self, b: _Builder, parts: Sequence[Part], trainable: bool = False) -> None:
        for p in parts:
            if isinstance(p, Vision):
                b.add(self.vision_ids(p))
                b.visuals.append(p)
            else:
                b.add(self.text_ids(p), trainable)

    def system_text(self, use_tool: bool) -> str:
        return dataclasses.replace(self.prompts, system=self.system).system_text(use_tool, self.tools)

    def assistant_ids(self, text: str) -> list[int]:
        """Canonical ids of assistant text (SFT targets; the sampler keeps its own ids)."""
        return self.text_ids(text)

    def generation_prompt_ids(self) -> list[int]:
        return self._open("assistant")

    def end_of_turn_ids(self) -> list[int]:
        """What closes the final assistant turn (trainable: the model learns to stop)."""
        return [self._im_end]

    def tool_result_ids(self, start: float, end: float, clip: Vision) -> list[int]:
        """The observation appended after an assistant turn that ended with ``</tool_call>``."""
        b = _Builder()
        self._tool_turn(b, (clip, self.prompts.caption(start, end)))
        return b.ids

    def tool_text_ids(self, message: str) -> list[int]:
        """A text observation: a text tool's answer, or the error when the call was invalid."""
        b = _Builder()
        self._tool_turn(b, (message,))
        return b.ids

    def _tool_turn(self, b: _Builder, parts: Sequence[Part]) -> None:
        b.add(self._close() + self._open("tool"))
        self._content(b, parts)
        b.add(self._close() + self._open("assistant"))

    # ----------------------------------------------------------------- whole prompts
    def prompt(self, question: str, vision: Vision | None, *, duration: float | None,
               use_tool: bool) -> Rendered:
        """System + user turn + ``<|im_start|>assistant\\n``: what the sampler prefills."""
        return self.render(self.prompt_messages(question, vision, duration=duration, use_tool=use_tool),
                           add_generation_prompt=True)

    def prompt_messages(self, question: str, vision: Vision | None, *, duration: float | None,
                        use_tool: bool) -> list[Message]:
        user = self.prompts.user_text(question, duration=duration, use_tool=use_tool)
        parts = (user,) if vision is None else (vision, user)
        return [Message("system", self.system_text(use_tool)), Message("user", parts)]

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = False,
               close_last_assistant: bool = True) -> Rendered:
        """Token ids + loss mask of a whole conversation (segment-wise, see module doc)."""
        b = _Builder()
        prev = None
        for i, m in enumerate(messages):
            last = i == len(messages) - 1
            if m.role in ("system", "user"):
                if prev == "assistant":
                    b.add(self._close())
                b.add(self._open(m.role))
                self._content(b, m.parts)
                b.add(self._close())
            elif m.role == "assistant":
                if prev != "tool":  # a tool turn already ends with <|im_start|>assistant\n
                    b.add(self._open("assistant"))
                self._content(b, m.parts, trainable=True)
                if last and close_last_assistant:
                    b.add(self.end_of_turn_ids(), trainable=True)
            else:  # tool
                if prev != "assistant":
                    raise ValueError(f"message {i}: a tool turn must follow an assistant turn, not {prev!r}")
                self._tool_turn(b, m.parts)
            prev = m.role
        if add_generation_prompt and prev in ("system", "user"):
            b.add(self.generation_prompt_ids())
        return b.done()

    def render_text(self, messages: Sequence[Message], *, add_generation_prompt: bool = False,
                    close_last_assistant: bool = True) -> str:
        """The same conversation as one string (placeholders expanded): for checks and logs."""
        out, prev = [], None

        def content(parts):
            for p in parts:
                if isinstance(p, Vision):
                    pad = VIDEO_PAD if p.kind == "video" else IMAGE_PAD
                    stamps = [""] if p.times is None else [timestamp_text(t) for t in p.times]
                    out.extend(s + VISION_START + pad * n + VISION_END for s, n in zip(stamps, p.groups))
                else:
                    out.append(p)

        for i, m in enumerate(messages):
            last = i == len(messages) - 1
            if m.role in ("system", "user"):
                if prev == "assistant":
                    out.append(IM_END + "\n")
                out.append(f"{IM_START}{m.role}\n")
                content(m.parts)
                out.append(IM_END + "\n")
            elif m.role == "assistant":
                if prev != "tool":
                    out.append(f"{IM_START}assistant\n")
                content(m.parts)
                if last and close_last_assistant:
                    out.append(IM_END)
            else:
                out.append(f"{IM_END}\n{IM_START}tool\n")
                content(m.parts)
                out.append(f"{IM_END}\n{IM_START}assistant\n")
            prev = m.role
        if add_generation_prompt and prev in ("system", "user"):
            out.append(f"{IM_START}assistant\n")
        return "".join(out)


class Conversation:
    """A growing token sequence for one rollout (thin stateful shell over ChatRenderer).

    Every ``add_*`` returns the ids it appended, so the caller can feed exactly those into
    the KV cache; ``ids``/``loss_mask`` always equal ``renderer.render(messages)``.
    """

    def __init__(self, renderer: ChatRenderer, question: str, vision: Vision | None, *,
                 duration: float | None, use_tool: bool):
        self.renderer = renderer
        self.messages = renderer.prompt_messages(question, vision, duration=duration, use_tool=use_tool)
        first = renderer.render(self.messages, add_generation_prompt=True)
        self.ids, self.loss_mask = list(first.ids), list(first.loss_mask)
        self.visuals = list(first.visuals)

    def _append(self, ids: Sequence[int], trainable: bool) -> list[int]:
        ids = [int(i) for i in ids]
        self.ids += ids
        self.loss_mask += [int(trainable)] * len(ids)
        return ids

    def add_assistant(self, text: str, ids: Sequence[int] | None = None) -> list[int]:
        """Generated tokens (``ids`` if the sampler has them, else the text's canonical ids)."""
        self.messages.append(Message("assistant", text))
        return self._append(self.renderer.assistant_ids(text) if ids is None else ids, True)

    def add_tool_result(self, start: float, end: float, clip: Vision) -> list[int]:
        self.messages.append(Message("tool", (clip, self.renderer.prompts.caption(start, end))))
        self.visuals.append(clip)
        return self._append(self.renderer.tool_result_ids(start, end, clip), False)

    def add_tool_error(self, message: str) -> list[int]:
        self.messages.append(Message("tool", message))
        return self._append(self.renderer.tool_text_ids(message), False)

    def finish(self) -> list[int]:
        """Close the final assistant turn with ``<|im_end|>`` (trainable)."""
        return self._append(self.renderer.end_of_turn_ids(), True)
