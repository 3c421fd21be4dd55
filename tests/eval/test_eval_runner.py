"""`vital eval` / `evaluate()` end to end: a tiny random model on a few synthetic videos.

A random model answers garbage, so these tests check structure (one line per sample with the
documented fields, resume without repeats, prompts with/without the tools block), that the
numbers are finite and equal to `vital score` on the same predictions, and the error paths.
"""

import json
import math

import numpy as np

import pytest

from vital_jax.rollout.tool_loop import END_REASONS, AgentConfig
from vital_jax.cli import main
from vital_jax.data.synthetic import SynthConfig, generate, text_corpus
from vital_jax.eval import runner
from vital_jax.trainers.common import tiny_config_for
from vital_jax.rollout import contract
from vital_jax.eval.benchmarks import Sample, load_benchmark
from vital_jax.models.qwen2_5_vl import export_pretrained, init_params
from vital_jax.prompt import templates, train_small_tokenizer
from vital_jax.rollout import SamplingOptions

# 32x32 videos upscaled to 56x56 -> 4 merged tokens per temporal patch; <= 8 frames -> 16 tokens
VIDEO_KW = {"min_pixels": 56 * 56, "max_pixels": 56 * 56, "max_frames": 8}
CLIP_KW = {"min_pixels": 56 * 56, "max_pixels": 56 * 56, "max_frames": 8}
AGENT = AgentConfig(sampling=SamplingOptions(temperature=0.0, max_new_tokens=40), max_turns=2)
FIELDS = {"id", "response", "answer", "tool_calls", "end_reason", "truncated", "error", "prompt", "transcript",
          "timing", "use_tool", "tokens", "generated_tokens"}
TOOL_TURN = ('<think>look</think> <tool_call>\n{"name": "get_video_clip_frame", '
             '"arguments": {"start_time": 2.0, "end_time": 6.0}}\n</tool_call>')
ANSWER_TURN = "<think>seen</think> <answer>B</answer>"


@pytest.fixture(scope="module")
def tok():
    corpus = [templates.DEFAULT_SYSTEM + templates.tools_block([templates.CLIP_TOOL_SCHEMA]),
              templates.user_text("q", duration=20.0, use_tool=True),
              templates.user_text("q", duration=20.0, use_tool=False), TOOL_TURN, ANSWER_TURN,
              "Error: Video clip from 2.00 to 6.00 seconds."]
    corpus += text_corpus(num=6, min_seconds=20, max_seconds=30)
    return train_small_tokenizer(corpus * 3, vocab_size=800)


@pytest.fixture(scope="module")
def model(tok):
    cfg = tiny_config_for(tok)
    _, params = init_params(cfg, seed=0)
    return cfg, params


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """Three held-out synthetic videos of 20-30 s (all eval): 2-3 samples each."""
    root = tmp_path_factory.mktemp("synth")
    generate(root, SynthConfig(num=3, min_seconds=20, max_seconds=30, size=32, eval_fraction=1.0))
    return root


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, model, tok):
    d = tmp_path_factory.mktemp("ckpt")
    export_pretrained(*model, d)
    tok.save(d)
    return str(d)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _finite(tree):
    if isinstance(tree, dict):
        return all(_finite(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return all(_finite(v) for v in tree)
    return not isinstance(tree, float) or math.isfinite(tree)


def test_evaluate_end_to_end_resumes_and_matches_score(tmp_path, model, tok, suite, monkeypatch, capsys):
    samples = load_benchmark("synthetic", suite / "eval.jsonl")
    n = len(samples)
    assert n >= 6
    calls = []   # (sampler, number of requests) per run_episodes call
    scripted = {"on": True}
    real = contract.run_episodes

    def counting(sampler, renderer, requests, config, **kw):
        calls.append((sampler, len(requests)))
        if scripted["on"]:  # a policy that calls the tool, then answers: exercises the tool path
            kw["script"] = lambda row, turn: TOOL_TURN if turn == 0 else ANSWER_TURN
        return real(sampler, renderer, requests, config, **kw)

    monkeypatch.setattr(contract, "run_episodes", counting)
    out = tmp_path / "run"
    kw = {"out_dir": out, "batch_size": 2, "video_root": suite, "agent_config": AGENT, "video_kwargs": VIDEO_KW,
              "clip_kwargs": CLIP_KW, "sampler_config": {"max_forced_tokens": 96}}
    cfg, params = model
    first = runner.evaluate(cfg, params, tok, "synthetic", samples, limit=3, **kw)
    assert first["samples"] == 3 and first["predicted"] == 3
    # two batches of the same sampler: 2 rows, then 1 row padded (never a smaller sampler)
    assert [c[1] for c in calls] == [2, 1] and calls[0][0] is calls[1][0]
    assert calls[0][0].config.batch_size == 2
    rows = _lines(out / runner.PREDICTIONS_FILE)
    assert [r["id"] for r in rows] == [s.id for s in samples[:3]]
    for r in rows:
        assert r["answer"] == "B" and r["end_reason"] == "answer"
        assert r["tool_calls"] == [{"name": "get_video_clip_frame", "start_time": 2.0, "end_time": 6.0, "ok": True,
                                    "code": "ok", "message": "", "turn": 0}]
        assert [t["role"] for t in r["transcript"]] == ["assistant", "tool", "assistant"]
        assert "Video clip from 2.00 to 6.00 seconds." in r["transcript"][1]["text"]
        assert "<|video_pad|>×" in r["transcript"][1]["text"] and "<|video_pad|><|video_pad|>" not in r["prompt"]
    # a crash mid-write: half a line, no newline
    with (out / runner.PREDICTIONS_FILE).open("a") as f:
        f.write('{"id": "' + samples[3].id + '", "respo')

    calls.clear()
    scripted["on"] = False
    final = runner.evaluate(cfg, params, tok, "synthetic", samples, **kw)
    assert sum(c[1] for c in calls) == n - 3, "finished samples ran again"
    assert len({id(c[0]) for c in calls}) == 1 and all(c[0].config.batch_size == 2 for c in calls)
    rows = _lines(out / runner.PREDICTIONS_FILE)
    assert sorted(r["id"] for r in rows) == sorted(s.id for s in samples)   # each id exactly once
    for r in rows:
        assert FIELDS <= set(r), FIELDS - set(r)
        assert r["end_reason"] in END_REASONS and r["use_tool"] is True
        assert "<tools>" in r["prompt"] and "<|video_pad|>×" in r["prompt"]
        assert r["response"] == "".join(t["text"] for t in r["transcript"] if t["role"] == "assistant")
        assert r["timing"]["total_s"] > 0
    assert final["samples"] == final["predicted"] == n and final["missing"] == 0
    assert final["status"]["ok"] >= 1 and final["tools"]["mean_ok_calls"] == pytest.approx(3 / n)
    assert _finite(final) and set(final["metrics"]) == {"accuracy", "miou", "score"}
    assert json.loads((out / runner.METRICS_FILE).read_text()) == json.loads(json.dumps(final))

    # `vital score` on the same predictions file: the same numbers
    capsys.readouterr()
    rc = main(["score", "--benchmark", "synthetic", "--data", str(suite / "eval.jsonl"),
               "--predictions", str(out / runner.PREDICTIONS_FILE), "--out", str(tmp_path / "score.json")])
    assert rc == 0
    scored = json.loads((tmp_path / "score.json").read_text())
    for key in ("metrics", "per_task", "per_category", "status", "tools", "timing", "samples", "predicted"):
        assert scored[key] == final[key], key

    # resuming into the same folder with other settings would mix two runs: refused
    with pytest.raises(runner.EvalSettingsError, match="use_tools"):
        runner.evaluate(cfg, params, tok, "synthetic", samples, **{**kw, "sampler_config": None}, use_tools=False)


def test_cli_no_tools(tmp_path, ckpt, suite, capsys):
    out = tmp_path / "notools"
    rc = main(["eval", "--ckpt", ckpt, "--benchmark", "synthetic", "--data", str(suite / "eval.jsonl"),
               "--video-root", str(suite), "--no-tools", "--frames", "8", "--max-pixels", "3136",
               "--clip-max-pixels", "3136", "--clip-max-frames", "8", "--max-new-tokens", "16", "--max-turns", "2",
               "--batch-size", "4", "--limit", "4", "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    rows = _lines(out / "predictions.jsonl")
    assert len(rows) == 4
    for r in rows:
        assert r["use_tool"] is False
        assert "<tools>" not in r["prompt"] and "get_video_clip_frame" not in r["prompt"]
        assert "<|video_pad|>×" in r["prompt"]   # the question video is there
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["samples"] == 4 and _finite(metrics["metrics"])
    assert json.loads((out / "run.json").read_text())["use_tools"] is False
    assert "synthetic: 4 samples, 4 predicted" in printed


def test_sampler_too_small_gives_error_lines_not_a_crash(tmp_path, model, tok, suite):
    samples = load_benchmark("synthetic", suite / "eval.jsonl")
    res = runner.evaluate(*model, tok, "synthetic", samples, out_dir=tmp_path, limit=2, batch_size=2,
                          video_root=suite, agent_config=AGENT, video_kwargs=VIDEO_KW, clip_kwargs=CLIP_KW,
                          sampler_config={"max_visual_tokens": 4, "vision_buckets": (16,)})
    rows = _lines(tmp_path / runner.PREDICTIONS_FILE)
    assert [r["end_reason"] for r in rows] == ["sampler_error"] * 2
    assert all("max_visual_tokens" in r["error"] for r in rows)
    assert res["predicted"] == 2 and res["status"]["no_answer"] == 2


@pytest.mark.parametrize("case", ["no_dir", "no_config", "bad_config", "benchmark", "no_data", "bad_data"])
def test_cli_errors_exit_2(tmp_path, suite, capsys, case):
    ckpt, bench, data = str(tmp_path / "nope"), "synthetic", str(suite / "eval.jsonl")
    if case in ("no_config", "bad_config"):
        ckpt = str(tmp_path / "ck")
        (tmp_path / "ck").mkdir()
        if case == "bad_config":
            (tmp_path / "ck" / "config.json").write_text("{}")
    if case == "benchmark":
        bench = "charades"
    if case == "no_data":
        data = str(tmp_path / "missing.jsonl")
    if case == "bad_data":
        data = str(tmp_path / "bad.json")
        (tmp_path / "bad.json").write_text('[{"foo": 1}]')
    rc = main(["eval", "--ckpt", ckpt, "--benchmark", bench, "--data", data, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("vital eval: error:") and len(err.strip().splitlines()) >= 1
    expect = {"no_dir": [ckpt, "not a directory"], "no_config": [ckpt, "no config.json"], "bad_config": [ckpt],
              "benchmark": ["'charades'", "charades_sta", "synthetic"], "no_data": [data, "no such file"],
              "bad_data": [data]}[case]
    for part in expect:
        assert part in err, (part, err)
    assert not (tmp_path / "o" / "predictions.jsonl").exists()


def test_question_text_and_default_shapes():
    s = Sample(id="1", task="multiple_choice", video=None, question="Which?", options=("A. red", "B. blue"), answer="A")
    assert runner.question_text(s) == "Which?\nA. red\nB. blue"
    inline = Sample(id="2", task="multiple_choice", video=None, question="Which?\nA. red\nB. blue",
                    options=("A. red", "B. blue"), answer="A")
    assert runner.question_text(inline) == inline.question
    bare = Sample(id="3", task="multiple_choice", video=None, question="Who?", options=("the man", "the dog"), answer="B")
    assert runner.question_text(bare) == "Who?\nA. the man\nB. the dog"

    b = [contract.Budget(prompt=300, visual=160, clip=200, observation=230),
         contract.Budget(prompt=700, visual=600, clip=100, observation=130)]
    sc = contract.size_sampler(b, batch_size=4, max_turns=3, max_new_tokens=100)
    assert sc.cache_length >= max(300 + 300 + 2 * 231, 700 + 300 + 2 * 131) and sc.cache_length % 64 == 0
    assert sc.chunk_buckets == (32, 128, 512, 1024)
    assert sc.max_visual_tokens >= 4 * 600 and sc.vision_buckets[-1] == 4 * sc.max_visual_tokens
    assert all(v % 4 == 0 for v in sc.vision_buckets) and len(sc.vision_buckets) == 4
    assert sc.batch_size == 4 and sc.decode_steps == 32


def test_blind_control_blanks_every_frame_the_model_sees(tmp_path, model, tok, suite, monkeypatch):
    """evaluate(blind=True): the question video and the tool's clip reach the model as one constant
    (mid-grey) patch vector, with the shapes of the real ones; run.json records it."""
    import numpy as np

    from vital_jax.video.patchify import normalize, patchify

    samples = load_benchmark("synthetic", suite / "eval.jsonl")[:2]
    seen = []
    real = contract.run_episodes

    def spy(sampler, renderer, requests, config, **kw):
        kw["script"] = lambda row, turn: TOOL_TURN if turn == 0 else ANSWER_TURN   # forces one clip per sample
        eps = real(sampler, renderer, requests, config, **kw)
        seen.append(eps)
        return eps

    monkeypatch.setattr(contract, "run_episodes", spy)
    cfg, params = model
    kw = {"batch_size": 2, "video_root": suite, "agent_config": AGENT, "video_kwargs": VIDEO_KW,
          "clip_kwargs": CLIP_KW, "sampler_config": {"max_forced_tokens": 96}}
    runner.evaluate(cfg, params, tok, "synthetic", samples, out_dir=tmp_path / "seeing", **kw)
    runner.evaluate(cfg, params, tok, "synthetic", samples, out_dir=tmp_path / "blind", blind=True, **kw)
    seeing, blind = seen
    grey, _ = patchify(normalize(np.full((2, 28, 28, 3), runner.BLANK_LEVEL, np.uint8)))
    for a, b in zip(seeing, blind):
        assert len(b.visuals) == len(a.visuals) == 2            # question video + one clip
        for va, vb in zip(a.visuals, b.visuals):
            pa, pb = np.asarray(va.pixel_values), np.asarray(vb.pixel_values)
            assert pa.shape == pb.shape and np.array_equal(va.grid_thw, vb.grid_thw)
            assert np.ptp(pa, axis=0).max() > 0.1                   # the real frames vary
            np.testing.assert_array_equal(pb, np.broadcast_to(grey[0], pb.shape))
    assert json.loads((tmp_path / "blind" / runner.RUN_FILE).read_text())["blind"] is True
    assert "blind" not in json.loads((tmp_path / "seeing" / runner.RUN_FILE).read_text())


def test_frames_band_the_tower_and_oom_is_one_line(tmp_path, ckpt, suite, capsys, monkeypatch):
    """The sampler's tower attends within frames banded by the largest frame the inputs can show
    (56x56 frames: 16 patches), never [N, N] over a batch; running out of device memory is one
    line naming the settings to lower, exit status 2, and no traceback."""
    import jax

    seen = []
    real_sampler = contract.Sampler

    def spy(cfg, *a, **k):
        seen.append(cfg.runtime.vision_frame_block)
        return real_sampler(cfg, *a, **k)

    def oom(*a, **k):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 954499711632 bytes.")

    monkeypatch.setattr(contract, "Sampler", spy)
    monkeypatch.setattr(contract, "run_episodes", oom)
    rc = main(["eval", "--ckpt", ckpt, "--benchmark", "synthetic", "--data", str(suite / "eval.jsonl"),
               "--video-root", str(suite), "--frames", "8", "--max-pixels", "3136", "--clip-max-pixels", "3136",
               "--clip-max-frames", "8", "--max-new-tokens", "16", "--batch-size", "4", "--limit", "4",
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert seen == [16]
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "out of device memory" in err
    assert "--batch-size" in err and "--max-pixels" in err and "Traceback" not in err


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_blind_clip_is_rebuilt_in_the_models_patch_layout(family):
    """The blanked clip keeps the clip's grid in the model family's patches (Qwen3-VL: 16 px,
    mean = std = 0.5): one constant patch row, the shape of the clip it replaces."""
    from vital_jax.models.families import family_module
    from vital_jax.rollout.tools import ToolContext, ToolResult
    from vital_jax.video.patchify import normalize, patchify
    from vital_jax.video.pipeline import VisualInput

    pkg = family_module(family)
    proc = pkg.vision_processing(pkg.ModelConfig.tiny())
    side = 2 * proc.factor
    frames = np.random.default_rng(0).integers(0, 255, (4, side, side, 3), dtype=np.uint8)
    pix, grid = patchify(normalize(frames, proc), patch_size=proc.patch_size)
    clip = VisualInput(pix, grid, 1.0, "video", np.arange(4) * 0.5, np.arange(4))
    out = runner._blank_clip(ToolResult(visual=clip, start=0.0, end=2.0), ToolContext(None, 2.0, {"processing": proc}))
    blank = out.visual.pixel_values
    assert blank.shape == pix.shape == (2 * 4 * 4, 3 * 2 * proc.patch_size ** 2)
    assert np.allclose(blank, blank[0]) and not np.allclose(pix, pix[0])
