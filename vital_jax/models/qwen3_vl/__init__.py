"""Qwen3-VL (dense): Qwen3 decoder with interleaved M-RoPE and DeepStack, and its vision tower.

Parity-tested against transformers' ``Qwen3VLForConditionalGeneration`` (tests/models/
test_qwen3_vl_parity.py), with its own rope index (``rope_index``, equal to transformers'
``get_rope_index``). Exports the family protocol of :mod:`vital_jax.models.families`.
"""

from vital_jax.models.qwen3_vl.api import InputError, vision_processing, forward, visual_token_index
from vital_jax.models.qwen3_vl.config import ConfigError, ModelConfig, RuntimeOptions, TextConfig, VisionConfig
from vital_jax.models.qwen3_vl import modeling
from vital_jax.models.qwen3_vl.rope import PositionError, rope_index, visual_positions
from vital_jax.models.qwen3_vl.modeling import (
    KVCache, VisionArrays, abstract_params, decode_hidden, embed_tokens, encode_vision, init_params, model_logits,
    mrope_cos_sin, param_logical_axes, param_shardings, vision_arrays,
)
from vital_jax.models.qwen3_vl.weights import CheckpointError, export_pretrained, load_pretrained

#: a video is written ``<t seconds><|vision_start|>...<|vision_end|>`` per temporal group
TEXT_TIMESTAMPS = True

__all__ = [
    "TEXT_TIMESTAMPS", "abstract_params", "CheckpointError", "ConfigError", "decode_hidden", "embed_tokens",
    "encode_vision", "export_pretrained", "forward", "init_params", "InputError", "KVCache",
    "load_pretrained", "model_logits", "ModelConfig", "modeling", "mrope_cos_sin", "param_logical_axes",
    "param_shardings", "PositionError", "rope_index", "RuntimeOptions", "TextConfig", "vision_arrays",
    "vision_processing", "VisionArrays", "VisionConfig", "visual_positions", "visual_token_index",
]
