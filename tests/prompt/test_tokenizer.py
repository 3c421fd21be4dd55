"""Tokenizer loading on the real Qwen2 vocabulary, and the small trained one."""

import json
import os
import shutil

import pytest

from vital_jax.prompt import QWEN2_VL_SPECIAL_TOKENS, TokenizerError, load_tokenizer
from vital_jax.prompt.tokenizer import qwen2_reference_dir
from vital_jax.prompt.tokens import QWEN2_VL_ADDED_TOKENS


def test_reference_special_ids_are_qwen2_vl(qwen_tok):
    assert qwen_tok.special == QWEN2_VL_SPECIAL_TOKENS
    assert qwen_tok.vocab_size == 151665  # 151643 BPE + 22 added
    for i, content, _ in QWEN2_VL_ADDED_TOKENS:
        assert qwen_tok.token_to_id(content) == i
    # Qwen3-only added tokens are gone: <think> is ordinary text in Qwen2.5-VL
    assert qwen_tok.token_to_id("<think>") is None
    assert len(qwen_tok.encode("<think>")) > 1
    assert qwen_tok.encode("<|im_start|>user\n") == [151644, 872, 198]
    assert qwen_tok.encode("<tool_call>") == [151657]


def test_vocab_merges_dir_equals_tokenizer_json(qwen_tok, tmp_path):
    src = qwen2_reference_dir()
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(src, f), tmp_path / f)
    tok = load_tokenizer(tmp_path)
    assert tok.special == QWEN2_VL_SPECIAL_TOKENS
    text = "Hello  world!\n\n  12345 <|vision_start|><|video_pad|><|vision_end|>Ünïcödé 中文 <tool_call>{}</tool_call>"
    assert tok.encode(text) == qwen_tok.encode(text)
    assert tok.decode(tok.encode(text)) == text


def test_save_and_load_roundtrip(qwen_tok, small_tok, tmp_path):
    for name, tok in (("q", qwen_tok), ("s", small_tok)):
        tok.save(tmp_path / name)
        again = load_tokenizer(tmp_path / name)
        assert again.special == tok.special
        assert again.encode("<|im_start|>assistant\n<think>x</think>") == tok.encode("<|im_start|>assistant\n<think>x</think>")


def test_bad_directories(tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match=str(tmp_path)):
        load_tokenizer(tmp_path)


def test_missing_special_token_is_named(small_tok, tmp_path):
    small_tok.save(tmp_path)
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] != "<|video_pad|>"]
    spec["model"]["vocab"].pop("<|video_pad|>", None)
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(TokenizerError, match="video_pad"):
        load_tokenizer(tmp_path)


def test_small_tokenizer(small_tok):
    sp = small_tok.special
    assert (sp.pad, sp.im_start, sp.im_end, sp.vision_start, sp.vision_end, sp.image_pad, sp.video_pad) == tuple(range(7))
    assert sp.eos == sp.im_end and sp.tool_call_open == 7 and sp.tool_call_close == 8
    assert 300 < small_tok.vocab_size <= 600
    text = "<|im_start|>user\nThe video lasts 12.50 seconds. ¿Qué? 😀<|im_end|>\n"
    ids = small_tok.encode(text)
    assert small_tok.decode(ids) == text  # byte-level: any text round-trips
    assert ids[0] == sp.im_start and ids[-2] == sp.im_end
    assert small_tok.to_hf().convert_tokens_to_ids("<|video_pad|>") == sp.video_pad
