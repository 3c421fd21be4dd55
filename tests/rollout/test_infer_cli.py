"""`vital infer` end to end on a tiny checkpoint directory (weights + tokenizer.json)."""

import pytest

from vital_jax.cli import main
from vital_jax.models.qwen2_5_vl import export_pretrained


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, model, tok):
    d = tmp_path_factory.mktemp("ckpt")
    cfg, params = model
    export_pretrained(cfg, params, d)
    tok.save(d)
    return str(d)


def test_infer_prints_transcript(ckpt, videos, capsys):
    rc = main(["infer", "--ckpt", ckpt, "--video", videos["a"], "--question", "What colour is the ball?",
               "--max-new-tokens", "12", "--max-turns", "2", "--cache-length", "1024", "--max-pixels", "3136",
               "--max-frames", "8"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "question: What colour is the ball?" in out and "--- assistant (turn 1) ---" in out
    assert "=== end: max_new_tokens (truncated)" in out


@pytest.mark.parametrize("bad,msg", [
    (["--video", "/no/such.mp4"], "no such file"),
    (["--ckpt", "/no/such/dir"], "not a directory"),
    (["--question", "  "], "empty"),
])
def test_infer_bad_input_exits_nonzero(ckpt, videos, capsys, bad, msg):
    args = {"--ckpt": ckpt, "--video": videos["a"], "--question": "q?"}
    args.update(dict(zip(bad[::2], bad[1::2])))
    rc = main(["infer", *[x for kv in args.items() for x in kv]])
    assert rc == 2 and msg in capsys.readouterr().err


def test_infer_unreadable_video_exits_nonzero(ckpt, videos, capsys):
    rc = main(["infer", "--ckpt", ckpt, "--video", videos["broken"], "--question", "q?", "--cache-length", "512"])
    captured = capsys.readouterr()
    assert rc == 2 and "VideoUnreadable" in captured.err and "=== end: video_error" in captured.out


def test_convert_then_infer_and_export_keep_the_tokenizer(ckpt, videos, tmp_path, capsys):
    """One checkpoint notion: `vital convert` of an HF directory (with its tokenizer and settings)
    gives a vital checkpoint that `vital infer` reads as it reads the HF directory (same
    transcript), and `vital export` of it is again a complete HF directory."""
    import json

    from vital_jax.config.run_config import VISION_SETTINGS_FILE

    import shutil

    shutil.copytree(ckpt, tmp_path / "hf")
    (tmp_path / "hf" / VISION_SETTINGS_FILE).write_text(json.dumps({"vision": {"max_frames": 8, "max_pixels": 3136,
                                                                               "min_pixels": 3136}}))
    assert main(["convert", "--hf", str(tmp_path / "hf"), "--out", str(tmp_path / "vital")]) == 0
    assert "tokenizer.json, vital_settings.json" in capsys.readouterr().out
    assert (tmp_path / "vital" / "params").is_dir()
    q = ["--video", videos["a"], "--question", "What colour is the ball?", "--max-new-tokens", "12",
         "--max-turns", "2", "--cache-length", "1024"]
    outs = []
    for d in ("hf", "vital"):
        assert main(["infer", "--ckpt", str(tmp_path / d), *q]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] and "--- assistant (turn 1) ---" in outs[0]
    assert main(["export", "--ckpt", str(tmp_path / "vital"), "--out", str(tmp_path / "hf2")]) == 0
    capsys.readouterr()
    assert (tmp_path / "hf2" / "tokenizer.json").is_file() and (tmp_path / "hf2" / VISION_SETTINGS_FILE).is_file()
    assert main(["infer", "--ckpt", str(tmp_path / "hf2"), *q]) == 0
    assert capsys.readouterr().out == outs[0]
