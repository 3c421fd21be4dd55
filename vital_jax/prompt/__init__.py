"""Prompt side: chat format + tools block, tokenizers, append-only rendering, parsers."""

from vital_jax.prompt.render import ChatRenderer, Conversation, Message, Rendered, Vision, group_times, timestamp_text
from vital_jax.prompt.tokenizer import (
    Tokenizer,
    TokenizerError,
    load_tokenizer,
    qwen2_vl_reference_tokenizer,
    train_small_tokenizer,
)
from vital_jax.prompt.tokens import QWEN2_VL_SPECIAL_TOKENS, SpecialTokens

__all__ = [
    "ChatRenderer",
    "Conversation",
    "Message",
    "QWEN2_VL_SPECIAL_TOKENS",
    "Rendered",
    "SpecialTokens",
    "Tokenizer",
    "TokenizerError",
    "Vision",
    "group_times",
    "load_tokenizer",
    "qwen2_vl_reference_tokenizer",
    "timestamp_text",
    "train_small_tokenizer",
]
