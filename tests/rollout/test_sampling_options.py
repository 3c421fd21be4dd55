"""Sampling controls (unit level on core.sample_tokens) and stop conditions through decode."""

import jax
import numpy as np
import pytest

from tests.models import hf_reference as ref
from vital_jax.rollout import Sampler, SamplerConfig, SamplingOptions, Segment
from vital_jax.rollout import sampler_core as core


def _sp(B, V, **kw):
    base = {"temperature": np.ones(B, np.float32), "top_k": np.zeros(B, np.int32), "top_p": np.ones(B, np.float32),
            "repetition_penalty": np.ones(B, np.float32), "stop_ids": np.full(2, -1, np.int32),
            "stop_seqs": np.full((1, 2), -1, np.int32), "forced": np.full((B, 1), -1, np.int32)}
    base.update({k: np.asarray(v, base[k].dtype) for k, v in kw.items()})
    return core.SamplingParams(**base)


_sample = jax.jit(core.sample_tokens)


def _draw(logits, presence, sp, n=400, seed=0):
    keys = jax.random.split(jax.random.key(seed), n * logits.shape[0]).reshape(n, logits.shape[0])
    toks = np.stack([np.asarray(_sample(logits, presence, sp, keys[i])[0]) for i in range(n)])
    return toks


def test_greedy_top_k_top_p_and_logprobs():
    logits = np.log(np.asarray([[0.05, 0.5, 0.3, 0.15], [0.4, 0.3, 0.2, 0.1]], np.float32))
    presence = np.zeros((2, 4), bool)
    B, V = logits.shape
    tok, lp = _sample(logits, presence, _sp(B, V, temperature=[0, 0]), jax.random.split(jax.random.key(0), 2))
    np.testing.assert_array_equal(tok, [1, 0])
    np.testing.assert_allclose(lp, np.log([0.5, 0.4]), rtol=1e-5)
    # top-k 2 keeps {1, 2} for row 0 and {0, 1} for row 1; top-p 0.7 keeps {1, 2} / {0, 1}
    for sp in (_sp(B, V, top_k=[2, 2]), _sp(B, V, top_p=[0.7, 0.6])):
        toks = _draw(logits, presence, sp, n=200)
        assert set(toks[:, 0]) == {1, 2} and set(toks[:, 1]) == {0, 1}
    # top_k 1 at temperature 1 is greedy; plain temperature-1 sampling follows the distribution
    toks = _draw(logits, presence, _sp(B, V, top_k=[1, 1]), n=50)
    assert (toks == [1, 0]).all()
    toks = _draw(logits, presence, _sp(B, V), n=1500)
    np.testing.assert_allclose(np.bincount(toks[:, 0], minlength=4) / 1500, [0.05, 0.5, 0.3, 0.15], atol=0.04)
    # a low temperature sharpens: nearly always the argmax
    toks = _draw(logits, presence, _sp(B, V, temperature=[0.05, 0.05]), n=100)
    assert (toks == [1, 0]).mean() > 0.97


def test_repetition_penalty_rule():
    logits = np.asarray([[2.0, 1.95, -1.0, -1.02]], np.float32)
    presence = np.asarray([[True, False, True, False]])
    sp = _sp(1, 4, temperature=[0], repetition_penalty=[1.05])
    tok, lp = _sample(logits, presence, sp, jax.random.split(jax.random.key(0), 1))
    assert int(tok[0]) == 1  # 2.0 / 1.05 < 1.95
    np.testing.assert_allclose(np.asarray(core._penalize(logits, presence, np.asarray([1.05], np.float32))),
                               [[2.0 / 1.05, 1.95, -1.05, -1.02]], rtol=1e-6)
    # the returned log-prob is the raw model's, not the penalised one
    np.testing.assert_allclose(lp[0], jax.nn.log_softmax(logits[0])[1], rtol=1e-6)


@pytest.fixture(scope="module")
def sampler(hf_tiny):
    _, cfg, params = hf_tiny
    return Sampler(cfg, params, SamplerConfig(batch_size=2, cache_length=40, chunk_buckets=(16,),
                                              vision_buckets=(64,), max_visual_tokens=16, decode_steps=8,
                                              stop_seq_len=3, max_stop_seqs=4))


def _prompts():
    return [Segment(ref.build_input_ids([("text", 7)], seed=30)), Segment(ref.build_input_ids([("text", 5)], seed=31))]


def test_stop_ids_sequences_budget_length_and_exit_on_stop(sampler):
    s = sampler
    greedy = SamplingOptions(max_new_tokens=20)
    _, ref_out = s.generate(s.prefill(_prompts()), greedy)
    t0, t1 = ref_out.tokens
    assert ref_out.reason == ["budget", "budget"]
    # a stop id: row 0 stops at the first occurrence of its 4th token (the token is kept)
    k = int(np.argmax(t0 == t0[3])) + 1
    _, out = s.generate(s.prefill(_prompts()), SamplingOptions(max_new_tokens=20, stop_token_ids=(int(t0[3]),)))
    assert out.reason[0] == "stop_token"
    np.testing.assert_array_equal(out.tokens[0], t0[:k])
    # a stop sequence of two tokens, only in row 1
    seq = (int(t1[4]), int(t1[5]))
    first = next(i for i in range(1, 20) if (int(t1[i - 1]), int(t1[i])) == seq) + 1
    opts = [greedy, SamplingOptions(max_new_tokens=20, stop_sequences=(seq,))]
    _, out = s.generate(s.prefill(_prompts()), opts)
    assert out.reason[1] == "stop_sequence" and len(out.tokens[1]) == first
    np.testing.assert_array_equal(out.tokens[1], t1[:first])
    # context limit: 40 slots, prompts 7 and 5 -> 33 and 35 new tokens at most
    _, out = s.generate(s.prefill(_prompts()), SamplingOptions(max_new_tokens=100))
    assert out.reason == ["length", "length"] and [len(t) for t in out.tokens] == [33, 35]
    # exit_on_stop: the call returns when row 0 stops; row 1 is still running and resumes
    sp = s.sampling_params([SamplingOptions(stop_token_ids=(int(t0[1]),)), greedy])
    state, out = s.decode(s.prefill(_prompts()), sp, [20, 20], exit_on_stop=True)
    k = int(np.argmax(t0 == t0[1])) + 1
    assert out.reason == ["stop_token", "running"] and len(out.tokens[1]) == k
    state, out2 = s.decode(state, sp, [0, 20 - k])
    np.testing.assert_array_equal(np.concatenate([out.tokens[1], out2.tokens[1]])[:8], t1[:8])
    assert out2.reason[0] == "idle"


def test_per_row_rng_is_reproducible_and_independent(sampler):
    s = sampler
    opts = SamplingOptions(temperature=1.0, max_new_tokens=12)
    same = s.prefill([_prompts()[0], _prompts()[0]], seeds=[7, 7])
    _, a = s.generate(same, opts)
    np.testing.assert_array_equal(a.tokens[0], a.tokens[1])   # same prompt + same seed
    _, b = s.generate(s.prefill([_prompts()[0], _prompts()[0]], seeds=[7, 8]), opts)
    np.testing.assert_array_equal(b.tokens[0], a.tokens[0])   # row 0 does not depend on row 1's seed
    assert not np.array_equal(b.tokens[1], a.tokens[1])


def test_rewind_then_append_equals_never_generated(sampler):
    s = sampler
    state, _ = s.generate(s.prefill(_prompts()), SamplingOptions(max_new_tokens=6))
    state = s.rewind(state, [6, 0])
    extra = ref.build_input_ids([("text", 4)], seed=40)
    state, lg = s.extend(state, [Segment(extra), None], all_logits=True)
    _, lg2 = s.prefill([Segment(np.concatenate([_prompts()[0].ids, extra])), None], all_logits=True)
    np.testing.assert_allclose(lg[0], lg2[0][-4:], atol=2e-5)
