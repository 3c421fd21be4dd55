"""Qwen3-VL (dense) configuration: frozen dataclasses, the tiny test preset, HF ``config.json`` in.

What changed from Qwen2.5-VL, and so why this is a separate family rather than flags on the old one:

- text: the Qwen3 decoder (RMSNorm on each query/key head before the rotary, no qkv bias, an
  explicit ``head_dim`` that need not be ``hidden_size / num_heads``) with *interleaved* M-RoPE;
- vision: 16 px patches with a conv bias, a learned position table (``num_position_embeddings``,
  a square grid) resampled to every frame's grid, LayerNorm (not RMSNorm), a GELU MLP (not
  SwiGLU), attention within each frame (no windows), and DeepStack: extra mergers on the outputs
  of ``deepstack_visual_indexes`` blocks whose features are added to the decoder's hidden states
  at the visual positions after its first layers.

How we run the model (dtypes, scan, remat, attention kernel) is the Qwen2.5-VL family's
:class:`~vital_jax.models.qwen2_5_vl.config.RuntimeOptions`, shared so both families take the same
run-config section. All configs are hashable (static arguments of ``jax.jit``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vital_jax.models.qwen2_5_vl.config import ConfigError, RuntimeOptions

__all__ = ["ConfigError", "ModelConfig", "PRESETS", "RuntimeOptions", "TextConfig", "VisionConfig"]

# activation names transformers uses for the vision MLP -> whether jax.nn.gelu takes the tanh form
_GELU_APPROX = {"gelu_pytorch_tanh": True, "gelu_new": True, "gelu": False}


@dataclass(frozen=True, kw_only=True)
class VisionConfig:
    depth: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    out_hidden_size: int
    patch_size: int = 16
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    in_channels: int = 3
    num_position_embeddings: int = 2304
    deepstack_visual_indexes: tuple[int, ...] = (8, 16, 24)
    hidden_act: str = "gelu_pytorch_tanh"
    rope_theta: float = 10000.0
    layer_norm_eps: float = 1e-6  # hard-coded in the reference implementation

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
    def num_grid_per_side(self) -> int:
        """Side of the square learned position grid (48 for 2304 entries)."""
        return math.isqrt(self.num_position_embeddings)

    @property
    def gelu_approximate(self) -> bool:
        return _GELU_APPROX[self.hidden_act]


@dataclass(frozen=True, kw_only=True)
class TextConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int = 128
    rope_theta: float = 5_000_000.0
    mrope_section: tuple[int, int, int] = (24, 20, 20)
    mrope_interleaved: bool = True
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 262_144


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
        if t.num_heads % t.num_kv_heads:
            raise ConfigError(f"text num_heads {t.num_heads} not divisible by num_kv_heads {t.num_kv_heads}")
        if 2 * sum(t.mrope_section) != t.head_dim:
            raise ConfigError(f"mrope_section {list(t.mrope_section)} must sum to head_dim/2 = {t.head_dim // 2}")
        if v.hidden_size % v.num_heads or v.head_dim % 4:
            # the 2-D rotary splits each head in an h half and a w half, each rotated in pairs
            raise ConfigError(f"vision hidden_size {v.hidden_size} / num_heads {v.num_heads} must be a multiple of 4")
        if v.out_hidden_size != t.hidden_size:
            raise ConfigError(f"vision out_hidden_size {v.out_hidden_size} != text hidden_size {t.hidden_size}")
        if v.num_grid_per_side**2 != v.num_position_embeddings:
            raise ConfigError(f"vision num_position_embeddings {v.num_position_embeddings} is not a square")
        if v.hidden_act not in _GELU_APPROX:
            raise ConfigError(f"vision hidden_act {v.hidden_act!r} not one of {sorted(_GELU_APPROX)}")
        ds = v.deepstack_visual_indexes
        if len(set(ds)) != len(ds) or any(not 0 <= i < v.depth for i in ds):
            raise ConfigError(f"deepstack_visual_indexes {list(ds)}: need distinct blocks in [0, {v.depth})")
        if len(ds) > t.num_layers:
            raise ConfigError(f"{len(ds)} deepstack features but only {t.num_layers} decoder layers to take them")
        for name in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
            if not 0 <= getattr(self, name) < t.vocab_size:
                raise ConfigError(f"{name}={getattr(self, name)} outside vocab_size {t.vocab_size}")

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)

    def with_runtime(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, runtime=dataclasses.replace(self.runtime, **kw))

    def to_hf_dict(self) -> dict[str, Any]:
        """The nested ``config.json`` transformers' ``Qwen3VLConfig`` reads (and that
        :meth:`from_hf_dict` reads back to this config; the runtime options are ours, only the
        param dtype is written, as ``dtype``)."""
        t, v = self.text, self.vision
        dtype = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}.get(
            self.runtime.param_dtype, "float32")
        text_config = {
            "model_type": "qwen3_vl_text",
            "vocab_size": t.vocab_size, "hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size,
            "num_hidden_layers": t.num_layers, "num_attention_heads": t.num_heads,
            "num_key_value_heads": t.num_kv_heads, "head_dim": t.head_dim, "hidden_act": "silu",
            "max_position_embeddings": t.max_position_embeddings, "rms_norm_eps": t.rms_norm_eps,
            "rope_parameters": {"rope_type": "default", "rope_theta": t.rope_theta,
                                "mrope_section": list(t.mrope_section), "mrope_interleaved": True},
            "attention_bias": False, "attention_dropout": 0.0,
            "eos_token_id": self.eos_token_id, "pad_token_id": self.pad_token_id,
            "bos_token_id": None,  # Qwen3-VL has none; transformers' default id may exceed a small vocab
        }
        vision_config = {
            "model_type": "qwen3_vl_vision",
            "depth": v.depth, "hidden_size": v.hidden_size, "intermediate_size": v.intermediate_size,
            "num_heads": v.num_heads, "out_hidden_size": v.out_hidden_size, "patch_size": v.patch_size,
            "temporal_patch_size": v.temporal_patch_size, "spatial_merge_size": v.spatial_merge_size,
            "in_channels": v.in_channels, "num_position_embeddings": v.num_position_embeddings,
            "deepstack_visual_indexes": list(v.deepstack_visual_indexes), "hidden_act": v.hidden_act,
            "rope_parameters": {"rope_type": "axial", "rope_theta": v.rope_theta},
        }
        return {
            "architectures": ["Qwen3VLForConditionalGeneration"],
            "model_type": "qwen3_vl",
            "dtype": dtype,
            "text_config": text_config,
            "vision_config": vision_config,
            "image_token_id": self.image_token_id, "video_token_id": self.video_token_id,
            "vision_start_token_id": self.vision_start_token_id, "vision_end_token_id": self.vision_end_token_id,
            # top level: the flag transformers ties the head by (from_hf_dict reads it there first)
            "tie_word_embeddings": t.tie_word_embeddings,
        }

    # ---- presets -------------------------------------------------------------------------
    @staticmethod
    def tiny(**text_overrides) -> "ModelConfig":
        """The test model. ``head_dim`` 32 != hidden/heads = 16 on purpose (as in the real 4B),
        three decoder layers so one runs after the two DeepStack injections, and a 6x6 position
        grid that every test grid has to be resampled from. Token ids are those of
        ``tests/models/hf_reference`` (vocab 320)."""
        text = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_layers=3, num_heads=4,
                    num_kv_heads=2, head_dim=32, rope_theta=500_000.0, mrope_section=(6, 5, 5),
                    max_position_embeddings=4096)
        text.update(text_overrides)
        return ModelConfig(
            text=TextConfig(**text),
            vision=VisionConfig(depth=3, hidden_size=32, intermediate_size=64, num_heads=2,
                                out_hidden_size=text["hidden_size"], num_position_embeddings=36,
                                deepstack_visual_indexes=(0, 2)),
            image_token_id=310, video_token_id=311, vision_start_token_id=308,
            vision_end_token_id=309, eos_token_id=305, pad_token_id=304,
        )

    @staticmethod
    def preset(name: str) -> "ModelConfig":
        """The released dense sizes: ``"2b"``, ``"4b"``, ``"8b"``, ``"32b"`` (see :data:`PRESETS`)."""
        if name not in PRESETS:
            raise ConfigError(f"unknown Qwen3-VL preset {name!r}; known: {sorted(PRESETS)}")
        text, vision = PRESETS[name]
        return ModelConfig(text=TextConfig(**text), vision=VisionConfig(**vision))

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


def _preset(*, hidden, layers, heads, kv_heads, mlp, tie, v_depth, v_hidden, v_mlp, deepstack):
    text = dict(vocab_size=151_936, hidden_size=hidden, intermediate_size=mlp, num_layers=layers,
                num_heads=heads, num_kv_heads=kv_heads, head_dim=128, rope_theta=5_000_000.0,
                mrope_section=(24, 20, 20), mrope_interleaved=True, rms_norm_eps=1e-6,
                tie_word_embeddings=tie, max_position_embeddings=262_144)
    vision = dict(depth=v_depth, hidden_size=v_hidden, intermediate_size=v_mlp, num_heads=16,
                  out_hidden_size=hidden, patch_size=16, temporal_patch_size=2, spatial_merge_size=2,
                  in_channels=3, num_position_embeddings=2304, deepstack_visual_indexes=deepstack,
                  hidden_act="gelu_pytorch_tanh")
    return text, vision


# The released dense models, from the ``config.json`` of Qwen/Qwen3-VL-{2B,4B,8B,32B}-Instruct on
# the Hugging Face hub (read from verbatim copies of those files in public repositories; the hub
# itself is not reachable from here). Shared by all four: vocab 151936, head_dim 128, rope_theta
# 5e6, mrope_section [24, 20, 20] interleaved, rms_norm_eps 1e-6, max_position_embeddings 262144;
# vision 16 heads, 16 px patches, temporal 2, merge 2, 2304 position embeddings,
# gelu_pytorch_tanh. The two small ones tie the lm head to the embeddings and share the 24-block
# 1024-wide tower; the 8B/32B use the 27-block 1152-wide one (as does Qwen3-VL-30B-A3B).
PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "2b": _preset(hidden=2048, layers=28, heads=16, kv_heads=8, mlp=6144, tie=True,
                  v_depth=24, v_hidden=1024, v_mlp=4096, deepstack=(5, 11, 17)),
    "4b": _preset(hidden=2560, layers=36, heads=32, kv_heads=8, mlp=9728, tie=True,
                  v_depth=24, v_hidden=1024, v_mlp=4096, deepstack=(5, 11, 17)),
    "8b": _preset(hidden=4096, layers=36, heads=32, kv_heads=8, mlp=12288, tie=False,
                  v_depth=27, v_hidden=1152, v_mlp=4304, deepstack=(8, 16, 24)),
    "32b": _preset(hidden=5120, layers=64, heads=64, kv_heads=8, mlp=25600, tie=False,
                   v_depth=27, v_hidden=1152, v_mlp=4304, deepstack=(8, 16, 24)),
}


# Keys of real configs that change nothing in the forward pass (framework/training knobs) or that
# are read explicitly below. Anything else is refused under ``strict``: an unknown key may be a
# feature we do not implement (e.g. attention_bias=true), and silently dropping it breaks parity.
_TOP_KEYS = {
    "architectures", "model_type", "dtype", "torch_dtype", "transformers_version", "text_config",
    "vision_config", "image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id",
    "tie_word_embeddings", "eos_token_id", "pad_token_id", "bos_token_id", "_name_or_path", "use_cache",
}
_TEXT_KEYS = {
    "model_type", "dtype", "torch_dtype", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings",
    "initializer_range", "rms_norm_eps", "use_cache", "rope_parameters", "rope_scaling", "rope_theta",
    "attention_bias", "attention_dropout", "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings",
    "_name_or_path", "transformers_version",
}
_VISION_KEYS = {
    "model_type", "dtype", "torch_dtype", "depth", "hidden_size", "hidden_act", "intermediate_size", "num_heads",
    "in_channels", "patch_size", "spatial_merge_size", "temporal_patch_size", "out_hidden_size",
    "num_position_embeddings", "deepstack_visual_indexes", "initializer_range", "rope_parameters",
    "_name_or_path", "transformers_version",
}


def _from_hf_dict(d: dict[str, Any], *, source: str, strict: bool) -> ModelConfig:
    if d.get("model_type") not in ("qwen3_vl", None):
        raise ConfigError(f"{source}: model_type is {d.get('model_type')!r}, expected 'qwen3_vl'")
    txt, vis = d.get("text_config"), d.get("vision_config")
    if not isinstance(txt, dict) or not isinstance(vis, dict):
        raise ConfigError(f"{source}: need nested 'text_config' and 'vision_config' dicts")
    if strict:
        for where, got, known in (("", d, _TOP_KEYS), ("text_config.", txt, _TEXT_KEYS),
                                  ("vision_config.", vis, _VISION_KEYS)):
            unknown = sorted(set(got) - known)
            if unknown:
                raise ConfigError(f"{source}: unknown {where}key(s) {unknown} (pass strict=False to ignore)")

    def need(src, key, where):
        if src.get(key) is None:
            raise ConfigError(f"{source}: missing required key {where}{key!r}")
        return src[key]

    if txt.get("attention_bias", False):
        raise ConfigError(f"{source}: text_config.attention_bias=true is not implemented (Qwen3-VL has none)")
    if txt.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"{source}: text_config.hidden_act must be 'silu'")
    rope = txt.get("rope_parameters") or txt.get("rope_scaling") or {}
    if rope.get("rope_type", "default") != "default":
        raise ConfigError(f"{source}: text rope_type {rope.get('rope_type')!r} is not implemented (only 'default')")
    if "mrope_section" not in rope:
        raise ConfigError(f"{source}: text rope settings have no 'mrope_section' (got {rope})")
    if rope.get("mrope_interleaved", True) is False:
        # transformers' Qwen3-VL interleaves whatever the flag says, so "false" is ambiguous
        raise ConfigError(f"{source}: mrope_interleaved=false; Qwen3-VL interleaves M-RoPE (refusing to guess)")
    vrope = vis.get("rope_parameters") or {}
    if vrope.get("rope_type", "axial") != "axial":
        raise ConfigError(f"{source}: vision rope_type {vrope.get('rope_type')!r}; only 'axial' is implemented")

    heads = int(need(txt, "num_attention_heads", "text_config."))
    hidden = int(need(txt, "hidden_size", "text_config."))
    # the top-level flag is the one transformers ties by; the text one is an older spelling
    tie = d.get("tie_word_embeddings", txt.get("tie_word_embeddings", False))
    text = TextConfig(
        vocab_size=int(need(txt, "vocab_size", "text_config.")),
        hidden_size=hidden,
        intermediate_size=int(need(txt, "intermediate_size", "text_config.")),
        num_layers=int(need(txt, "num_hidden_layers", "text_config.")),
        num_heads=heads,
        num_kv_heads=int(txt.get("num_key_value_heads") or heads),
        head_dim=int(txt.get("head_dim") or hidden // heads),
        rope_theta=float(rope.get("rope_theta", txt.get("rope_theta", 5_000_000.0))),
        mrope_section=tuple(int(x) for x in rope["mrope_section"]),
        mrope_interleaved=True,
        rms_norm_eps=float(txt.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(tie),
        max_position_embeddings=int(txt.get("max_position_embeddings", 262_144)),
    )
    vision = VisionConfig(
        depth=int(need(vis, "depth", "vision_config.")),
        hidden_size=int(need(vis, "hidden_size", "vision_config.")),
        intermediate_size=int(need(vis, "intermediate_size", "vision_config.")),
        num_heads=int(need(vis, "num_heads", "vision_config.")),
        out_hidden_size=int(vis.get("out_hidden_size", text.hidden_size)),
        patch_size=int(vis.get("patch_size", 16)),
        temporal_patch_size=int(vis.get("temporal_patch_size", 2)),
        spatial_merge_size=int(vis.get("spatial_merge_size", 2)),
        in_channels=int(vis.get("in_channels", 3)),
        num_position_embeddings=int(vis.get("num_position_embeddings", 2304)),
        deepstack_visual_indexes=tuple(int(i) for i in vis.get("deepstack_visual_indexes", (8, 16, 24))),
        hidden_act=str(vis.get("hidden_act", "gelu_pytorch_tanh")),
        rope_theta=float(vrope.get("rope_theta", 10000.0)),
    )

    def tok(key, default):
        v = d.get(key, txt.get(key, default))
        if isinstance(v, list):  # eos_token_id may be a list
            v = v[0]
        return int(default if v is None else v)

    return ModelConfig(
        text=text, vision=vision,
        image_token_id=tok("image_token_id", 151655), video_token_id=tok("video_token_id", 151656),
        vision_start_token_id=tok("vision_start_token_id", 151652),
        vision_end_token_id=tok("vision_end_token_id", 151653),
        eos_token_id=tok("eos_token_id", 151645), pad_token_id=tok("pad_token_id", 151643),
    )
