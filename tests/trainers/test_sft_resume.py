"""SFT preemption and resume on the synthetic suite: SIGTERM mid-run checkpoints and returns, the
rerun continues exactly like an uninterrupted run (same batches, losses and weights); an
unreadable latest checkpoint falls back to the previous step with a warning (here restored onto
another mesh), and a half-written (temporary) Orbax step is never picked up."""

import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from vital_jax.data.synthetic import SynthConfig, generate
from vital_jax.config.run_config import load_config
from vital_jax.runs.metrics import read_jsonl
from vital_jax.trainers.sft import run_sft

from vital_jax.testing import LogLines

STEPS = 4
SYNTH = SynthConfig(num=12, seed=11, min_seconds=20, max_seconds=24, size=64, eval_fraction=0.25)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft_suite")
    generate(root, SYNTH)
    return root


def _cfg(root, out, *extra):
    return load_config(None, [
        f"data.root={root}", f"out_dir={out}", f"sft.steps={STEPS}", "sft.batch_size=4",
        "sft.micro_batches=2", "checkpoint.every=2", "checkpoint.keep=3",
        # rows split 2 ways, weights 4 ways: every device has real work, the program stays small
        "mesh.data=2", "mesh.fsdp=1", "mesh.tensor=4",
        # one token bucket and one vision bucket: one compiled step per run
        "data.token_buckets=[640]", "data.vision_buckets=[128]",
        "data.vision.max_frames=8", "data.vision.clip_max_frames=4",
        "sft.optim.learning_rate=3e-3", "sft.optim.warmup_steps=1",
        *extra])


def _sigterm_after(step):
    """A log hook that sends this process SIGTERM once step ``step`` is logged, as a preemption
    would (run_sft's StopFlag turns it into checkpoint + return)."""
    def on_line(msg):
        if msg.startswith(f"sft step {step}/"):
            os.kill(os.getpid(), signal.SIGTERM)
    return on_line


def _losses(out):
    """step -> loss from metrics.jsonl (the last line of a step wins)."""
    return {r["step"]: r["sft/loss"] for r in read_jsonl(out)}


def _final_weights(out):
    from safetensors.numpy import load_file

    files = sorted((Path(out) / "final").glob("*.safetensors"))
    assert files, f"no exported weights in {out}/final"
    out = {}
    for f in files:
        out.update(load_file(f))
    return out


def _assert_weights(a, b, atol):
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=atol, rtol=0, err_msg=k)


@pytest.fixture(scope="module")
def uninterrupted(suite, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft_full")
    res = run_sft(_cfg(suite, out))
    assert res["stopped"] is None and res["steps"] == STEPS
    return out


def test_sigterm_then_resume_continues_exactly(suite, uninterrupted, tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(suite, out)
    prev = signal.getsignal(signal.SIGTERM)

    with LogLines(on_line=_sigterm_after(2)):
        first = run_sft(cfg)
    assert first["stopped"] == "SIGTERM" and first["steps"] == 2 and first["final"] is None
    assert signal.getsignal(signal.SIGTERM) is prev          # the handler is given back
    assert sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == [2]
    assert not (out / "final").exists()
    assert sorted(_losses(out)) == [1, 2]

    with LogLines() as log:
        second = run_sft(cfg)
    assert second["stopped"] is None and second["steps"] == STEPS
    assert any(line.startswith("resumed from") and line.endswith("/2") for line in log.lines), log.lines
    assert not any(line.startswith(("sft step 1/", "sft step 2/")) for line in log.lines)

    full, resumed = _losses(uninterrupted), _losses(out)
    assert sorted(resumed) == sorted(full) == list(range(1, STEPS + 1))
    # same data order and the same state: identical losses after the resume (and before it)
    np.testing.assert_allclose([resumed[s] for s in resumed], [full[s] for s in resumed], rtol=1e-6, atol=0)
    # the curves saved in the checkpoint's host state carry over (the report plots all steps)
    assert [s for s, _ in second["curves"]["loss"]] == list(range(1, STEPS + 1))
    _assert_weights(_final_weights(out), _final_weights(uninterrupted), atol=1e-6)
    # training did something (the comparison is not between two untouched models)
    assert full[STEPS] != full[1]


def test_corrupt_latest_falls_back_and_tmp_step_is_ignored(suite, uninterrupted, tmp_path):
    out = tmp_path / "fallback"
    # the run directory as the interrupted run left it: checkpoints 2 and 4, metrics of steps 1-4
    shutil.copytree(uninterrupted / "checkpoints", out / "checkpoints")
    shutil.copy(uninterrupted / "metrics.jsonl", out / "metrics.jsonl")
    ck = out / "checkpoints"
    assert sorted(int(p.name) for p in ck.iterdir() if p.name.isdigit()) == [2, 4]
    # a half-written later step: a complete copy, but still under Orbax's temporary name
    shutil.copytree(ck / "4", ck / "6.orbax-checkpoint-tmp-1700000000")
    # the latest finalized step loses its array data (a disk error / truncated files)
    data = [p for p in (ck / "4" / "state").rglob("*") if p.is_file() and p.stat().st_size > 0
            and not p.name.startswith("_") and p.suffix != ".json"]
    assert data, sorted((ck / "4" / "state").rglob("*"))
    for p in data:
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])

    # restored onto another mesh (2, 2, 2) than the one that saved it (2, 1, 4)
    cfg = _cfg(suite, out, "mesh.fsdp=2", "mesh.tensor=2")
    with LogLines() as log, pytest.warns(UserWarning, match=r"step 4 is unreadable"):
        res = run_sft(cfg)
    assert res["stopped"] is None and res["steps"] == STEPS
    assert any(line.startswith("resumed from") and line.endswith("/2") for line in log.lines), log.lines
    resumed, full = _losses(out), _losses(uninterrupted)
    # trained from 2 again (not from the tmp step 6 or 4); the old lines of steps 3 and 4 were
    # dropped on resume, so metrics.jsonl has one line per step
    assert [r["step"] for r in read_jsonl(out)] == [1, 2, 3, 4]
    assert sum(line.startswith("sft step ") for line in log.lines) == 2
    # the unreadable step was moved aside (kept), and step 4 saved anew by this run
    assert (ck / "4.unreadable").is_dir()
    assert sorted(int(p.name) for p in ck.iterdir() if p.name.isdigit()) == [2, 4]
    np.testing.assert_allclose([resumed[3], resumed[4]], [full[3], full[4]], rtol=2e-5)
    _assert_weights(_final_weights(out), _final_weights(uninterrupted), atol=2e-5)


def test_export_carries_vision_settings_and_eval_infer_use_them(suite, tmp_path, monkeypatch, capsys):
    """A run with textual timestamps writes data.vision into final/vital_settings.json; `vital
    infer` and `vital eval` on that checkpoint render and sample as it was trained (flags given
    override one setting each); a checkpoint without the file keeps the commands' defaults."""
    import json

    import vital_jax.rollout.contract as contract
    import vital_jax.eval.runner as runner
    from vital_jax.rollout.tool_loop import Episode
    from vital_jax.cli import main
    from vital_jax.config.run_config import VISION_SETTINGS_FILE, VisionInputConfig, vision_settings

    out = tmp_path / "ts"
    res = run_sft(_cfg(suite, out, "sft.steps=1", "checkpoint.every=0", "data.token_buckets=[768]",
                       "data.vision.text_timestamps=true", "data.vision.prompt=compact"))
    # (the timestamps' text makes rows longer: the bigger token bucket)
    final = Path(res["final"])
    want = VisionInputConfig(max_frames=8, clip_max_frames=4, text_timestamps=True, prompt="compact")
    assert json.loads((final / VISION_SETTINGS_FILE).read_text())["vision"]["text_timestamps"] is True
    assert vision_settings(final) == want

    seen = []

    def fake_episodes(sampler, renderer, requests, config, **kw):
        assert renderer.prompts.name == config.prompts
        seen.append(config)
        return [Episode(requests[0], end_reason="answer")]

    monkeypatch.setattr(contract, "run_episodes", fake_episodes)
    video = str(next((suite / "videos").glob("*.mp4")))
    assert main(["infer", "--ckpt", str(final), "--video", video, "--question", "q?", "--cache-length", "512"]) == 0
    assert main(["infer", "--ckpt", str(final), "--video", video, "--question", "q?", "--cache-length", "512",
                 "--no-text-timestamps", "--max-frames", "4"]) == 0
    assert seen[0].text_timestamps and seen[0].video_kwargs == {"max_frames": 8, "min_pixels": 3136, "max_pixels": 3136}
    assert seen[0].prompts == seen[1].prompts == "compact"
    assert seen[0].clip_kwargs == {"max_frames": 4, "min_pixels": 3136, "max_pixels": 3136, "timestamps": False}
    assert not seen[1].text_timestamps and seen[1].video_kwargs["max_frames"] == 4

    calls = []

    def fake_evaluate(*args, **kw):
        calls.append(kw)
        raise runner.EvalSettingsError("stop here")

    monkeypatch.setattr(runner, "evaluate", fake_evaluate)
    eval_args = ["eval", "--benchmark", "synthetic", "--data", str(suite / "eval.jsonl"), "--out", str(tmp_path / "e")]
    assert main([*eval_args, "--ckpt", str(final)]) == 2
    assert calls[0]["agent_config"].text_timestamps and calls[0]["video_kwargs"]["max_frames"] == 8
    assert calls[0]["agent_config"].prompts == "compact"
    assert calls[0]["clip_kwargs"]["max_frames"] == 4
    # without the file: VITAL's evaluation defaults, textual timestamps off
    (final / VISION_SETTINGS_FILE).unlink()
    assert vision_settings(final) == VisionInputConfig() and vision_settings(final, default=None) is None
    assert main([*eval_args, "--ckpt", str(final)]) == 2
    assert not calls[1]["agent_config"].text_timestamps and calls[1]["agent_config"].prompts == "vital"
    assert calls[1]["video_kwargs"] == {"max_frames": 256, "max_pixels": 384 * 384, "min_pixels": 128 * 28 * 28}
    assert calls[1]["clip_kwargs"] == {}
    # a file that cannot be used names itself and the key
    (final / VISION_SETTINGS_FILE).write_text(json.dumps({"vision": {"frames": 3}}))
    assert main([*eval_args, "--ckpt", str(final)]) == 2
    assert "vital_settings.json" in capsys.readouterr().err
