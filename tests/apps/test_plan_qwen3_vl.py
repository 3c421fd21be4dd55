"""Qwen3-VL in the memory planner: the size presets (equal to what the released config.json files
parse to, parameter counts), ``vital plan`` picking the family (preset names, ``init_from`` on
disk by ``model_type``, or by name), the VITAL recipe configs for 8B/2B, and the Qwen3 activation
terms against XLA's compiled memory analysis on CPU (the decoder in the real train step, the
tower with DeepStack on its own)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import pytest

from tests.apps.test_plan import step_memory_ratios
from vital_jax.apps.plan import PlanError, activation_bytes, model_config, plan
from vital_jax.cli import main
from vital_jax.config.run_config import load_config, to_dict
from vital_jax.models import qwen2_5_vl, qwen3_vl

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- presets


def _hf(hidden, layers, heads, kv, mlp, tie, v_depth, v_hidden, v_mlp, deepstack) -> dict:
    """The model-shaping keys of Qwen/Qwen3-VL-<size>-Instruct/config.json (hub layout)."""
    return {
        "architectures": ["Qwen3VLForConditionalGeneration"], "model_type": "qwen3_vl",
        "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
        "vision_end_token_id": 151653, "tie_word_embeddings": tie, "transformers_version": "4.57.0.dev0",
        "text_config": {
            "model_type": "qwen3_vl_text", "vocab_size": 151936, "hidden_size": hidden, "intermediate_size": mlp,
            "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": 128,
            "hidden_act": "silu", "max_position_embeddings": 262144, "rms_norm_eps": 1e-06, "rope_theta": 5000000,
            "rope_scaling": {"mrope_interleaved": True, "mrope_section": [24, 20, 20], "rope_type": "default"},
            "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645,
            "tie_word_embeddings": tie, "dtype": "bfloat16", "initializer_range": 0.02, "use_cache": True,
        },
        "vision_config": {
            "model_type": "qwen3_vl", "depth": v_depth, "hidden_size": v_hidden, "intermediate_size": v_mlp,
            "num_heads": 16, "out_hidden_size": hidden, "patch_size": 16, "temporal_patch_size": 2,
            "spatial_merge_size": 2, "in_channels": 3, "num_position_embeddings": 2304,
            "deepstack_visual_indexes": list(deepstack), "hidden_act": "gelu_pytorch_tanh", "initializer_range": 0.02,
        },
    }


HF_CONFIGS = {
    "2b": _hf(2048, 28, 16, 8, 6144, True, 24, 1024, 4096, (5, 11, 17)),
    "4b": _hf(2560, 36, 32, 8, 9728, True, 24, 1024, 4096, (5, 11, 17)),
    "8b": _hf(4096, 36, 32, 8, 12288, False, 27, 1152, 4304, (8, 16, 24)),
    "32b": _hf(5120, 64, 64, 8, 25600, False, 27, 1152, 4304, (8, 16, 24)),
}
# parameters of our tree (all weights: tower, DeepStack mergers, embeddings, lm head when untied);
# the hub lists 2.13B / 4.44B / 8.77B / 33.4B for these models
N_PARAMS = {"2b": 2_127_532_032, "4b": 4_437_815_808, "8b": 8_767_123_696, "32b": 33_357_390_064}


@pytest.mark.parametrize("size", sorted(HF_CONFIGS))
def test_presets_equal_the_released_configs(size):
    cfg = qwen3_vl.ModelConfig.preset(size)
    assert cfg == qwen3_vl.ModelConfig.from_hf_dict(HF_CONFIGS[size], source=size)   # strict keys
    assert qwen3_vl.ModelConfig.from_hf_dict(cfg.to_hf_dict()) == cfg                  # round trip
    n = sum(math.prod(x.shape) for x in jax.tree.leaves(qwen3_vl.abstract_params(cfg)))
    assert n == N_PARAMS[size]
    assert cfg.text.tie_word_embeddings == (size in ("2b", "4b"))
    assert cfg.vision.out_hidden_size == cfg.text.hidden_size and cfg.vision.patch_size == 16


def test_preset_counts_and_unknown_size():
    assert 2.1e9 < N_PARAMS["2b"] < 2.2e9 and 8.7e9 < N_PARAMS["8b"] < 8.8e9
    with pytest.raises(qwen3_vl.ConfigError, match="unknown Qwen3-VL preset '7b'"):
        qwen3_vl.ModelConfig.preset("7b")


# --------------------------------------------------------------------------- vital plan: family


def test_model_config_by_preset_name_keeps_the_runtime():
    cfg = load_config(None, ["model.param_dtype=bfloat16", "model.remat=full", "model.attention=blockwise"])
    for name, size in (("qwen3_vl_8b", "8b"), ("QWEN3_VL_2B", "2b"), ("qwen3-vl-32b", "32b")):
        m = model_config(cfg, name)
        assert m.replace(runtime=qwen3_vl.RuntimeOptions()) == qwen3_vl.ModelConfig.preset(size)
        assert (m.runtime.param_dtype, m.runtime.remat, m.runtime.attention) == ("bfloat16", "full", "blockwise")
    assert model_config(cfg, "qwen3_vl_tiny").text == qwen3_vl.ModelConfig.tiny(vocab_size=1024).text
    assert isinstance(model_config(cfg, "7b"), qwen2_5_vl.ModelConfig)     # Qwen2.5 names unchanged
    assert model_config(load_config(None, ["model.preset=qwen3_vl_4b"])).text.hidden_size == 2560
    for bad in ("qwen3_vl_7b", "qwen3_vl_30b"):
        with pytest.raises(PlanError, match="unknown model"):
            model_config(cfg, bad)


def test_model_config_from_init_from(tmp_path):
    # on disk: config.json's model_type picks the family
    (tmp_path / "q3").mkdir()
    (tmp_path / "q3" / "config.json").write_text(json.dumps(HF_CONFIGS["2b"]))
    m = model_config(load_config(None, [f"model.init_from={tmp_path / 'q3'}"]))
    assert m.replace(runtime=qwen3_vl.RuntimeOptions()) == qwen3_vl.ModelConfig.preset("2b")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "qwen3_vl_moe"}))
    with pytest.raises(PlanError, match="qwen3_vl_moe"):
        model_config(load_config(None, [f"model.init_from={tmp_path / 'other'}"]))
    # not on disk: the name says family and size
    for name, want in (("hub/Qwen/Qwen3-VL-8B-Instruct", qwen3_vl.ModelConfig.preset("8b")),
                       ("runs/vital_qwen3_vl_2b/stage3/final", qwen3_vl.ModelConfig.preset("2b")),
                       ("checkpoints/Qwen2.5-VL-7B-Instruct", qwen2_5_vl.ModelConfig.preset("7b")),
                       ("runs/vital3b/stage1/final", qwen2_5_vl.ModelConfig.preset("3b"))):
        m = model_config(load_config(None, [f"model.init_from={tmp_path / name}"]))
        assert m.replace(runtime=type(m.runtime)()) == want, name
    with pytest.raises(PlanError, match="names no size"):
        model_config(load_config(None, [f"model.init_from={tmp_path / 'Qwen3-VL-30B-A3B-Instruct'}"]))


QWEN3_CONFIGS = sorted((ROOT / "configs").glob("vital_qwen3_vl_*.yaml"))


@pytest.mark.parametrize("config", QWEN3_CONFIGS, ids=lambda f: f.stem)
def test_qwen3_vl_configs_are_the_7b_recipe(config):
    """Each 8B/2B stage is its 7B stage with only the model and the paths changed, and plans the
    Qwen3-VL model of its size."""
    size = "8b" if "_8b_" in config.name else "2b"
    stage = config.stem.split(f"_{size}_")[1]
    cfg = load_config([config])
    ref = to_dict(load_config([ROOT / "configs" / f"vital_7b_{stage}.yaml"]))
    got = to_dict(cfg)
    assert got["model"].pop("init_from") != ref["model"].pop("init_from")
    assert f"qwen3_vl_{size}" in got.pop("out_dir") and f"qwen3-vl-{size}" in got.pop("name")
    ref.pop("out_dir"), ref.pop("name")
    assert got == ref
    m = model_config(cfg)
    assert m.replace(runtime=qwen3_vl.RuntimeOptions()) == qwen3_vl.ModelConfig.preset(size)


def test_cli_plans_a_qwen3_config(capsys):
    base = ["plan", "--config", str(ROOT / "configs" / "vital_qwen3_vl_8b_stage2_rl.yaml"), "--devices", "8",
            "--mesh", "data=1,fsdp=8,tensor=1", "--device-memory", "80"]
    assert main(base + ["--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["fits"] and got["model"].endswith("vital_qwen3_vl_8b/stage1/final")
    assert "8.77 B parameters" in got["notes"]
    # bf16 params sharded 8 ways over fsdp; unsplit: the 4 mergers' [4608, 4608] fc1 (both axes
    # map to `tensor`), plus norm scales and biases
    expect = 2 * N_PARAMS["8b"] / 8 + 2 * 4 * 4608 * 4608 * (1 - 1 / 8)
    assert got["per_device_bytes"]["params"] == pytest.approx(expect, rel=0.001)
    assert main(base + ["--model", "qwen3_vl_2b"]) == 0
    assert "2.13 B parameters" in capsys.readouterr().out


# --------------------------------------------------------------------------- activations vs XLA


def _small(**vision) -> qwen3_vl.ModelConfig:
    cfg = qwen3_vl.ModelConfig.tiny(hidden_size=256, intermediate_size=512, vocab_size=2048, num_layers=2,
                                    num_heads=4, num_kv_heads=2, head_dim=64, mrope_section=(8, 12, 12))
    if vision:
        cfg = cfg.replace(vision=qwen3_vl.VisionConfig(
            hidden_size=128, intermediate_size=512, num_heads=2, out_hidden_size=256, num_position_embeddings=36,
            **vision))
    return cfg


def test_decoder_estimate_matches_xla_memory_analysis(devices8):
    """The Qwen3 decoder (q/k norms) in the trainer's real SFT step, as the Qwen2.5 check in
    test_plan.py: arguments exact, temporaries and peak within 10 %."""
    mesh_shape = (2, 2, 2)
    cfg = load_config(None, ["sft.batch_size=16", "sft.micro_batches=2", "data.token_buckets=[256]",
                             "data.vision_buckets=[0]", "model.attention=xla"])
    mcfg = _small().with_runtime(attention="xla")
    ratios = step_memory_ratios(cfg, mcfg, mesh_shape)
    assert abs(ratios["argument"] - 1) < 0.01 and abs(ratios["output"] - 1) < 0.01, ratios
    assert abs(ratios["temp"] - 1) < 0.10 and abs(ratios["peak"] - 1) < 0.10, ratios


class _Tower(NamedTuple):   # the fields encode_vision reads (qwen3_vl.VisionArrays)
    pixels: jax.Array
    seg: jax.Array
    rot_hw: jax.Array
    interp_idx: jax.Array
    interp_w: jax.Array


@pytest.mark.parametrize("remat, attention, depth, deepstack", [("full", "blockwise", 8, (1, 5)),
                                                                ("none", "xla", 4, (1,))])
def test_tower_estimate_matches_xla_memory_analysis(remat, attention, depth, deepstack):
    """The tower row (every block attending within frames, DeepStack mergers, the features and
    their gradients) against XLA's temporaries of the tower's forward + backward, one row of
    1024 patches."""
    N = 1024
    mcfg = _small(depth=depth, deepstack_visual_indexes=deepstack).with_runtime(remat=remat, attention=attention)
    v = mcfg.vision
    S = jax.ShapeDtypeStruct
    arrays = _Tower(S((N, v.patch_dim), jnp.float32), S((N,), jnp.int32), S((N, 2), jnp.int32),
                    S((N, 4), jnp.int32), S((N, 4), jnp.float32))

    def loss(p, a):
        merged, ds = qwen3_vl.encode_vision(mcfg, p, a)
        return jnp.sum(merged ** 2) + jnp.sum(ds ** 2)

    vparams = qwen3_vl.abstract_params(mcfg)["vision"]
    temp = jax.jit(jax.grad(loss)).lower(vparams, arrays).compile().memory_analysis().temp_size_in_bytes
    cfg = load_config(None, ["sft.batch_size=1", "sft.micro_batches=1", "data.token_buckets=[64]",
                             f"data.vision_buckets=[{N}]"])
    est = activation_bytes(mcfg, cfg, (1, 1, 1))["vision"]
    assert abs(est / temp - 1) < 0.10, (est, temp)


def test_frozen_tower_rl_batch_carries_deepstack_features():
    cfg = load_config([ROOT / "configs" / "vital_qwen3_vl_8b_stage2_rl.yaml"])
    p = plan(cfg, (1, 8, 1))
    mcfg = model_config(cfg)
    G, D, Mv = 3, mcfg.text.hidden_size, max(cfg.data.vision_buckets) // 4
    rows = cfg.rl.prompts_per_step * cfg.rl.group_size
    assert "activations (vision)" not in p.rows          # frozen: the tower runs outside the step
    # merged embeddings + 3 DeepStack features in bf16 for each row, split over 8 devices
    assert p.rows["batch"] > (1 + G) * rows * Mv * D * 2 / 8
