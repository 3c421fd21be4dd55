"""Tokenised SFT examples and bucket-padded batches, on the prompt package's renderer.

A CoT record becomes ``system, user(video, question), assistant(cot)``; a Tool-CoT record
becomes ``system(+tools), user(video, question), assistant(turn 0 … </tool_call>),
tool(clip, "Video clip from s to e seconds."), assistant(turn 1 … </answer>)``. The renderer
gives the loss mask: 1 on assistant tokens, 0 on the prompt and on the tool observation.

How many visual tokens a video or clip costs depends on the frame sampler (``vital_jax.video``);
callers pass :class:`~vital_jax.prompt.Vision` placeholders with those counts, so this module
never decodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vital_jax.data.records import Record


def prompt_question(record: Record, question: str | None = None) -> str:
    """The question with its options on following lines (``question`` overrides, e.g. a hint)."""
    q = record.question if question is None else question
    return q + "".join("\n" + o for o in record.options)


def sft_messages(example: dict[str, Any], renderer, vision, clip=None) -> list:
    """Messages of one SFT example (``example`` as the pipeline makes it, or ``{"record": r}``)."""
    from vital_jax.prompt import Message

    rec: Record = example["record"]
    use_tool = rec.kind == "tool_cot" or rec.use_tool
    question = prompt_question(rec, example.get("question"))
    msgs = renderer.prompt_messages(question, vision, duration=rec.duration if rec.is_video else None,
                                    use_tool=use_tool)
    if rec.kind == "cot":
        return msgs + [Message("assistant", rec.cot)]
    if rec.kind == "tool_cot":
        if rec.tool.observation is not None:      # a text tool's answer
            observation = rec.tool.observation
        elif clip is None:
            raise ValueError(f"{rec.file}: record {rec.index}: a Tool-CoT example needs the clip's Vision")
        else:
            observation = (clip, renderer.prompts.caption(*rec.tool.tool_params))
        return msgs + [Message("assistant", rec.tool.turns[0]), Message("tool", observation),
                       Message("assistant", rec.tool.turns[1])]
    raise ValueError(f"{rec.file}: record {rec.index}: kind {rec.kind!r} has no SFT target")


def tokenize_sft(example: dict[str, Any], renderer, vision, clip=None):
    """:class:`~vital_jax.prompt.Rendered` ids + loss mask of one SFT example."""
    return renderer.render(sft_messages(example, renderer, vision, clip))


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket holding ``length`` tokens; ValueError when none does."""
    for b in sorted(buckets):
        if length <= b:
            return b
    raise ValueError(f"sequence of {length} tokens exceeds the largest token bucket {max(buckets)}")


def pad_batch(rendered: Sequence[Any], buckets: Sequence[int], pad_id: int) -> dict[str, np.ndarray]:
    """Right-pad to one bucket: ``input_ids``/``attention_mask``/``loss_mask`` ``[B, L]``.

    ``loss_mask`` is the renderer's mask (observations and prompt 0) and 0 on padding, shifted
    for next-token prediction by the loss (target ``t`` is predicted at position ``t - 1``).
    """
    if not rendered:
        raise ValueError("pad_batch needs at least one example")
    length = bucket_for(max(len(r) for r in rendered), buckets)
    b = len(rendered)
    ids = np.full((b, length), pad_id, np.int32)
    attn = np.zeros((b, length), np.int32)
    loss = np.zeros((b, length), np.int8)
    for i, r in enumerate(rendered):
        n = len(r)
        ids[i, :n], attn[i, :n], loss[i, :n] = r.ids, 1, r.loss_mask
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": loss}
