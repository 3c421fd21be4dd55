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
