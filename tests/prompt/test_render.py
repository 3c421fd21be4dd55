"""Append-only rendering: incremental ids == full render == tokenising the full text."""

import types

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vital_jax.prompt import ChatRenderer, Conversation, Message, Vision
from vital_jax.prompt.templates import CLIP_TOOL_SCHEMA

CALL = '<think>I should look closer.</think> <tool_call>{"name": "get_video_clip_frame", "arguments": {"start_time": 10.0, "end_time": 20.5}}</tool_call>'
FINAL = "<think>The dog jumps.</think> <answer>B</answer>"


# textual timestamps (Qwen3-VL layout): 4 groups of 6 tokens for the video, 3 of 4 for the clip
VIDEO_TIMES = (0.5, 2.5, 64.8, 125.2)
CLIP_TIMES = (10.2, 11.2, 20.2)


def rollout(r, tool_ok=True, stamps=False):
    video = Vision("video", 24, VIDEO_TIMES if stamps else None)
    clip = Vision("video", 12, CLIP_TIMES if stamps else None)
    c = Conversation(r, "What happens after the dog jumps?", video, duration=125.5, use_tool=True)
    steps = [list(c.ids)]
    steps.append(c.add_assistant(CALL))
    steps.append(c.add_tool_result(10.0, 20.5, clip) if tool_ok else c.add_tool_error("Error: invalid window."))
    steps.append(c.add_assistant(FINAL))
    steps.append(c.finish())
    return c, steps


@pytest.mark.parametrize("stamps", [False, True])
@pytest.mark.parametrize("tool_ok", [True, False])
def test_incremental_equals_full_render(renderer, tool_ok, stamps):
    c, steps = rollout(renderer, tool_ok, stamps)
    full = renderer.render(c.messages)
    assert sum(steps, []) == c.ids == full.ids.tolist()
    assert c.loss_mask == full.loss_mask.tolist()
    assert renderer.tok.encode(renderer.render_text(c.messages)) == c.ids


def test_tool_turn_layout_qwen(qwen_tok):
    r = ChatRenderer(qwen_tok)
    obs = r.tool_result_ids(10.0, 20.5, Vision("video", 3))
    text = qwen_tok.decode(obs)
    assert text == (
        "<|im_end|>\n<|im_start|>tool\n<|vision_start|>" + "<|video_pad|>" * 3
        + "<|vision_end|>Video clip from 10.00 to 20.50 seconds.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert obs[:2] == [151645, 198]  # the newline after <|im_end|> is kept
    assert obs.count(151656) == 3 and obs.count(151652) == 1 and obs.count(151653) == 1


def test_text_timestamps_layout_qwen(qwen_tok):
    r = ChatRenderer(qwen_tok)
    obs = r.tool_result_ids(10.0, 20.5, Vision("video", 6, (10.25, 11.25, 12.0)))
    group = "<|vision_start|>" + "<|video_pad|>" * 2 + "<|vision_end|>"
    assert qwen_tok.decode(obs) == (
        "<|im_end|>\n<|im_start|>tool\n<10.2 seconds>" + group + "<11.2 seconds>" + group + "<12.0 seconds>" + group
        + "Video clip from 10.00 to 20.50 seconds.<|im_end|>\n<|im_start|>assistant\n")
    assert obs.count(151656) == 6 and obs.count(151652) == 3 and obs.count(151653) == 3
    # Qwen2 keeps every digit its own token: "<", "1", "0", ".", "2", " seconds", ">"
    assert [qwen_tok.decode([i]) for i in qwen_tok.encode("<10.2 seconds>")] == ["<", "1", "0", ".", "2", " seconds", ">"]
    # each group's text sits right before its <|vision_start|>; the prompt's video likewise
    p = qwen_tok.decode(r.prompt("Q?", Vision("video", 24, VIDEO_TIMES), duration=125.5, use_tool=False).ids)
    assert p.count("<|video_pad|>") == 24 and p.count("<|vision_start|>") == 4
    for t in ("0.5", "2.5", "64.8", "125.2"):
        assert f"<{t} seconds><|vision_start|>" + "<|video_pad|>" * 6 + "<|vision_end|>" in p


def test_vision_of_group_times():
    # 5 frames -> 3 temporal groups; the last is padded with its last frame (as the patchifier)
    clip = types.SimpleNamespace(kind="video", num_tokens=12, grid_thw=np.asarray([3, 4, 4]),
                                 frame_times=np.asarray([1.0, 1.5, 2.0, 2.5, 3.0]))
    assert Vision.of(clip) == Vision("video", 12)
    assert Vision.of(clip, text_timestamps=True) == Vision("video", 12, (1.25, 2.25, 3.0))
    img = types.SimpleNamespace(kind="image", num_tokens=4, grid_thw=np.asarray([1, 4, 4]), frame_times=np.zeros(1))
    assert Vision.of(img, text_timestamps=True) == Vision("image", 4)  # images carry no time
    with pytest.raises(ValueError, match="Vision.times: 5 groups do not split 12"):
        Vision("video", 12, (0, 1, 2, 3, 4))
    with pytest.raises(ValueError, match="Vision.times: only a video"):
        Vision("image", 4, (0.0,))
    with pytest.raises(ValueError, match="frame_times has 5 frames, which is not 2 temporal groups"):
        Vision.of(types.SimpleNamespace(**{**vars(clip), "grid_thw": np.asarray([2, 4, 4])}), text_timestamps=True)


def test_prompt_contents_and_mask(qwen_tok):
    r = ChatRenderer(qwen_tok)
    p = r.prompt("Q?", Vision("video", 5), duration=12.5, use_tool=True)
    text = qwen_tok.decode(p.ids)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.\n\n# Tools")
    assert '"name": "get_video_clip_frame"' in text and "<tools>" in text and "</tools>" in text
    assert "The video lasts 12.50 seconds. Q?" in text and text.endswith("<|im_start|>assistant\n")
    assert p.loss_mask.sum() == 0 and p.visuals == (Vision("video", 5),)
    no_tool = qwen_tok.decode(r.prompt("Q?", Vision("video", 5), duration=12.5, use_tool=False).ids)
    assert "<tools>" not in no_tool and "get_video_clip_frame" not in no_tool
    img = qwen_tok.decode(r.prompt("Q?", Vision("image", 4), duration=None, use_tool=False).ids)
    assert img.count("<|image_pad|>") == 4 and "video lasts" not in img
    c, _ = rollout(r)
    mask = np.array(c.loss_mask, bool)
    trained = qwen_tok.decode(np.array(c.ids)[mask].tolist())
    assert trained == CALL + FINAL + "<|im_end|>"


def test_tool_must_follow_assistant(qwen_tok):
    r = ChatRenderer(qwen_tok)
    with pytest.raises(ValueError, match="tool turn must follow"):
        r.render([Message("user", "hi"), Message("tool", "x")])


# text that a model could emit: printable, not starting with whitespace (see render.py caveat)
_piece = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=8) | st.sampled_from(
    ["\n", " ", "<think>", "</think>", "<tool_call>", "</tool_call>", "<answer>", "</answer>", "{\"a\": 1}"]
)
assistant_text = st.lists(_piece, min_size=1, max_size=6).map("".join).filter(
    lambda s: bool(s) and not s[0].isspace() and "<|" not in s
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    turns=st.lists(st.tuples(assistant_text, st.integers(1, 30), st.booleans()), min_size=1, max_size=3),
    final=assistant_text,
    question=st.text(max_size=30).filter(lambda s: "<|" not in s),
    use_tool=st.booleans(),
    stamps=st.booleans(),
)
def test_append_only_property(qwen_tok, turns, final, question, use_tool, stamps):
    r = ChatRenderer(qwen_tok)

    def video(n):  # with textual timestamps: n groups of 2 tokens
        return Vision("video", 2 * n, tuple(0.5 + 2 * k for k in range(n))) if stamps else Vision("video", n)

    c = Conversation(r, question, video(7), duration=33.0, use_tool=use_tool)
    checkpoints = [(len(c.messages), list(c.ids))]
    for text, n, ok in turns:
        c.add_assistant(text)
        checkpoints.append((len(c.messages), list(c.ids)))
        c.add_tool_result(1.0, 2.5, video(n)) if ok else c.add_tool_error(f"Error: {text[:5]}")
        checkpoints.append((len(c.messages), list(c.ids)))
    c.add_assistant(final)
    c.finish()
    full = r.render(c.messages)
    assert full.ids.tolist() == c.ids and full.loss_mask.tolist() == c.loss_mask
    for m, ids in checkpoints:
        # a full render of the first m messages is what the sampler held after that turn ...
        part = r.render(c.messages[:m], add_generation_prompt=True, close_last_assistant=False)
        assert part.ids.tolist() == ids
        # ... and it is a prefix of everything after it
        assert c.ids[: len(ids)] == ids
    assert qwen_tok.encode(r.render_text(c.messages)) == c.ids


def test_custom_tools_and_system(small_tok):
    r = ChatRenderer(small_tok, system="Be brief.", tools=[CLIP_TOOL_SCHEMA, {"type": "function", "function": {"name": "noop"}}])
    text = small_tok.decode(r.prompt("q", None, duration=3.0, use_tool=True).ids)
    assert text.startswith("<|im_start|>system\nBe brief.") and '"name": "noop"' in text


def test_compact_prompt_set_is_short_and_keeps_the_turn_structure(qwen_tok):
    """The compact set: the same turns, tags and tool-call format in far fewer prompt tokens; the
    tool list names each tool's arguments; the clip caption keeps the window."""
    full, compact = ChatRenderer(qwen_tok), ChatRenderer(qwen_tok, prompts="compact")
    video = Vision("video", 8)
    n_full = len(full.prompt("When?", video, duration=20.0, use_tool=True).ids)
    p = compact.prompt("When?", video, duration=20.0, use_tool=True)
    assert len(p.ids) < n_full / 3, (len(p.ids), n_full)
    text = qwen_tok.decode(p.ids)
    assert "get_video_clip_frame(start_time, end_time)" in text and "<tool_call>" in text
    assert "The video lasts 20.0 s. When?" in text
    no_tool = qwen_tok.decode(compact.prompt("When?", video, duration=20.0, use_tool=False).ids)
    assert "get_video_clip_frame" not in no_tool
    assert qwen_tok.decode(compact.tool_result_ids(2.0, 7.5, Vision("video", 4))).endswith(
        "Clip 2.0 to 7.5 s.<|im_end|>\n<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="prompt set 'short' is unknown"):
        ChatRenderer(qwen_tok, prompts="short")
