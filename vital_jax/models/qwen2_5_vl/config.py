"""Qwen2.5-VL configuration: frozen dataclasses, named presets, and HF ``config.json`` I/O.

Checkpoint facts (sizes, ids, rope) live in :class:`TextConfig`, :class:`VisionConfig` and the
token ids of :class:`ModelConfig`; how we run the model (dtypes, scan, remat, attention kernel)
lives in :class:`RuntimeOptions`, which never goes into an exported ``config.json``.
All configs are hashable, so they can be static arguments of ``jax.jit``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from vital_jax.errors import VitalError


class ConfigError(VitalError, ValueError):
    """A config file or value is wrong; the message names the file and the key."""


@dataclass(frozen=True, kw_only=True)
class VisionConfig:
    depth: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    out_hidden_size: int
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    window_size: int = 112
    fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
    in_channels: int = 3
    tokens_per_second: float = 2.0
    rms_norm_eps: float = 1e-6  # hard-coded in the reference implementation

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    @property
    def merge_unit(self) -> int:
        return self.spatial_merge_size**2

    @property
    def window_merged(self) -> int:
        """Window side in merged tokens (112 px -> 4)."""
        return self.window_size // self.spatial_merge_size // self.patch_size


@dataclass(frozen=True, kw_only=True)
class TextConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    rope_theta: float = 1_000_000.0
    mrope_section: tuple[int, int, int] = (16, 24, 24)
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 128_000

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass(frozen=True, kw_only=True)
class RuntimeOptions:
    """How to run the model; not part of the checkpoint.

    - ``param_dtype``: storage dtype of parameters; ``compute_dtype``: matmul inputs/activations.
      RMSNorm statistics, softmax and logits are always computed in float32.
    - ``scan_layers``: ``lax.scan`` over the stacked decoder/vision layers (faster compiles) or a
      Python loop (unrolled).
    - ``remat``: ``"none"``, ``"full"`` (recompute each layer in the backward pass) or ``"dots"``
      (save only matmul outputs without batch dims).
    - ``attention``, by registry name (:data:`~vital_jax.models.qwen2_5_vl.modeling.ATTENTION`):
      ``"xla"`` (einsum + masked softmax; the training decoder skips the keys after each query
      chunk), ``"blockwise"`` (flash-style online softmax with a recomputing backward,
      :mod:`~vital_jax.models.qwen2_5_vl.blockwise`: no [L, L], [N, N] or [n, S] array in the
      training decoder, the tower's frame attention or the sampler's cached calls), ``"auto"``
      (the default: ``blockwise`` from the lengths where it is no slower on CPU, ``xla`` below;
      :data:`~vital_jax.models.qwen2_5_vl.modeling.AUTO_BLOCKWISE_FROM`), ``"splash"`` (the
      Pallas TPU kernel, :mod:`~vital_jax.models.qwen2_5_vl.splash`; interpret mode elsewhere)
      or ``"cudnn"`` (``jax.nn.dot_product_attention``'s cuDNN kernel on a GPU in bf16/f16, else
      xla with the reason logged). More plug in through
      :func:`vital_jax.models.qwen2_5_vl.modeling.register_attention` (same signature as xla's).
    - ``decode_attention``: the sampler's decode steps over the KV cache
      (:mod:`~vital_jax.models.qwen2_5_vl.decode_kernels`): ``"auto"`` (the default: the cache
      rule of ``attention``), ``"xla"``, ``"blockwise"``, ``"gpu_decode"`` (JAX's Pallas GPU
      split-K decode kernel) or ``"tpu_paged"`` (JAX's Pallas TPU paged-attention kernel).
    - ``freeze_vision``: no gradient flows into the vision tower (VITAL's RL setting).
    - ``vision_frame_block``: 0 (default) runs the full-attention vision blocks with a dense
      [N, N] frame mask, right for any layout. k > 0 promises that no frame (one temporal slice
      of a visual item, h*w patches) has more than k patches: those blocks then attend in a band
      of k-patch blocks, ~3k/N of the dense cost. A frame over k raises at run time.
    - ``logits_chunk``: positions per lm-head chunk in the training log-probs
      (:func:`vital_jax.models.qwen2_5_vl.modeling.target_logprobs`); chunks without a loss token
      are skipped. 0 = one chunk.
    """

    param_dtype: str = "float32"
    compute_dtype: str = "float32"
    scan_layers: bool = True
    remat: str = "none"
    attention: str = "auto"
    decode_attention: str = "auto"
    freeze_vision: bool = False  # stop gradients at the vision tower's output
    vision_frame_block: int = 0
    logits_chunk: int = 128

    def __post_init__(self):
        # messages are "runtime.<field>: ..." (a run config reports them under model.<field>)
        from vital_jax.models.qwen2_5_vl.decode_kernels import check_name as check_decode_name
        from vital_jax.models.qwen2_5_vl.modeling import ATTENTION   # modeling imports this module

        for name in ("param_dtype", "compute_dtype"):
            try:
                jnp.dtype(getattr(self, name))
            except TypeError as e:
                raise ConfigError(f"runtime.{name}: {getattr(self, name)!r} is not a dtype") from e
        if self.remat not in ("none", "full", "dots"):
            raise ConfigError(f"runtime.remat: {self.remat!r} is not one of 'none', 'full', 'dots'")
        try:
            ATTENTION.canonical(self.attention)
        except (KeyError, TypeError) as e:
            raise ConfigError(f"runtime.attention: {e.args[0]}") from None
        try:
            check_decode_name(self.decode_attention)
        except KeyError as e:
            raise ConfigError(f"runtime.decode_attention: {e.args[0]}") from None
        if not isinstance(self.vision_frame_block, int) or self.vision_frame_block < 0:
            raise ConfigError(f"runtime.vision_frame_block: {self.vision_frame_block!r}; expected an int >= 0")
        if not isinstance(self.logits_chunk, int) or self.logits_chunk < 0:
            raise ConfigError(f"runtime.logits_chunk: {self.logits_chunk!r}; expected an int >= 0")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    text: TextConfig
    vision: VisionConfig
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    eos_token_id: int = 151645
    pad_token_id: int = 151643
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)

    def __post_init__(self):
        t, v = self.text, self.vision
        if t.hidden_size % t.num_heads:
            raise ConfigError(f"text hidden_size {t.hidden_size} not divisible by num_heads {t.num_heads}")
        if t.num_heads % t.num_kv_heads:
            raise ConfigError(f"text num_heads {t.num_heads} not divisible by num_kv_heads {t.num_kv_heads}")
        if 2 * sum(t.mrope_section) != t.head_dim:
            raise ConfigError(
                f"mrope_section {list(t.mrope_section)} must sum to head_dim/2 = {t.head_dim // 2}"
            )
        if v.hidden_size % v.num_heads:
            raise ConfigError(f"vision hidden_size {v.hidden_size} not divisible by num_heads {v.num_heads}")
        if v.out_hidden_size != t.hidden_size:
            raise ConfigError(
                f"vision out_hidden_size {v.out_hidden_size} != text hidden_size {t.hidden_size}"
            )
        bad = [i for i in v.fullatt_block_indexes if not 0 <= i < v.depth]
        if bad:
            raise ConfigError(f"fullatt_block_indexes {bad} outside vision depth {v.depth}")
        for name in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
            if not 0 <= getattr(self, name) < t.vocab_size:
                raise ConfigError(f"{name}={getattr(self, name)} outside vocab_size {t.vocab_size}")

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)

    def with_runtime(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, runtime=dataclasses.replace(self.runtime, **kw))

    # ---- presets -------------------------------------------------------------------------
    @staticmethod
    def tiny(**text_overrides) -> "ModelConfig":
        """The test model (also used by the synthetic demo); equal to tests/models/hf_reference.TINY."""
        text = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                    num_kv_heads=2, mrope_section=(2, 3, 3), max_position_embeddings=4096)
        text.update(text_overrides)
        return ModelConfig(
            text=TextConfig(**text),
            vision=VisionConfig(depth=4, hidden_size=32, intermediate_size=64, num_heads=2,
                                out_hidden_size=text["hidden_size"], window_size=56,
                                fullatt_block_indexes=(1, 3)),
            image_token_id=310, video_token_id=311, vision_start_token_id=308,
            vision_end_token_id=309, eos_token_id=305, pad_token_id=304,
        )

    @staticmethod
    def qwen2_5_vl_3b() -> "ModelConfig":
        return ModelConfig(
            text=TextConfig(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_layers=36,
                            num_heads=16, num_kv_heads=2, tie_word_embeddings=True),
            vision=VisionConfig(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                                out_hidden_size=2048),
        )

    @staticmethod
    def qwen2_5_vl_7b() -> "ModelConfig":
        return ModelConfig(
            text=TextConfig(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=28,
                            num_heads=28, num_kv_heads=4, tie_word_embeddings=False),
            vision=VisionConfig(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                                out_hidden_size=3584),
        )

    @staticmethod
    def preset(name: str) -> "ModelConfig":
        table = {"tiny": ModelConfig.tiny, "3b": ModelConfig.qwen2_5_vl_3b, "7b": ModelConfig.qwen2_5_vl_7b}
        if name not in table:
            raise ConfigError(f"unknown model preset {name!r}; known: {sorted(table)}")
        return table[name]()

    # ---- HF config.json ------------------------------------------------------------------
    @staticmethod
    def from_hf_dict(d: dict[str, Any], *, source: str = "config", strict: bool = True) -> "ModelConfig":
        return _from_hf_dict(d, source=source, strict=strict)

    @staticmethod
    def from_hf_file(path: str | Path, *, strict: bool = True) -> "ModelConfig":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from e
        return _from_hf_dict(d, source=str(path), strict=strict)

    def to_hf_dict(self) -> dict[str, Any]:
        """A transformers-5-style nested config (``text_config``/``vision_config``)."""
        t, v = self.text, self.vision
        dtype = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}.get(
            self.runtime.param_dtype, "float32")
        text_config = {
            "model_type": "qwen2_5_vl_text",
            "vocab_size": t.vocab_size, "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size, "num_hidden_layers": t.num_layers,
            "num_attention_heads": t.num_heads, "num_key_value_heads": t.num_kv_heads,
            "hidden_act": "silu", "max_position_embeddings": t.max_position_embeddings,
            "rms_norm_eps": t.rms_norm_eps, "tie_word_embeddings": t.tie_word_embeddings,
            "rope_parameters": {"rope_type": "default", "rope_theta": t.rope_theta,
                                "mrope_section": list(t.mrope_section)},
            "use_sliding_window": False, "attention_dropout": 0.0,
            "eos_token_id": self.eos_token_id, "pad_token_id": self.pad_token_id,
            "bos_token_id": None,  # Qwen2.5-VL has none; transformers' default id may exceed a small vocab
        }
        vision_config = {
            "model_type": "qwen2_5_vl", "depth": v.depth, "hidden_size": v.hidden_size,
            "intermediate_size": v.intermediate_size, "num_heads": v.num_heads,
            "out_hidden_size": v.out_hidden_size, "patch_size": v.patch_size,
            "temporal_patch_size": v.temporal_patch_size, "spatial_merge_size": v.spatial_merge_size,
            "window_size": v.window_size, "fullatt_block_indexes": list(v.fullatt_block_indexes),
            "in_channels": v.in_channels, "hidden_act": "silu",
            # transformers validates this field as an int
            "tokens_per_second": int(v.tokens_per_second) if float(v.tokens_per_second).is_integer()
            else v.tokens_per_second,
        }
        return {
            "architectures": ["Qwen2_5_VLForConditionalGeneration"],
            "model_type": "qwen2_5_vl",
            "dtype": dtype,
            "text_config": text_config,
            "vision_config": vision_config,
            "image_token_id": self.image_token_id, "video_token_id": self.video_token_id,
            "vision_start_token_id": self.vision_start_token_id,
            "vision_end_token_id": self.vision_end_token_id,
            "tie_word_embeddings": t.tie_word_embeddings,
        }


# Keys present in real HF configs that carry nothing we need (training-time or framework knobs).
_IGNORED_KEYS = {
    "architectures", "attention_dropout", "bos_token_id", "dtype", "torch_dtype", "hidden_act",
    "initializer_range", "max_window_layers", "sliding_window", "use_sliding_window", "use_cache",
    "transformers_version", "vision_token_id", "_name_or_path", "output_attentions",
    "output_hidden_states", "return_dict", "layer_types", "model_type", "rope_scaling",
    "rope_parameters", "rope_theta", "text_config", "vision_config", "pad_token_id",
    "eos_token_id", "tie_word_embeddings", "chunk_size_feed_forward", "is_encoder_decoder",
    "problem_type", "id2label", "label2id", "tokenizer_class", "prefix", "sep_token_id",
    "decoder_start_token_id", "task_specific_params", "finetuning_task", "pruned_heads",
    "tf_legacy_loss", "use_bfloat16", "add_cross_attention", "is_decoder", "cross_attention_hidden_size",
    "torchscript", "spatial_patch_size", "in_chans", "initializer_factor", "embd_pdrop",
    "output_scores", "base_model_tp_plan", "base_model_pp_plan", "vocab_size", "hidden_size",
    "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "max_position_embeddings", "rms_norm_eps", "image_token_id", "video_token_id",
    "vision_start_token_id", "vision_end_token_id", "quantization_config",
}
_VISION_KEYS = {
    "depth", "hidden_size", "intermediate_size", "num_heads", "out_hidden_size", "patch_size",
    "temporal_patch_size", "spatial_merge_size", "window_size", "fullatt_block_indexes",
    "in_channels", "in_chans", "tokens_per_second", "hidden_act", "model_type", "spatial_patch_size",
    "initializer_range", "dtype", "torch_dtype", "_name_or_path", "transformers_version", "embed_dim",
    "num_position_embeddings", "rope_parameters",
}


def _from_hf_dict(d: dict[str, Any], *, source: str, strict: bool) -> ModelConfig:
    if d.get("model_type") not in ("qwen2_5_vl", None):
        raise ConfigError(f"{source}: model_type is {d.get('model_type')!r}, expected 'qwen2_5_vl'")
    if strict:
        unknown = sorted(set(d) - _IGNORED_KEYS)
        if unknown:
            raise ConfigError(f"{source}: unknown config key(s) {unknown} (pass strict=False to ignore)")
    # transformers 5.x nests the text settings; hub checkpoints keep them flat.
    text_src = dict(d)
    if isinstance(d.get("text_config"), dict):
        text_src.update({k: v for k, v in d["text_config"].items() if v is not None})
    rope = text_src.get("rope_parameters") or text_src.get("rope_scaling") or {}
    vis = d.get("vision_config")
    if not isinstance(vis, dict):
        raise ConfigError(f"{source}: missing 'vision_config'")
    if strict:
        unknown = sorted(set(vis) - _VISION_KEYS)
        if unknown:
            raise ConfigError(f"{source}: unknown vision_config key(s) {unknown} (pass strict=False to ignore)")

    vrope = vis.get("rope_parameters") or {}
    if float(vrope.get("rope_theta", 10000.0)) != 10000.0:
        raise ConfigError(f"{source}: vision_config.rope_parameters.rope_theta must be 10000 (got {vrope})")

    def need(src, key, where):
        if key not in src or src[key] is None:
            raise ConfigError(f"{source}: missing required key {where}{key!r}")
        return src[key]

    for key, want in (("hidden_act", "silu"),):
        if text_src.get(key, want) != want or vis.get(key, want) != want:
            raise ConfigError(f"{source}: {key} must be {want!r}")
    if "mrope_section" not in rope:
        raise ConfigError(f"{source}: rope settings have no 'mrope_section' (got {rope})")
    tie = text_src.get("tie_word_embeddings", d.get("tie_word_embeddings", False))
    text = TextConfig(
        vocab_size=int(need(text_src, "vocab_size", "")),
        hidden_size=int(need(text_src, "hidden_size", "")),
        intermediate_size=int(need(text_src, "intermediate_size", "")),
        num_layers=int(need(text_src, "num_hidden_layers", "")),
        num_heads=int(need(text_src, "num_attention_heads", "")),
        num_kv_heads=int(text_src.get("num_key_value_heads") or text_src["num_attention_heads"]),
        rope_theta=float(rope.get("rope_theta", text_src.get("rope_theta", 1_000_000.0))),
        mrope_section=tuple(int(x) for x in rope["mrope_section"]),
        rms_norm_eps=float(text_src.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(tie),
        max_position_embeddings=int(text_src.get("max_position_embeddings", 128_000)),
    )
    vision = VisionConfig(
        depth=int(need(vis, "depth", "vision_config.")),
        hidden_size=int(vis.get("hidden_size") or vis.get("embed_dim")),
        intermediate_size=int(need(vis, "intermediate_size", "vision_config.")),
        num_heads=int(need(vis, "num_heads", "vision_config.")),
        out_hidden_size=int(vis.get("out_hidden_size", text.hidden_size)),
        patch_size=int(vis.get("patch_size", vis.get("spatial_patch_size", 14))),
        temporal_patch_size=int(vis.get("temporal_patch_size", 2)),
        spatial_merge_size=int(vis.get("spatial_merge_size", 2)),
        window_size=int(vis.get("window_size", 112)),
        fullatt_block_indexes=tuple(int(i) for i in vis.get("fullatt_block_indexes", (7, 15, 23, 31))),
        in_channels=int(vis.get("in_channels", vis.get("in_chans", 3))),
        tokens_per_second=float(vis.get("tokens_per_second", 2)),
    )

    def tok(key, default):
        v = d.get(key, text_src.get(key, default))
        if isinstance(v, list):  # eos_token_id may be a list in generation configs
            v = v[0]
        return int(default if v is None else v)

    return ModelConfig(
        text=text, vision=vision,
        image_token_id=tok("image_token_id", 151655), video_token_id=tok("video_token_id", 151656),
        vision_start_token_id=tok("vision_start_token_id", 151652),
        vision_end_token_id=tok("vision_end_token_id", 151653),
        eos_token_id=tok("eos_token_id", 151645), pad_token_id=tok("pad_token_id", 151643),
    )
