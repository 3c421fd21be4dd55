"""Qwen3-VL (dense): Qwen3 decoder with interleaved M-RoPE and DeepStack, and its vision tower.

Parity-tested against transformers' ``Qwen3VLForConditionalGeneration`` (tests/models/
test_qwen3_vl_parity.py). Not here yet: a rope index of our own (callers pass position ids),
a KV cache / sampler path, the trainers' integration and export.
"""

from vital_jax.models.qwen3_vl.api import InputError, forward, visual_token_index
from vital_jax.models.qwen3_vl.config import ConfigError, ModelConfig, RuntimeOptions, TextConfig, VisionConfig
from vital_jax.models.qwen3_vl.modeling import (
    VisionInputs, abstract_params, decode_hidden, embed_tokens, encode_vision, init_params, model_logits,
    mrope_cos_sin, param_logical_axes, param_shardings, vision_inputs,
)
from vital_jax.models.qwen3_vl.weights import CheckpointError, load_pretrained

__all__ = [
    "CheckpointError", "ConfigError", "InputError", "ModelConfig", "RuntimeOptions", "TextConfig", "VisionConfig",
    "VisionInputs", "abstract_params", "decode_hidden", "embed_tokens", "encode_vision", "forward", "init_params",
    "load_pretrained", "model_logits", "mrope_cos_sin", "param_logical_axes", "param_shardings", "vision_inputs",
    "visual_token_index",
]
