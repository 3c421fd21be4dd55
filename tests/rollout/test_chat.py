"""The chat facade keeps the cache between turns: turn 2 equals a fresh prefill of the history."""

import numpy as np

from tests.rollout.conftest import VIDEO_KW, make_sampler
from vital_jax.rollout import ChatSession, SamplingOptions, Segment
from vital_jax.video import load_video


def test_two_turns_equal_fresh_prefill(model, renderer, videos):
    s = make_sampler(model, batch=1, cache_length=512, chunk_buckets=(32, 512), max_forced_tokens=1)
    chat = ChatSession(s, renderer, SamplingOptions(max_new_tokens=10))
    v = load_video(videos["a"], **VIDEO_KW)
    first = chat.send("What colour is the ball?", visual=v, duration=6.0)
    assert isinstance(first, str)
    n1 = chat.num_tokens
    second = chat.send("And then?")
    hist = chat.history_ids()
    reply = hist[-10:]
    # greedy reply of turn 2 == greedy continuation of a fresh prefill of everything before it
    state = s.prefill([Segment(hist[:-10], [v])])
    _, out = s.generate(state, SamplingOptions(max_new_tokens=10))
    np.testing.assert_array_equal(out.tokens[0], reply)
    assert chat.num_tokens > n1 and second == renderer.tok.decode(reply.tolist())
