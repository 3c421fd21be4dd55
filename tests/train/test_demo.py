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
