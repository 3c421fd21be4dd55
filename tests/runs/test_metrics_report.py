"""MetricsWriter (JSONL + TensorBoard events read back with TensorBoard's own reader), the
progress line, and the run report (JSON, Markdown, PNG plots)."""

from __future__ import annotations

import io
import json
import math
import os
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from vital_jax.runs.metrics import MetricsWriter, progress_bar, read_jsonl, show_progress
from vital_jax.runs.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _strict_json(line: str):
    # Python's json accepts NaN/Infinity tokens; real JSON (and other readers) do not.
    def bad(token):
        raise ValueError(f"non-JSON token {token}")

    return json.loads(line, parse_constant=bad)


def _event_files(log_dir):
    return sorted(
        os.path.join(log_dir, f) for f in os.listdir(log_dir) if "tfevents" in f
    )


def _scalars(path):
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
    acc.Reload()
    return acc, {
        tag: [(e.step, e.value) for e in acc.Scalars(tag)]
        for tag in acc.Tags()["scalars"]
    }


# ------------------------------------------------------------------------------------------
# MetricsWriter
# ------------------------------------------------------------------------------------------


def test_jsonl_round_trip_with_nonfinite_and_array_scalars(tmp_path):
    out = io.StringIO()
    with MetricsWriter(tmp_path, tensorboard=False, process_index=0, stream=out) as w:
        w.write(
            1,
            {
                "loss": 1.5,
                "reward": np.float32(0.25),
                "kl": jnp.asarray(0.125),
                "tokens": np.int64(1234),
                "skipped": True,
                "bad": float("nan"),
                "big": float("inf"),
                "neg": -float("inf"),
                "vec1": np.array([2.0]),
            },
            prefix="train",
        )
        w.write(2, {"accuracy": 0.5}, prefix="eval/")
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    first = _strict_json(lines[0])
    assert first["step"] == 1 and isinstance(first["time"], float)
    assert first["train/bad"] == "nan" and first["train/big"] == "inf"
    assert first["train/neg"] == "-inf"
    assert first["train/tokens"] == 1234 and isinstance(first["train/tokens"], int)
    assert first["train/skipped"] == 1
    assert _strict_json(lines[1])["eval/accuracy"] == 0.5

    rows = read_jsonl(tmp_path)
    assert rows[0]["train/loss"] == 1.5
    assert rows[0]["train/reward"] == 0.25
    assert rows[0]["train/kl"] == 0.125
    assert rows[0]["train/vec1"] == 2.0
    assert math.isnan(rows[0]["train/bad"])
    assert rows[0]["train/big"] == math.inf and rows[0]["train/neg"] == -math.inf
    # console=True prints one line per write
    printed = out.getvalue().splitlines()
    assert len(printed) == 2 and printed[1] == "step 2 | eval/accuracy 0.50"


def test_bad_metric_values_are_rejected(tmp_path):
    with MetricsWriter(
        tmp_path, tensorboard=False, console=False, process_index=0
    ) as w:
        with pytest.raises(ValueError, match="scalar"):
            w.write(0, {"v": np.zeros(3)})
        with pytest.raises(TypeError, match="number"):
            w.write(0, {"s": "hello"})
        with pytest.raises(ValueError, match="reserved"):
            w.write(0, {"step": 1})


def test_event_file_read_by_tensorboard(tmp_path):
    with MetricsWriter(tmp_path, jsonl=False, console=False, process_index=0) as w:
        for step in range(5):
            w.write(
                step * 10,
                {
                    "loss": 2.0 - 0.25 * step,
                    "reward": jnp.float32(0.1 * step),
                    "n": step,
                },
                prefix="train",
            )
        w.write(50, {"nan": float("nan"), "huge": 1e300})
    (path,) = _event_files(tmp_path)
    assert re.fullmatch(r"events\.out\.tfevents\.\d{10}\..+", os.path.basename(path))

    events = list(event_file_loader.LegacyEventFileLoader(path).Load())
    assert events[0].file_version == "brain.Event:2"

    acc, scalars = _scalars(path)
    assert acc.file_version == 2.0
    assert sorted(scalars) == ["huge", "nan", "train/loss", "train/n", "train/reward"]
    assert [s for s, _ in scalars["train/loss"]] == [0, 10, 20, 30, 40]
    np.testing.assert_allclose(
        [v for _, v in scalars["train/loss"]], [2.0, 1.75, 1.5, 1.25, 1.0]
    )
    np.testing.assert_allclose(
        [v for _, v in scalars["train/reward"]], [0.0, 0.1, 0.2, 0.3, 0.4], rtol=1e-6
    )
    assert [v for _, v in scalars["train/n"]] == [0, 1, 2, 3, 4]
    assert math.isnan(scalars["nan"][0][1]) and scalars["nan"][0][0] == 50
    assert scalars["huge"][0][1] == math.inf  # beyond float32: inf, not a crash


def test_second_writer_appends(tmp_path):
    with MetricsWriter(tmp_path, console=False, process_index=0) as w:
        for step in range(3):
            w.write(step, {"loss": float(step)})
    # A crash mid-line must not glue the resumed run's first line onto the partial one.
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "lo')
    with MetricsWriter(tmp_path, console=False, process_index=0) as w:
        for step in range(3, 5):
            w.write(step, {"loss": float(step)})

    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [_strict_json(line)["step"] for line in lines] == [0, 1, 2, 3, 4]
    files = _event_files(tmp_path)
    assert len(files) == 2  # one event file per writer, even within the same second
    _, scalars = _scalars(tmp_path)
    assert [(s, v) for s, v in scalars["loss"]] == [(i, float(i)) for i in range(5)]


def test_drop_after_removes_rerun_steps_and_keeps_appending(tmp_path):
    w = MetricsWriter(tmp_path, tensorboard=False, console=False, process_index=0)
    for step in (1, 2, 3, 4):
        w.write(step, {"loss": float(step)})
    w.drop_after(2)                  # a resume from the step-2 checkpoint re-runs 3 and 4
    w.write(3, {"loss": 30.0})
    w.close()
    assert [(r["step"], r["loss"]) for r in read_jsonl(tmp_path)] == [(1, 1.0), (2, 2.0), (3, 30.0)]
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_nonzero_process_writes_nothing(tmp_path):
    log_dir = tmp_path / "run"
    out = io.StringIO()
    with MetricsWriter(log_dir, process_index=1, stream=out) as w:
        w.write(0, {"loss": 1.0})
        w.flush()
    assert not log_dir.exists()
    assert out.getvalue() == ""


# ------------------------------------------------------------------------------------------
# progress bar (tqdm)
# ------------------------------------------------------------------------------------------


def test_progress_bar_shows_steps_and_chosen_metrics():
    out = io.StringIO()
    bar = progress_bar(200, stream=out)
    labels = {"sft/loss": "loss", "rl/reward": "reward", "rl/accuracy": "acc"}
    show_progress(bar, 12, {"sft/loss": 1.234, "rl/accuracy": 0.3, "other": 9}, labels)
    show_progress(bar, 30, {"sft/loss": float("nan"), "rl/accuracy": 0.5}, labels)
    bar.refresh()
    assert bar.n == 30 and bar.total == 200
    line = out.getvalue().split("\r")[-1]
    assert "30/200" in line and "loss=nan" in line and "acc=0.50" in line
    assert "reward" not in line and "other" not in line          # missing and unchosen keys left out
    bar.close()
    assert out.getvalue().endswith("\n")

# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------


def _report():
    return {
        "title": "demo",
        "eval": {
            "sft": {
                "tools": {"accuracy": 0.3, "miou": 0.21, "score": 0.255},
                "no_tools": {"accuracy": 0.25, "miou": float("nan"), "score": 0.125},
            },
            "rl": {
                "tools": {"accuracy": np.float32(0.5), "miou": 0.4, "score": 0.45},
                # no_tools missing on purpose
            },
        },
        "timings": {"sft_s": 12.5, "rl_s": 315.0, "eval": {"total_s": float("inf")}},
        "settings": {
            "model": {"layers": 2, "hidden": 64},
            "rl": {"loss": "dgrpo", "G": 4},
        },
        "seed": 0,
    }


def test_write_report(tmp_path):
    curves = {
        "reward/train": [(s, 0.1 * s) for s in range(10)],
        "accuracy/train": [(s, 0.05 * s) for s in range(10)],
        "loss/sft": [(s, 2.0 / (s + 1)) for s in range(5)],
        "loss/rl": [(s, float("nan") if s == 7 else 0.5) for s in range(5, 10)],
    }
    report = _report()
    paths = write_report(tmp_path / "out", report, curves=curves)
    assert set(paths) == {
        "json",
        "markdown",
        "plot:reward",
        "plot:accuracy",
        "plot:loss",
    }
    for key, path in paths.items():
        assert os.path.isfile(path), key
    assert {os.path.basename(p) for k, p in paths.items() if k.startswith("plot:")} == {
        "reward.png",
        "accuracy.png",
        "loss.png",
    }
    for key in ("plot:reward", "plot:accuracy", "plot:loss"):
        data = Path(paths[key]).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000
    assert "curves" not in report  # the caller's dict is left alone

    with open(paths["json"]) as f:
        loaded = _strict_json(f.read())
    assert loaded["eval"]["sft"]["tools"] == {
        "accuracy": 0.3,
        "miou": 0.21,
        "score": 0.255,
    }
    assert loaded["eval"]["sft"]["no_tools"]["miou"] == "nan"
    assert loaded["eval"]["rl"]["tools"]["accuracy"] == 0.5
    assert loaded["timings"]["eval"]["total_s"] == "inf"
    assert loaded["curves"]["reward/train"][3] == [3, pytest.approx(0.3)]
    assert loaded["curves"]["loss/rl"] == [
        [5, 0.5],
        [6, 0.5],
        [7, "nan"],
        [8, 0.5],
        [9, 0.5],
    ]
    assert loaded["settings"]["rl"]["loss"] == "dgrpo"

    md = Path(paths["markdown"]).read_text()
    assert md.startswith("# demo")
    assert "| metric | sft · tools | sft · no_tools | rl · tools |" in md
    assert "| accuracy | 0.300 | 0.250 | 0.500 |" in md
    assert "| miou | 0.210 | n/a | 0.400 |" in md
    assert "| score | 0.255 | 0.125 | 0.450 |" in md
    assert "RL − SFT (tools), score: +0.195" in md
    assert "tools − no tools (sft), score: +0.130" in md
    assert "(rl), score" not in md  # rl has no no_tools entry
    for name in ("reward.png", "accuracy.png", "loss.png"):
        assert f"]({name})" in md
    assert "| sft_s | 12.5 s |" in md and "| rl_s | 5m 15s |" in md
    assert "| eval.total_s | n/a |" in md
    assert "| `rl.loss` | dgrpo |" in md and "| `model.layers` | 2 |" in md
    assert "| `seed` | 0 |" in md


def test_write_report_tolerates_missing_sections(tmp_path):
    paths = write_report(tmp_path, {"eval": {"rl": {"tools": {"score": float("nan")}}}})
    assert set(paths) == {"json", "markdown"}
    md = Path(paths["markdown"]).read_text()
    assert "| score | n/a |" in md
    paths = write_report(tmp_path / "empty", {}, curves={"reward": [(0, float("inf"))]})
    md = Path(paths["markdown"]).read_text()
    assert "No evaluation results." in md
    assert Path(paths["plot:reward"]).read_bytes()[:8] == PNG_MAGIC
    assert _strict_json(Path(paths["json"]).read_text())["curves"] == {
        "reward": [[0, "inf"]]
    }


def test_write_report_intervals_blind_and_paired(tmp_path):
    """Cells with n and intervals, the blind control as a last column, and the paired differences
    (top level = score) as a table that marks intervals excluding 0."""
    cell = {"accuracy": 0.5, "miou": 0.25, "score": 0.375, "n": 200,
            "ci": {"accuracy": [0.43, 0.57], "miou": [0.2, 0.3], "score": [0.33, 0.42]}}
    blind = {**cell, "score": 0.1, "ci": {**cell["ci"], "score": [0.07, 0.13]}}
    report = {"eval": {
        "sft": {"tools": cell, "no_tools": cell}, "rl": {"tools": cell}, "blind": blind,
        "paired": {"rl_minus_sft_tools": {"mean": 0.02, "ci": [-0.01, 0.05], "n": 200,
                                          "accuracy": {"mean": 0.03, "ci": [0.01, 0.06], "n": 120}},
                   "rl_tools_minus_blind": {"mean": 0.275, "ci": [0.22, 0.33], "n": 200}},
        "bootstrap": {"confidence": 0.95, "method": "percentile", "resamples": 2000, "seed": 0}}}
    paths = write_report(tmp_path, report)
    md = Path(paths["markdown"]).read_text()
    assert "| metric | sft · tools | sft · no_tools | rl · tools | rl · tools, blind |" in md
    assert "| score | 0.375 [0.330, 0.420] | 0.375 [0.330, 0.420] | 0.375 [0.330, 0.420] | 0.100 [0.070, 0.130] |" in md
    assert "| n | 200 | 200 | 200 | 200 |" in md
    assert "95 % percentile interval over samples (2000 resamples, seed 0)" in md
    assert "| RL − SFT (tools) | 200 | +0.020 [-0.010, +0.050] | +0.030 [+0.010, +0.060] * | n/a |" in md
    assert "| RL tools − blind | 200 | +0.275 [+0.220, +0.330] * | n/a | n/a |" in md
    assert "RL − SFT (tools), score:" not in md          # the point differences give way to the paired table
    loaded = _strict_json(Path(paths["json"]).read_text())
    assert loaded["eval"]["paired"]["rl_minus_sft_tools"]["ci"] == [-0.01, 0.05]
    assert loaded["eval"]["blind"]["n"] == 200
