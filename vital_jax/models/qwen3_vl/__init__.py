"""Qwen3-VL (dense): Qwen3 decoder with interleaved M-RoPE and DeepStack, and its vision tower.

Parity-tested against transformers' ``Qwen3VLForConditionalGeneration`` (tests/models/
test_qwen3_vl_parity.py), with its own rope index (``rope_index``, equal to transformers'
``get_rope_index``). Not here yet: a KV cache / sampler path, the trainers' integration, export.
"""

from vital_jax.models.qwen3_vl.api import InputError, forward, visual_token_index
from vital_jax.models.qwen3_vl.config import ConfigError, ModelConfig, RuntimeOptions, TextConfig, VisionConfig
from vital_jax.models.qwen3_vl.rope import PositionError, rope_index
from vital_jax.models.qwen3_vl.modeling import (
    VisionInputs, abstract_params, decode_hidden, embed_tokens, encode_vision, init_params, model_logits,
    mrope_cos_sin, param_logical_axes, param_shardings, vision_inputs,
)
from vital_jax.models.qwen3_vl.weights import CheckpointError, load_pretrained

__all__ = [
    "CheckpointError", "ConfigError", "InputError", "ModelConfig", "PositionError", "RuntimeOptions", "TextConfig", "VisionConfig",
    "VisionInputs", "abstract_params", "decode_hidden", "embed_tokens", "encode_vision", "forward", "init_params",
    "load_pretrained", "model_logits", "mrope_cos_sin", "param_logical_axes", "param_shardings", "rope_index",
    "vision_inputs",
    "visual_token_index",
]
