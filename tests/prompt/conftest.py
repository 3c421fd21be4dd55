import pytest

from vital_jax.prompt import ChatRenderer, qwen2_vl_reference_tokenizer, train_small_tokenizer


@pytest.fixture(scope="session")
def qwen_tok():
    return qwen2_vl_reference_tokenizer()


@pytest.fixture(scope="session")
def small_tok():
    corpus = [
        f"The video lasts {d}.50 seconds. What happens at {d} s? <think>look at {d}</think> "
        f'<tool_call>{{"name": "get_video_clip_frame", "arguments": {{"start_time": {d}, "end_time": {d + 5}}}}}'
        f"</tool_call> <answer>[{d}, {d + 3}]</answer> Video clip from {d}.00 to {d + 5}.00 seconds."
        for d in range(200)
    ]
    return train_small_tokenizer(corpus, vocab_size=600)


@pytest.fixture(scope="session", params=["qwen", "small", "qwen-compact"])
def renderer(request, qwen_tok, small_tok):
    """Every rendering test runs with the real vocab, a small BPE, and the compact prompt set."""
    return ChatRenderer(small_tok if request.param == "small" else qwen_tok,
                        prompts="compact" if request.param.endswith("compact") else "vital")
