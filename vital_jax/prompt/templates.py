"""VITAL's prompt texts: system prompt, the clip tool's JSON schema, user templates.

Wording follows VITAL's released prompts in substance (method.md section 3); the exact
strings are ours. They are module constants so a checkpoint trained with other wording can
pass its own strings to the renderer.
"""

from __future__ import annotations

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


def user_text(question: str, *, duration: float | None, use_tool: bool) -> str:
    """The user turn's text for a video (with or without the tool) or an image (no duration)."""
    if duration is None:
        return USER_TEMPLATE_IMAGE.format(question=question)
    template = USER_TEMPLATE_TOOL if use_tool else USER_TEMPLATE_NO_TOOL
    return template.format(duration=duration, question=question)


def clip_caption(start: float, end: float) -> str:
    """Text after the clip in the tool turn (method.md section 2)."""
    return f"Video clip from {start:.2f} to {end:.2f} seconds."
