"""The memory planner: its estimate vs XLA's compiled memory analysis of the real train step on the
8 fake CPU devices, a 7B pod layout planned without allocating, and the ``vital plan`` CLI."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import jax
import pytest

from vital_jax.cli import main
from vital_jax.models.qwen2_5_vl.config import ModelConfig
from vital_jax.sharding import make_mesh
from vital_jax.config.run_config import load_config
from vital_jax.apps.plan import PlanError, abstract_step_inputs, parse_mesh, plan, step_memory_estimate
from vital_jax.trainers.step import jit_train_step, sft_loss

# big enough that activations, gradients and optimizer state are all visible next to XLA's fixed
# overheads; 16 rows per step in 2 micro-batches = one row per device and micro-batch on 8 devices
SMALL = ["sft.batch_size=16", "sft.micro_batches=2", "data.token_buckets=[256]", "data.vision_buckets=[0]"]


def _small_model(remat: str) -> ModelConfig:
    return ModelConfig.tiny(hidden_size=256, intermediate_size=512, vocab_size=2048, num_layers=2, num_heads=4,
                            num_kv_heads=2, mrope_section=(8, 12, 12)).with_runtime(remat=remat)


def step_memory_ratios(cfg, mcfg, mesh_shape) -> dict[str, float]:
    """Planner estimate / XLA's compiled memory analysis of the SFT step, per part and at peak."""
    mesh = make_mesh(*mesh_shape)
    state, batch, optimizer = abstract_step_inputs(cfg, mcfg, mesh)
    step = jit_train_step(lambda p, mb, ctx: sft_loss(mcfg, p, mb, ctx["token_count"]), optimizer,
                          jax.tree.map(lambda x: x.sharding, state), jax.tree.map(lambda x: x.sharding, batch))
    with jax.set_mesh(mesh):
        ma = step.lower(state, batch).compile().memory_analysis()
    est = step_memory_estimate(cfg, mesh_shape, mcfg)
    xla = {"argument": ma.argument_size_in_bytes, "output": ma.output_size_in_bytes, "temp": ma.temp_size_in_bytes}
    ratios = {k: est[k] / xla[k] for k in xla}
    # the donated state aliases its outputs: peak = arguments + temp (+ the few non-aliased outputs)
    peak_xla = xla["argument"] + xla["output"] - ma.alias_size_in_bytes + xla["temp"]
    ratios["peak"] = (est["argument"] + est["temp"]) / peak_xla
    return ratios


@pytest.mark.parametrize("mesh_shape, attention, tokens", [((2, 2, 2), "xla", 256), ((8, 1, 1), "xla", 256),
                                                       ((2, 2, 2), "blockwise", 256), ((2, 2, 2), "blockwise", 1024)])
def test_estimate_matches_xla_memory_analysis(devices8, mesh_shape, attention, tokens):
    """Each attention implementation is modelled: blockwise's backward holds blocks, not scores."""
    cfg = load_config(None, [*SMALL, f"data.token_buckets=[{tokens}]", f"model.attention={attention}"])
    mcfg = _small_model("none").with_runtime(attention=attention)
    ratios = step_memory_ratios(cfg, mcfg, mesh_shape)
    assert abs(ratios["argument"] - 1) < 0.01 and abs(ratios["output"] - 1) < 0.01, ratios
    assert abs(ratios["temp"] - 1) < 0.10, ratios
    assert abs(ratios["peak"] - 1) < 0.10, ratios


def test_7b_on_v5p_64_is_planned_without_allocating():
    cfg = load_config(["configs/vital_7b_stage1_sft.yaml", "configs/mesh/v5p_64.yaml"],
                      ["sft.micro_batches=8", "data.vision_buckets=[16384]", "model.attention=xla"])
    t0 = time.perf_counter()
    p = plan(cfg, (cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor), devices=32, device_memory_gb=95)
    assert time.perf_counter() - t0 < 30
    assert p.model.endswith("Qwen2.5-VL-7B-Instruct") and p.mesh == (2, 16, 1)
    n = int(p.notes[-1].split()[0].replace(".", "")) * 10**7  # "8.29 B parameters"
    assert 8.2e9 < n < 8.4e9
    # bf16 params sharded 16 ways over fsdp; the only unsplit matrix is the vision merger's
    # [5120, 5120] fc1 (both of its axes map to `tensor`), plus norm scales and biases
    expect = 2 * n / 16 + 2 * 5120 * 5120 * (1 - 1 / 16)
    assert abs(p.rows["params"] - expect) / expect < 0.01
    assert p.rows["optimizer state"] == pytest.approx(2 * p.rows["params"], rel=1e-3)  # Adam mu + nu, bf16
    assert p.fits is False  # 12288-token rows with materialised attention scores do not fit a v5p chip


ROOT = Path(__file__).resolve().parents[2]
# every VITAL stage config: Qwen2.5-VL 7B and 3B, Qwen3-VL 8B and 2B
VITAL_CONFIGS = sorted((ROOT / "configs").glob("vital_*.yaml"))
MESHES = [("v5p_64", 32, 95), ("gpu_8", 8, 80)]


@pytest.mark.parametrize("mesh, devices, gb", MESHES)
@pytest.mark.parametrize("config", VITAL_CONFIGS, ids=lambda f: f.stem)
def test_shipped_vital_configs_fit_as_written(config, mesh, devices, gb):
    """Every VITAL stage config fits a TPU v5p-64 chip and an 80 GB GPU of an 8-GPU node with its
    mesh file and nothing else: blockwise attention, and micro_batches: auto."""
    cfg = load_config([config, ROOT / "configs" / "mesh" / f"{mesh}.yaml"])
    p = plan(cfg, (cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor), devices=devices, device_memory_gb=gb)
    assert p.fits, (config.name, mesh, p.table())


@pytest.mark.parametrize("mesh, devices", [(m, n) for m, n, _ in MESHES])
@pytest.mark.parametrize("stage1", ["vital_7b_stage1_sft", "vital_qwen3_vl_8b_stage1_sft"])
def test_stage1_micro_batches_auto(stage1, mesh, devices):
    """micro_batches: auto gives one row per device per micro-batch: 8 / 32 for stage 1."""
    from vital_jax.config.run_config import resolve_micro_batches

    cfg = load_config([ROOT / "configs" / f"{stage1}.yaml", ROOT / "configs" / "mesh" / f"{mesh}.yaml"])
    shape = (cfg.mesh.data if cfg.mesh.data > 0 else devices // cfg.mesh.fsdp, cfg.mesh.fsdp, 1)
    assert resolve_micro_batches(cfg, shape).sft.micro_batches == 256 // devices


def test_auto_micro_batches_rule():
    from vital_jax.config.run_config import resolve_micro_batches

    cfg = load_config(None, ["sft.batch_size=48", "sft.micro_batches=auto", "rl.prompts_per_step=6",
                             "rl.group_size=4", "rl.micro_batches=auto"])
    r = resolve_micro_batches(cfg, (2, 4, 1))
    assert r.sft.micro_batches == 6                 # 48 rows / 8 devices: one row each per micro-batch
    assert r.rl.micro_batches == 3                  # whole groups: 24 rows in 3 x 8 rows (2 groups each)
    assert resolve_micro_batches(cfg, (64, 1, 1)).sft.micro_batches == 1   # fewer rows than devices
    assert resolve_micro_batches(cfg, (2, 4, 1), processes=2).sft.micro_batches == 6   # per process: 24 / 4
    explicit = load_config(None, ["sft.micro_batches=2"])
    assert resolve_micro_batches(explicit, (2, 4, 1)) is explicit


def test_parse_mesh():
    assert parse_mesh("data=2,fsdp=16,tensor=1") == (2, 16, 1)
    assert parse_mesh("fsdp=8") == (1, 8, 1)
    for bad in ("data=2,fsdp=x", "pipeline=2", "data=0", "data=2,data=2", ""):
        with pytest.raises(PlanError):
            parse_mesh(bad)


def test_cli_table_json_and_bad_mesh(capsys):
    base = ["plan", "--config", "configs/vital_7b_stage2_rl.yaml", "--devices", "8"]
    assert main(base + ["--mesh", "data=1,fsdp=8,tensor=1", "--device-memory", "80"]) == 0
    out = capsys.readouterr().out
    assert "kv cache (rollout)" in out and "fits in 80.0 GB" in out
    assert main(base + ["--model", "72b", "--mesh", "data=1,fsdp=8,tensor=1", "--device-memory", "80", "--json"]) == 1
    got = json.loads(capsys.readouterr().out)
    assert got["fits"] is False and got["devices"] == 8 and got["headroom_bytes"] < 0
    assert got["total_bytes"] == sum(got["per_device_bytes"].values())
    assert math.isclose(got["per_device_bytes"]["params"] / 1e9, 2 * 73.4 / 8, rel_tol=0.02)
    assert main(base + ["--mesh", "data=2;fsdp=4"]) == 2
    err = capsys.readouterr().err
    assert "vital plan: error: --mesh" in err and "data=N,fsdp=N,tensor=N" in err
    assert main(base + ["--mesh", "data=3,fsdp=8"]) == 2  # 24 devices != 8
    assert "needs 24 devices" in capsys.readouterr().err
