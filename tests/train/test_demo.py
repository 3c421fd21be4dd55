"""`vital demo --quick` end to end (the CI-sized main job): every stage runs through the CLI and
the report has the promised structure with finite numbers."""

import json
import math

from vital_jax.cli import main


def test_quick_demo_writes_the_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    for stage in ("sft", "rl"):
        for mode in ("tools", "no_tools"):
            got = report["eval"][stage][mode]
            assert set(got) >= {"accuracy", "miou", "score"}, got
            assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in got.values()), got
    curves = report["curves"]
    assert curves["reward/train"] and curves["loss/rl"] and curves["loss/sft"]
    assert all(math.isfinite(v) for _, v in curves["loss/sft"])
    for png in ("reward.png", "loss.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| accuracy |" in (out / "report.md").read_text()
    # each stage left a model that `vital eval` / `vital infer` can read, and its predictions
    for stage in ("sft", "rl"):
        assert (out / stage / "final" / "config.json").is_file()
        assert (out / stage / "final" / "tokenizer.json").is_file()
        lines = (out / "eval" / f"{stage}_tools" / "predictions.jsonl").read_text().splitlines()
        assert len(lines) == 4
    assert "report:" in capsys.readouterr().out


def test_model_knobs_resize_the_demo_model_only(tmp_path):
    """The default demo keeps ModelConfig.tiny (SFT builds it); size knobs give a consistent
    config, initialised once into out/init, which SFT starts from."""
    from vital_jax.models.qwen2_5_vl import load_pretrained
    from vital_jax.models.qwen2_5_vl.config import ModelConfig
    from vital_jax.train.demo import QUICK, DemoConfig, custom_model, demo_model_config, init_model, stage_configs

    base = ModelConfig.tiny(vocab_size=1024)
    assert not custom_model(DemoConfig()) and not custom_model(QUICK)
    assert demo_model_config(DemoConfig(), base) == base
    assert init_model(DemoConfig(), tmp_path) is None
    sft, rl = stage_configs(DemoConfig(), tmp_path)
    assert sft.model.init_from is None and sft.data.sft_files == ("sft_tool.jsonl",)

    demo = DemoConfig(model_hidden=96, model_layers=3, vision_hidden=48, vision_depth=2,
                      sft_files=("sft_tool.jsonl", "sft_cot.jsonl"))
    cfg = demo_model_config(demo, base)
    assert (cfg.text.hidden_size, cfg.text.num_layers, cfg.text.num_heads, cfg.text.num_kv_heads) == (96, 3, 6, 3)
    assert 2 * sum(cfg.text.mrope_section) == cfg.text.head_dim
    assert (cfg.vision.hidden_size, cfg.vision.depth, cfg.vision.out_hidden_size) == (48, 2, 96)
    assert ModelConfig.tiny().text.hidden_size == 64          # the preset itself is untouched
    init = init_model(demo, tmp_path, log=lambda *a: None)
    assert init == tmp_path / "init" and (init / "tokenizer.json").is_file()
    loaded, _ = load_pretrained(init)
    assert loaded.text.hidden_size == 96 and loaded.vision.depth == 2
    sft, rl = stage_configs(demo, tmp_path, init)
    assert sft.model.init_from == str(init) and sft.data.sft_files == ("sft_tool.jsonl", "sft_cot.jsonl")
    assert rl.model.init_from == str(tmp_path / "sft" / "final")
