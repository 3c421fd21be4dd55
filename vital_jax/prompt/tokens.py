"""Special-token strings of the Qwen2-VL chat format and their ids."""

from __future__ import annotations

import dataclasses

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

# The added tokens of Qwen2-VL / Qwen2.5-VL checkpoints, with their fixed ids. Tokens with
# special=False (tool_call, fim, ...) are still matched atomically in text.
QWEN2_VL_ADDED_TOKENS: tuple[tuple[int, str, bool], ...] = (
    (151643, ENDOFTEXT, True),
    (151644, IM_START, True),
    (151645, IM_END, True),
    (151646, "<|object_ref_start|>", True),
    (151647, "<|object_ref_end|>", True),
    (151648, "<|box_start|>", True),
    (151649, "<|box_end|>", True),
    (151650, "<|quad_start|>", True),
    (151651, "<|quad_end|>", True),
    (151652, VISION_START, True),
    (151653, VISION_END, True),
    (151654, "<|vision_pad|>", True),
    (151655, IMAGE_PAD, True),
    (151656, VIDEO_PAD, True),
    (151657, TOOL_CALL_OPEN, False),
    (151658, TOOL_CALL_CLOSE, False),
    (151659, "<|fim_prefix|>", False),
    (151660, "<|fim_middle|>", False),
    (151661, "<|fim_suffix|>", False),
    (151662, "<|fim_pad|>", False),
    (151663, "<|repo_name|>", False),
    (151664, "<|file_sep|>", False),
)

# What a small synthetic tokenizer must carry (ids assigned by training, in this order).
SMALL_VOCAB_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    (ENDOFTEXT, True),
    (IM_START, True),
    (IM_END, True),
    (VISION_START, True),
    (VISION_END, True),
    (IMAGE_PAD, True),
    (VIDEO_PAD, True),
    (TOOL_CALL_OPEN, False),
    (TOOL_CALL_CLOSE, False),
)


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
    """Ids the model config and sampler need (``pad`` is ``<|endoftext|>``, ``eos`` ``<|im_end|>``)."""

    pad: int
    eos: int
    im_start: int
    im_end: int
    vision_start: int
    vision_end: int
    image_pad: int
    video_pad: int
    tool_call_open: int | None = None
    tool_call_close: int | None = None

    @classmethod
    def from_lookup(cls, token_to_id) -> "SpecialTokens":
        """Build from a ``str -> id | None`` lookup; raises KeyError naming a missing token."""

        def need(tok: str) -> int:
            i = token_to_id(tok)
            if i is None:
                raise KeyError(f"tokenizer has no id for required special token {tok!r}")
            return int(i)

        opt_open, opt_close = token_to_id(TOOL_CALL_OPEN), token_to_id(TOOL_CALL_CLOSE)
        return cls(
            pad=need(ENDOFTEXT),
            eos=need(IM_END),
            im_start=need(IM_START),
            im_end=need(IM_END),
            vision_start=need(VISION_START),
            vision_end=need(VISION_END),
            image_pad=need(IMAGE_PAD),
            video_pad=need(VIDEO_PAD),
            tool_call_open=None if opt_open is None else int(opt_open),
            tool_call_close=None if opt_close is None else int(opt_close),
        )


QWEN2_VL_SPECIAL_TOKENS = SpecialTokens(
    pad=151643, eos=151645, im_start=151644, im_end=151645, vision_start=151652,
    vision_end=151653, image_pad=151655, video_pad=151656, tool_call_open=151657,
    tool_call_close=151658,
)
