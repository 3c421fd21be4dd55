import pytest

from vital_jax.data import synthetic as syn
from vital_jax.data.pipeline import to_example
from vital_jax.data.records import load_records
from vital_jax.data.sft import bucket_for, pad_batch, prompt_question, tokenize_sft
from vital_jax.prompt import ChatRenderer, Vision, train_small_tokenizer


@pytest.fixture(scope="module")
def renderer():
    return ChatRenderer(train_small_tokenizer(syn.text_corpus(num=40, seed=0), vocab_size=512))


def test_tool_sft_masks_observations(tiny_suite, renderer):
    out, _ = tiny_suite
    rec = next(r for r in load_records(out / "sft_tool.jsonl", out) if r.options)
    r = tokenize_sft(to_example(rec), renderer, Vision("video", 12), Vision("video", 7))
    tok = renderer.tok
    trained = tok.decode(r.ids[r.loss_mask == 1].tolist())
    assert trained.replace(" ", "") == (rec.tool.turns[0] + rec.tool.turns[1] + "<|im_end|>").replace(" ", "")
    vpad = tok.special.video_pad
    assert (r.ids == vpad).sum() == 19 and (r.loss_mask[r.ids == vpad] == 0).all()
    text = tok.decode(r.ids.tolist())
    assert "Video clip from" in text and "A. red" in text and "get_video_clip_frame" in text
    assert [v.num_tokens for v in r.visuals] == [12, 7]


def test_cot_sft_and_padding(tiny_suite, renderer):
    out, _ = tiny_suite
    recs = load_records(out / "sft_cot.jsonl", out)[:3]
    rendered = [tokenize_sft(to_example(x), renderer, Vision("video", 8)) for x in recs]
    for x, r in zip(recs, rendered):
        assert renderer.tok.decode(r.ids[r.loss_mask == 1].tolist()).replace(" ", "") == (x.cot + "<|im_end|>").replace(" ", "")
    longest = max(len(r) for r in rendered)
    batch = pad_batch(rendered, [longest - 1, longest + 5, 4096], pad_id=renderer.tok.special.pad)
    assert batch["input_ids"].shape == (3, longest + 5)
    assert (batch["attention_mask"].sum(1) == [len(r) for r in rendered]).all()
    assert (batch["loss_mask"][batch["attention_mask"] == 0] == 0).all()
    with pytest.raises(ValueError, match="exceeds the largest token bucket"):
        bucket_for(longest, [longest - 1])
    rl = load_records(out / "rl.jsonl", out)[0]
    with pytest.raises(ValueError, match="no SFT target"):
        tokenize_sft(to_example(rl), renderer, Vision("video", 8))
    assert prompt_question(rl, "Q?").startswith("Q?")
