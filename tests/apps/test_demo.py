"""`vital demo --quick` end to end (the CI-sized main job): every stage runs through the CLI and
the report has the promised structure with finite numbers."""

import json
import math

import pytest

from vital_jax.cli import main


def test_quick_demo_writes_the_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    ev = report["eval"]
    n = 4                                               # QUICK's eval_limit
    for cell in [ev[s][m] for s in ("sft", "rl") for m in ("tools", "no_tools")] + [ev["blind"]]:
        assert set(cell) >= {"accuracy", "miou", "score", "n", "ci"}, cell
        assert cell["n"] == n
        for k in ("accuracy", "miou", "score"):
            lo, hi = cell["ci"][k]
            assert math.isfinite(cell[k]) and 0.0 <= lo <= cell[k] <= hi <= 1.0, (k, cell)
    assert set(ev["paired"]) == {"rl_minus_sft_tools", "tools_minus_no_tools_rl", "tools_minus_no_tools_sft",
                                 "rl_tools_minus_blind"}
    for name, d in ev["paired"].items():
        assert d["n"] == n and d["ci"][0] <= d["mean"] <= d["ci"][1], name
        assert set(d["accuracy"]) == {"mean", "ci", "n"}
    for name, (a, b) in {"rl_minus_sft_tools": (ev["rl"]["tools"], ev["sft"]["tools"]),
                         "rl_tools_minus_blind": (ev["rl"]["tools"], ev["blind"])}.items():
        assert ev["paired"][name]["mean"] == pytest.approx(a["score"] - b["score"]), name
    assert ev["bootstrap"]["resamples"] >= 2000
    assert report["settings"]["demo"]["eval_limit"] == n and report["settings"]["rl"]["rl"]["eval_every"] > 0
    curves = report["curves"]
    assert curves["reward/train"] and curves["loss/rl"] and curves["loss/sft"]
    assert all(math.isfinite(v) for _, v in curves["loss/sft"])
    # the held-out curve: before RL (step 0) and at the last step
    assert [s for s, _ in curves["score/heldout"]] == [0, 2] and [s for s, _ in curves["reward/heldout"]] == [0, 2]
    for png in ("reward.png", "loss.png", "score.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "| accuracy |" in md and "| n | 4 | 4 | 4 | 4 | 4 |" in md and "rl · tools, blind" in md
    assert "| RL − SFT (tools) | 4 |" in md and "| RL tools − blind | 4 |" in md and "](score.png)" in md
    # each stage left a model that `vital eval` / `vital infer` can read, and its predictions
    for stage in ("sft", "rl"):
        assert (out / stage / "final" / "config.json").is_file()
        assert (out / stage / "final" / "tokenizer.json").is_file()
    for folder in ("sft_tools", "sft_no_tools", "rl_tools", "rl_no_tools", "rl_tools_blind"):
        lines = [json.loads(x) for x in (out / "eval" / folder / "predictions.jsonl").read_text().splitlines()]
        assert [r["id"] for r in lines] == ["0", "1", "2", "3"], folder      # index in data/eval.jsonl
        assert all({"video", "answer", "gold"} <= set(r) for r in lines), folder
    assert json.loads((out / "eval" / "rl_tools_blind" / "run.json").read_text())["blind"] is True
    assert "report:" in capsys.readouterr().out


def test_model_knobs_resize_the_demo_model_only(tmp_path):
    """The default demo keeps ModelConfig.tiny (SFT builds it); size knobs give a consistent
    config, initialised once into out/init, which SFT starts from."""
    from vital_jax.models.qwen2_5_vl import load_pretrained
    from vital_jax.models.qwen2_5_vl.config import ModelConfig
    from vital_jax.apps.demo import QUICK, DemoConfig, custom_model, demo_model_config, init_model, stage_configs

    base = ModelConfig.tiny(vocab_size=1024)
    assert not custom_model(DemoConfig()) and not custom_model(QUICK)
    assert demo_model_config(DemoConfig(), base) == base
    assert init_model(DemoConfig(), tmp_path) is None
    sft, rl = stage_configs(DemoConfig(), tmp_path)
    assert sft.model.init_from is None and sft.data.sft_files == ("sft_tool.jsonl", "sft_cot.jsonl")
    # the demo's vision settings reach both stages (and, through the checkpoints, the evaluation)
    assert sft.data.vision == rl.data.vision and sft.data.vision.text_timestamps
    assert sft.data.vision.max_pixels == DemoConfig().frame_pixels and rl.rl.dynamic_sampling

    demo = DemoConfig(model_hidden=96, model_layers=3, vision_hidden=48, vision_depth=2,
                      sft_files=("sft_tool.jsonl", "sft_cot.jsonl"))
    cfg = demo_model_config(demo, base)
    assert (cfg.text.hidden_size, cfg.text.num_layers, cfg.text.num_heads, cfg.text.num_kv_heads) == (96, 3, 6, 3)
    assert 2 * sum(cfg.text.mrope_section) == cfg.text.head_dim
    assert (cfg.vision.hidden_size, cfg.vision.depth, cfg.vision.out_hidden_size) == (48, 2, 96)
    assert ModelConfig.tiny().text.hidden_size == 64          # the preset itself is untouched
    init = init_model(demo, tmp_path)
    assert init == tmp_path / "init" and (init / "tokenizer.json").is_file()
    loaded, _ = load_pretrained(init)
    assert loaded.text.hidden_size == 96 and loaded.vision.depth == 2
    sft, rl = stage_configs(demo, tmp_path, init)
    assert sft.model.init_from == str(init) and sft.data.sft_files == ("sft_tool.jsonl", "sft_cot.jsonl")
    assert rl.model.init_from == str(tmp_path / "sft" / "final")


def test_a_stopped_stage_ends_the_demo(tmp_path, monkeypatch, capsys):
    """SIGTERM during SFT: the SFT checkpoint is saved and the demo stops there (RL must not start
    from a model that is not final); the CLI says how to resume."""
    import vital_jax.data.synthetic as synthetic
    import vital_jax.trainers.rl as rl_mod
    import vital_jax.trainers.sft as sft_mod

    monkeypatch.setattr(synthetic, "generate", lambda *a, **k: None)
    monkeypatch.setattr(sft_mod, "run_sft", lambda cfg: {"stopped": "SIGTERM", "steps": 7, "final": None})

    def no_rl(*a, **k):
        raise AssertionError("RL started after a stopped SFT")

    monkeypatch.setattr(rl_mod, "run_rl", no_rl)
    assert main(["demo", "--quick", "--out", str(tmp_path / "d")]) == 0
    assert "SFT stopped (SIGTERM) at step 7; rerun the same command to resume" in capsys.readouterr().out
