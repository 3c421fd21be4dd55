"""The tool loop on a tiny random model, driven by scripted turns through the real decode path."""

import concurrent.futures as cf
import shutil

import numpy as np
import pytest

from tests.rollout.conftest import CLIP_KW, VIDEO_KW, make_sampler
from vital_jax.rollout import AgentConfig, EpisodeRequest, run_episodes
from vital_jax.models.qwen2_5_vl import forward
from vital_jax.rollout import SamplingOptions

Q = "What colour is the ball?"


def call(start, end):
    return ('<think>look</think> <tool_call>\n{"name": "get_video_clip_frame", "arguments": '
            f'{{"start_time": {start}, "end_time": {end}}}}}\n</tool_call>')


ANSWER = "<think>ok</think> <answer>3</answer>"


def cfg(**kw):
    base = dict(sampling=SamplingOptions(temperature=1.0, repetition_penalty=1.05, max_new_tokens=80),
                max_turns=3, video_kwargs=VIDEO_KW, clip_kwargs=CLIP_KW)
    base.update(kw)
    return AgentConfig(**base)


def test_valid_invalid_malformed_calls_and_broken_video(sampler, renderer, videos, model, tmp_path):
    # a copy of video b that breaks after the prompt was read (the tool then cannot decode it)
    dying = str(tmp_path / "dying.mp4")
    shutil.copy(videos["b"], dying)
    broke = []
    scripts = {
        0: [call(1, 4), ANSWER],
        1: [call(3, 3.5), ANSWER],                                             # window too short
        2: ['<tool_call>{"name": get_video_clip_frame}</tool_call>', ANSWER],  # not JSON
        3: [call(1, 3), ANSWER],
    }

    def script(row, turn):
        if row == 3 and not broke:
            open(dying, "wb").write(b"garbage" * 50)
            broke.append(1)
        return scripts[row][turn] if turn < len(scripts[row]) else None

    reqs = [EpisodeRequest(Q, videos["a"]), EpisodeRequest(Q, videos["a"]), EpisodeRequest(Q, videos["b"]),
            EpisodeRequest(Q, dying)]
    eps = run_episodes(sampler, renderer, reqs, cfg(), script=script)
    assert [e.end_reason for e in eps] == ["answer", "answer", "answer", "video_error"]
    assert [(t.ok, t.code) for t in eps[0].tool_calls] == [(True, "ok")]
    assert eps[0].tool_calls[0].start == 1 and eps[0].tool_calls[0].end == 4
    assert [(t.ok, t.code) for t in eps[1].tool_calls] == [(False, "invalid_window")]
    assert [(t.ok, t.code) for t in eps[2].tool_calls] == [(False, "tool_call_bad_json")]
    assert eps[3].tool_calls[0].code == "fatal" and "VideoUnreadable" in eps[3].error
    assert eps[0].texts == [call(1, 4), ANSWER]

    ep = eps[0]
    assert len(ep.ids) == len(ep.loss_mask) == len(ep.logprobs)
    assert [t[0] for t in ep.turns] == ["prompt", "assistant", "tool", "assistant"]
    for role, a, b in ep.turns:
        assert set(ep.loss_mask[a:b]) == {1 if role == "assistant" else 0}
        if role != "assistant":
            assert not any(ep.logprobs[a:b])
    # the tool turn is the renderer's observation for the clip (2 visual inputs in order)
    clip = ep.visuals[1]
    _, a, b = ep.turns[2]
    assert ep.ids[a:b] == renderer.tool_result_ids(1, 4, __import__("vital_jax.prompt", fromlist=["Vision"]).Vision.of(clip))
    assert len(ep.visuals) == 2 and clip.num_tokens == 16
    # recorded log-probs equal a full forward over the whole episode (clip appended in the live cache)
    c, params = model
    vids = ep.visuals
    batch = {"input_ids": np.asarray(ep.ids)[None],
             "pixel_values_videos": np.concatenate([v.pixel_values for v in vids]),
             "video_grid_thw": np.stack([v.grid_thw for v in vids]),
             "second_per_grid_ts": np.asarray([v.second_per_grid_t for v in vids])}
    lg = np.asarray(forward(c, params, batch))[0]
    lp = lg - lg.max(-1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    pol = np.nonzero(np.asarray(ep.loss_mask))[0]
    np.testing.assert_allclose(np.asarray(ep.logprobs)[pol], lp[pol - 1, np.asarray(ep.ids)[pol]], atol=1e-4)
    # the error observations carry the message; row 2's episode goes on to answer
    _, a, b = eps[2].turns[2]
    assert "Error:" in renderer.tok.decode(eps[2].ids[a:b])


def test_unreadable_video_ends_only_that_episode(sampler, renderer, videos):
    reqs = [EpisodeRequest(Q, videos["broken"]), EpisodeRequest(Q, videos["a"]),
            EpisodeRequest(Q, "/no/such/file.mp4"), EpisodeRequest(Q, None, use_tool=False)]
    eps = run_episodes(sampler, renderer, reqs, cfg(), script=lambda r, t: ANSWER)
    assert [e.end_reason for e in eps] == ["video_error", "answer", "video_error", "answer"]
    assert "VideoUnreadable" in eps[0].error and "VideoNotFound" in eps[2].error
    assert eps[0].ids == [] and eps[1].texts == [ANSWER]


def test_max_turns_length_and_token_budget(model, sampler, renderer, videos):
    eps = run_episodes(sampler, renderer, [EpisodeRequest(Q, videos["a"])] * 2 + [EpisodeRequest(Q, videos["b"])],
                       cfg(max_turns=2, sampling=SamplingOptions(max_new_tokens=60, temperature=1.0)),
                       script=lambda r, t: call(1, 4) if r < 2 else None)
    assert [e.end_reason for e in eps[:2]] == ["max_turns", "max_turns"]
    assert [t.code for t in eps[0].tool_calls] == ["ok", "max_turns"]
    # the unscripted random model runs out of its per-turn budget: truncated, flagged
    assert eps[2].end_reason in ("max_new_tokens", "eos", "answer")
    if eps[2].end_reason == "max_new_tokens":
        assert eps[2].truncated and len(eps[2].texts[0]) > 0
    # a small context: the clip observation does not fit -> truncated at the context limit
    small = make_sampler(model, batch=1, cache_length=eps[0].turns[2][2] - 5)
    ep, = run_episodes(small, renderer, [EpisodeRequest(Q, videos["a"])], cfg(),
                       script=lambda r, t: call(1, 4) if t == 0 else ANSWER)
    assert ep.end_reason == "length" and ep.truncated
    assert ep.tool_calls[0].ok and [t[0] for t in ep.turns] == ["prompt", "assistant"]


def test_async_executor_gives_the_same_episodes(sampler, renderer, videos):
    reqs = [EpisodeRequest(Q, videos["a"]), EpisodeRequest(Q, videos["b"])]
    scripts = {0: [call(1, 4), ANSWER], 1: ["<think>" + "x " * 30 + "</think>", ANSWER]}

    def script(r, t):
        return scripts[r][t] if r in scripts and t < len(scripts[r]) else None

    c = cfg(sampling=SamplingOptions(max_new_tokens=60))   # greedy: deterministic
    want = run_episodes(sampler, renderer, reqs, c, script=script)
    with cf.ThreadPoolExecutor(2) as pool:
        got = run_episodes(sampler, renderer, reqs, c, script=script, executor=pool)
    for a, b in zip(want, got):
        assert a.ids == b.ids and a.end_reason == b.end_reason
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)


@pytest.mark.parametrize("text_timestamps", [False, True])
def test_sft_row_of_a_trajectory_equals_the_episode(model, renderer, videos, text_timestamps):
    """What SFT builds from a Tool-CoT trajectory (ids, loss mask, M-RoPE positions) is what the
    agent loop produced for the same turns: the recorded log-probs equal a forward of the
    trainer's batch row (with or without textual timestamps)."""
    from vital_jax.data.records import parse_record
    from vital_jax.prompt import Vision
    from vital_jax.trainers.batch import build_batch
    from vital_jax.config.run_config import VisionInputConfig
    from vital_jax.trainers.sft import SFTFeatures, agent_vision

    vision = VisionInputConfig(max_frames=8, min_pixels=56 * 56, max_pixels=56 * 56, clip_max_frames=8,
                               clip_max_pixels=56 * 56, text_timestamps=text_timestamps)
    turns = [call(1, 4), ANSWER]
    sampler = make_sampler(model, batch=1)
    ep, = run_episodes(sampler, renderer, [EpisodeRequest(Q, videos["a"])],
                       cfg(**agent_vision(vision)), script=lambda row, turn: turns[turn] if turn < 2 else None)
    assert ep.end_reason == "answer" and ep.texts == turns
    text = renderer.tok.decode(ep.ids)
    assert ("seconds><|vision_start|>" in text) == text_timestamps
    if text_timestamps:  # one block per temporal group: 4 of the video's 8 frames, 4 of the clip's 7
        assert text.count("<|vision_start|>") == 8 and "<1.2 seconds><|vision_start|>" in text
        assert ep.ids[slice(*ep.turns[2][1:])] == renderer.tool_result_ids(
            1, 4, Vision.of(ep.visuals[1], text_timestamps=True))
    root = videos["a"].rsplit("/", 1)[0]
    rec = parse_record({"video": "a.mp4", "duration": ep.duration, "text": Q, "data_source": "charades",
                        "solution": turns, "tool_params": "(1, 4)", "answer": "3"}, root=root)
    seq = SFTFeatures(renderer, vision)({"record": rec})["seq"]
    # the SFT target also closes the answer with <|im_end|> (the model learns to stop)
    assert list(seq.ids) == ep.ids + [renderer.tok.special.im_end] and list(seq.loss_mask) == ep.loss_mask + [1]
    c, params = model
    b = build_batch(c, [seq], micro_batches=1, token_buckets=[len(seq.ids)], vision_buckets=[1024], with_vision=False)
    vids = seq.visuals
    lg = np.asarray(forward(c, params, {
        "input_ids": np.asarray(seq.ids)[None], "position_ids": b["position_ids"][0],
        "pixel_values_videos": np.concatenate([v.pixel_values for v in vids]),
        "video_grid_thw": np.stack([v.grid_thw for v in vids])}))[0]
    lp = lg - lg.max(-1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    pol = np.nonzero(np.asarray(ep.loss_mask))[0]
    np.testing.assert_allclose(np.asarray(ep.logprobs)[pol], lp[pol - 1, np.asarray(ep.ids)[pol]], atol=1e-4)


def test_text_tool_observation_is_appended_as_a_tool_turn(sampler, renderer, videos):
    """A tool that answers in words (``ToolResult(text=...)``): its text becomes the tool turn
    (loss 0), the call counts as ok, and the episode's ids are the whole conversation's render."""
    from vital_jax.rollout.tools import ToolResult
    from vital_jax.prompt import Message

    def lookup(arguments, ctx):
        return ToolResult(text=f"The answer is {arguments['key']}.")

    lookup_call = '<think>look</think> <tool_call>{"name": "lookup", "arguments": {"key": "C"}}</tool_call>'
    turns = [lookup_call, "<think>ok</think> <answer>C</answer>"]
    ep, = run_episodes(sampler, renderer, [EpisodeRequest(Q, None)], cfg(tools={"lookup": lookup}),
                       script=lambda row, turn: turns[turn] if turn < 2 else None)
    assert ep.end_reason == "answer" and ep.texts == turns
    assert [(t.name, t.ok, t.code) for t in ep.tool_calls] == [("lookup", True, "ok")]
    msgs = renderer.prompt_messages(Q, None, duration=None, use_tool=True) + [
        Message("assistant", turns[0]), Message("tool", "The answer is C."), Message("assistant", turns[1])]
    want = renderer.render(msgs, close_last_assistant=False)
    assert ep.ids == list(want.ids) and ep.loss_mask == list(want.loss_mask)
    obs = slice(*ep.turns[2][1:])
    assert "The answer is C." in renderer.tok.decode(ep.ids[obs]) and not any(ep.loss_mask[obs])
