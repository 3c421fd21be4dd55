"""Parsers: strict meaning, tolerant surface, never raise on model output."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vital_jax.eval.metrics import read_interval
from vital_jax.prompt.parsers import ClipCall, ParseError, parse_clip_call, parse_tool_call
from vital_jax.rl.rewards import format_reward, parse_span

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(s=finite, e=finite, pre=st.text(max_size=20), post=st.text(max_size=20), ws=st.sampled_from(["", " ", "\n", "\n  "]))
def test_clip_call_roundtrip(s, e, pre, post, ws):
    body = json.dumps({"name": "get_video_clip_frame", "arguments": {"start_time": s, "end_time": e}})
    text = f"{pre.replace('<tool_call>', '')}<tool_call>{ws}{body}{ws}</tool_call>{post}"
    assert parse_clip_call(text) == ClipCall(s, e)


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=80) | st.builds(lambda a, b: f"<tool_call>{a}</tool_call>{b}", st.text(max_size=40), st.text(max_size=10)))
def test_never_raises(text):
    for result in (parse_clip_call(text), parse_tool_call(text)):
        assert isinstance(result, (ParseError, ClipCall)) or hasattr(result, "name")


@pytest.mark.parametrize(
    "text,code",
    [
        ("no call here", "no_tool_call"),
        ("<tool_call>{\"name\": \"get_video_clip_frame\"", "tool_call_unterminated"),
        ("<tool_call>not json</tool_call>", "tool_call_no_json"),
        ("<tool_call>{bad}</tool_call>", "tool_call_bad_json"),
        ('<tool_call>{"name": "zoom", "arguments": {}}</tool_call>', "unknown_tool"),
        ('<tool_call>{"name": "get_video_clip_frame", "arguments": {"start_time": "1", "end_time": 3}}</tool_call>', "tool_call_bad_argument_type"),
        ('<tool_call>{"name": "get_video_clip_frame", "arguments": {"start_time": true, "end_time": 3}}</tool_call>', "tool_call_bad_argument_type"),
        ('<tool_call>{"name": "get_video_clip_frame", "arguments": {"start_time": 1}}</tool_call>', "tool_call_bad_arguments"),
        ('<tool_call>{"name": "get_video_clip_frame", "arguments": {"start_time": 1, "end_time": 2, "fps": 4}}</tool_call>', "tool_call_bad_arguments"),
        ('<tool_call>{"name": "get_video_clip_frame", "arguments": [1, 2]}</tool_call>', "tool_call_bad_arguments"),
    ],
)
def test_tool_call_errors(text, code):
    r = parse_clip_call(text)
    assert isinstance(r, ParseError) and r.code == code and not r


def test_double_encoded_arguments_accepted():
    text = '<tool_call>{"name": "get_video_clip_frame", "arguments": "{\\"start_time\\": 1.5, \\"end_time\\": 4}"}</tool_call>'
    assert parse_clip_call(text) == ClipCall(1.5, 4.0)


@pytest.mark.parametrize(
    "text,ok",
    [
        ("<think>a</think> <answer>b</answer>", True),
        ("<think>a</think>\n<tool_call>{}</tool_call> <think>b</think> <answer>c</answer>", True),
        ("  <think>a</think><answer>b</answer>\n", True),
        ("<answer>b</answer>", False),
        ("<think>a</think>", False),
        ("<think>a</think> hello <answer>b</answer>", False),
        ("<think>a</think><think>b</think><answer>c</answer>", False),
        ("<think>a <b>x</b></think><answer>c</answer>", False),
        ("<think>a<answer>c</answer></think><answer>c</answer>", False),
        ("<think>a</think> <answer>b</answer> trailing", False),
        ("", False),
    ],
)
def test_format_rule(text, ok):
    """The one format rule (the reward's, which evaluation reports too)."""
    assert format_reward(text) == float(ok)


@settings(max_examples=50, deadline=None)
@given(a=st.floats(0, 1e4, allow_nan=False), b=st.floats(0, 1e4, allow_nan=False))
def test_interval_formats_roundtrip(a, b):
    """Reward and evaluation read the same pair; the reward skips a reversed one."""
    a, b = round(a, 2), round(b, 2)
    for text in (f"[{a}, {b}]", f"({a:.2f}, {b:.2f})", f"{a} - {b}", f"from {a} to {b} seconds"):
        assert read_interval(text) == ((a, b), "ok")
        assert parse_span(text) == ((a, b) if a <= b else None)
