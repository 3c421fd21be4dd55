"""Prompt texts: system prompt, the clip tool's JSON schema, user templates, clip caption.

Two named sets (:data:`PROMPTS`, chosen by ``data.vision.prompt`` and recorded with the
checkpoint like the other input settings):

- ``"vital"`` (default): VITAL's released prompts in substance (method.md section 3; the exact
  strings are ours), Qwen2.5's function-calling paragraph with the clip tool's JSON schema.
  What a Qwen2.5-VL checkpoint expects.
- ``"compact"``: the same turn structure and output format in a few words. For models trained
  from scratch (the synthetic suite, the demo): the full set costs ~300 prompt tokens a row
  (the schema alone ~270) that a tiny model must read past on every step and that buy it
  nothing; training sequences per CPU second is what it learns from.
"""

from __future__ import annotations

import dataclasses
import json

DEFAULT_SYSTEM = "You are a helpful assistant."

CLIP_TOOL_NAME = "get_video_clip_frame"

CLIP_TOOL_SCHEMA = {
    "type": "function",
    "function": {
        "name": CLIP_TOOL_NAME,
        "description": (
            "Get densely sampled frames (2 fps, at most 64) of the video between start_time "
            "and end_time, in seconds. The window must lie inside the video and be longer "
            "than 1 second."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "start_time": {"type": "number", "description": "Start of the clip in seconds, two decimals."},
                "end_time": {"type": "number", "description": "End of the clip in seconds, two decimals."},
            },
            "required": ["start_time", "end_time"],
        },
    },
}


def tools_block(tools) -> str:
    """The Qwen2.5 function-calling paragraph that follows the system text."""
    lines = "".join("\n" + json.dumps(t, ensure_ascii=False) for t in tools)
    return (
        "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
        + lines
        + "\n</tools>\n\nFor each function call, return a json object with function name and "
        "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    )


USER_TEMPLATE_TOOL = (
    "The video lasts {duration:.2f} seconds. {question}\n"
    "First think step by step inside <think></think> tags. If you need to look at a part of "
    "the video more closely, you may call the tool get_video_clip_frame ONCE inside "
    "<tool_call></tool_call> tags with a start_time and an end_time in seconds. After you "
    "receive the clip, think again inside <think></think> tags. Finally give your answer "
    "inside <answer></answer> tags.\n"
    "Output format: <think>...</think> <tool_call>...</tool_call> <think>...</think> "
    "<answer>...</answer>"
)

USER_TEMPLATE_NO_TOOL = (
    "The video lasts {duration:.2f} seconds. {question}\n"
    "First think step by step inside <think></think> tags, then give your answer inside "
    "<answer></answer> tags.\n"
    "Output format: <think>...</think> <answer>...</answer>"
)

USER_TEMPLATE_IMAGE = (
    "{question}\n"
    "First think step by step inside <think></think> tags, then give your answer inside "
    "<answer></answer> tags.\n"
    "Output format: <think>...</think> <answer>...</answer>"
)


CLIP_CAPTION = "Video clip from {start:.2f} to {end:.2f} seconds."


def _signature(tool: dict) -> str:
    """``name(arg, ...)`` of a JSON tool schema (the compact set's one-line tool list)."""
    fn = tool["function"]
    return f"{fn['name']}({', '.join(fn.get('parameters', {}).get('properties', {}))})"


@dataclasses.dataclass(frozen=True)
class PromptSet:
    """Every text the renderer writes around the model's own tokens.

    ``tools_text`` follows ``system`` in the system turn of a prompt that offers tools; its
    ``{names}`` is the tools' signatures (``None``: Qwen2.5's ``# Tools`` paragraph with the JSON
    schemas).
    """

    name: str
    system: str
    user_tool: str
    user_no_tool: str
    user_image: str
    clip_caption: str = CLIP_CAPTION
    tools_text: str | None = None

    def user_text(self, question: str, *, duration: float | None, use_tool: bool) -> str:
        """The user turn's text for a video (with or without the tool) or an image (no duration)."""
        if duration is None:
            return self.user_image.format(question=question)
        template = self.user_tool if use_tool else self.user_no_tool
        return template.format(duration=duration, question=question)

    def system_text(self, use_tool: bool, tools=(CLIP_TOOL_SCHEMA,)) -> str:
        if not use_tool or not tools:
            return self.system
        if self.tools_text is None:
            return self.system + tools_block(tools)
        return self.system + self.tools_text.format(names=", ".join(map(_signature, tools)))

    def caption(self, start: float, end: float) -> str:
        """Text after the clip in the tool turn (method.md section 2)."""
        return self.clip_caption.format(start=start, end=end)


PROMPTS = {
    "vital": PromptSet("vital", DEFAULT_SYSTEM, USER_TEMPLATE_TOOL, USER_TEMPLATE_NO_TOOL, USER_TEMPLATE_IMAGE),
    "compact": PromptSet(
        "compact", DEFAULT_SYSTEM,
        user_tool="The video lasts {duration:.1f} s. {question} Think, call the tool once, think, answer.",
        user_no_tool="The video lasts {duration:.1f} s. {question} Think, then answer.",
        user_image="{question} Think, then answer.",
        clip_caption="Clip {start:.1f} to {end:.1f} s.",
        tools_text=("\nTools: {names}. Call one as <tool_call>{{\"name\": ..., \"arguments\": {{...}}}}"
                    "</tool_call>.")),
}


def prompt_set(name: str) -> PromptSet:
    """The named :class:`PromptSet`; a ValueError lists the names there are."""
    try:
        return PROMPTS[name]
    except KeyError:
        raise ValueError(f"prompt set {name!r} is unknown; the sets are {sorted(PROMPTS)}") from None


def user_text(question: str, *, duration: float | None, use_tool: bool) -> str:
    """The ``"vital"`` set's user text (see :meth:`PromptSet.user_text`)."""
    return PROMPTS["vital"].user_text(question, duration=duration, use_tool=use_tool)


def clip_caption(start: float, end: float) -> str:
    """The ``"vital"`` set's clip caption."""
    return PROMPTS["vital"].caption(start, end)
