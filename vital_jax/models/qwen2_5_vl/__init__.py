"""Qwen2.5-VL (vision tower + M-RoPE decoder) in Flax NNX, functional. Exports the family
protocol of :mod:`vital_jax.models.families`."""

from vital_jax.models.qwen2_5_vl.api import (
    InputError, encode_visual, forward, vision_arrays, vision_processing, visual_token_index,
)
from vital_jax.models.qwen2_5_vl.config import ConfigError, ModelConfig, RuntimeOptions, TextConfig, VisionConfig
from vital_jax.models.qwen2_5_vl import modeling
from vital_jax.models.qwen2_5_vl.modeling import (
    KVCache, VisionArrays, abstract_params, init_params, param_logical_axes, param_shardings,
)
from vital_jax.models.qwen2_5_vl.rope import PositionError, rope_index, row_positions, visual_positions
from vital_jax.models.qwen2_5_vl.weights import CheckpointError, export_pretrained, load_pretrained

#: a video is one ``<|vision_start|>...<|vision_end|>`` block, its time in the M-RoPE positions
#: (``data.vision.text_timestamps`` may still write times as text, as an option)
TEXT_TIMESTAMPS = False

__all__ = [
    "TEXT_TIMESTAMPS", "abstract_params", "CheckpointError", "ConfigError", "encode_visual",
    "export_pretrained", "forward", "init_params", "InputError", "KVCache", "load_pretrained", "ModelConfig",
    "modeling", "param_logical_axes", "param_shardings", "PositionError", "rope_index", "row_positions",
    "RuntimeOptions", "TextConfig", "vision_arrays", "vision_processing", "VisionArrays", "VisionConfig",
    "visual_positions", "visual_token_index",
]
