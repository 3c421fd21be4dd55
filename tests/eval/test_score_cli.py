"""`vital score` end to end on a tiny `vital synth` eval file, predictions made here; the report."""

import json

import numpy as np
import pytest

from vital_jax.cli import main
from vital_jax.eval.benchmarks import load_benchmark
from vital_jax.eval.predictions import append_prediction, read_predictions
from vital_jax.eval.report import compare, compare_files


def ref_iou(p, g):
    inter = max(0.0, min(p[1], g[1]) - max(p[0], g[0]))
    union = max(p[1], g[1]) - min(p[0], g[0])
    return inter / union if union > 0 else 0.0


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    assert main(["synth", "--out", str(out), "--num", "6", "--min-seconds", "20", "--max-seconds", "22",
                 "--size", "32", "--eval-fraction", "0.5"]) == 0
    return out


def make_predictions(samples):
    """Alternate right and wrong answers per task; drop the last sample (missing).
    Returns (rows, expected per-sample {correct?, iou?})."""
    rows, expected = [], {}
    seen: dict[str, int] = {}
    for s in samples[:-1]:
        k = seen[s.category] = seen.get(s.category, -1) + 1
        right = k % 2 == 0
        exp = {}
        if s.task == "grounding":
            a, b = s.interval
            # right: exact; wrong: shifted by 2 s and written reversed (swapped back by the scorer)
            pred = (a, b) if right else (b + 2.0, a + 2.0)
            ans = f"({pred[0]:.2f}, {pred[1]:.2f})"
            exp["iou"] = ref_iou((min(pred), max(pred)), s.interval)
        elif s.task == "grounded_qa":
            letter = s.answer if right else ("A" if s.answer != "A" else "B")
            ans = f"{letter} ({s.interval[0]:.2f}, {s.interval[1] + 1.0:.2f})"
            exp["correct"] = float(right)
            exp["iou"] = ref_iou((s.interval[0], min(s.interval[1] + 1.0, s.duration)), s.interval)
        elif s.task == "multiple_choice":
            ans = s.answer if right else ("A" if s.answer != "A" else "B")
            exp["correct"] = float(right)
        else:  # counting
            ans = s.answer if right else str(int(s.answer) + 1)
            exp["correct"] = float(right)
        rows.append({"id": s.id, "response": f"<think>look</think> <answer>{ans}</answer>",
                     "tool_calls": [{"start_time": 1.0, "end_time": 5.0, "ok": True}] if right else [],
                     "timing": {"total_s": 0.5}})
        expected[s.id] = exp
    last = samples[-1]
    expected[last.id] = {"correct": 0.0} if last.task != "grounding" else {"iou": 0.0}
    if last.task == "grounded_qa":
        expected[last.id]["iou"] = 0.0
    return rows, expected


def test_vital_score_end_to_end(suite, tmp_path, capsys):
    data = suite / "eval.jsonl"
    samples = load_benchmark("synthetic", data)
    assert {s.category for s in samples} == {"grounding", "multiple_choice", "grounded_qa", "counting"}
    rows, expected = make_predictions(samples)
    preds = tmp_path / "preds.jsonl"
    with preds.open("w") as f:
        for r in rows:
            append_prediction(f, r)
        append_prediction(f, {"id": "not-a-sample", "answer": "A"})
    out = tmp_path / "m" / "metrics.json"
    assert main(["score", "--benchmark", "synthetic", "--data", str(data), "--predictions", str(preds),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())

    # reference: per task, then the report schema's accuracy / miou / score
    tasks = {}
    for s in samples:
        tasks.setdefault(s.category, []).append(expected[s.id])
    task_score = {}
    for t, exps in tasks.items():
        parts = []
        if "correct" in exps[0]:
            acc = np.mean([e["correct"] for e in exps])
            assert res["per_task"][t]["accuracy"] == pytest.approx(acc)
            parts.append(acc)
        if "iou" in exps[0]:
            miou = np.mean([e["iou"] for e in exps])
            assert res["per_task"][t]["miou"] == pytest.approx(miou)
            parts.append(miou)
        task_score[t] = np.mean(parts)
        assert res["per_task"][t]["n"] == len(exps)
    allexp = list(expected.values())
    assert res["metrics"]["accuracy"] == pytest.approx(np.mean([e["correct"] for e in allexp if "correct" in e]))
    assert res["metrics"]["miou"] == pytest.approx(np.mean([e["iou"] for e in allexp if "iou" in e]))
    assert res["metrics"]["score"] == pytest.approx(np.mean(list(task_score.values())))
    assert res["samples"] == len(samples) and res["missing"] == 1 and res["unknown_ids"] == 1
    assert res["status"]["missing"] == 1 and res["status"].get("reversed", 0) >= 1
    assert res["tools"]["with_calls"] == pytest.approx(sum(bool(r["tool_calls"]) for r in rows) / len(samples))
    assert res["timing"]["mean_s"] == pytest.approx(0.5)
    assert "1 missing" in printed and "score" in printed and f"{100 * res['metrics']['score']:6.2f}" in printed

    # perfect predictions score 1 everywhere; `vital score` is a pure function of the two files
    perfect = tmp_path / "perfect.jsonl"
    perfect.write_text("".join(json.dumps({"id": s.id, "answer": _gold_text(s)}) + "\n" for s in samples))
    out2 = tmp_path / "perfect.json"
    assert main(["score", "--benchmark", "synthetic", "--data", str(data), "--predictions", str(perfect),
                 "--out", str(out2)]) == 0
    res2 = json.loads(out2.read_text())
    assert res2["metrics"] == {"accuracy": 1.0, "miou": 1.0, "score": 1.0}

    table = compare_files({"sft": out, "rl": out2})
    lines = table.splitlines()
    assert lines[0] == "| metric | sft | rl | Δ (last − first) |"
    score_line = next(line for line in lines if line.startswith("| metrics.score |"))
    assert score_line.endswith(f"| {100 * res['metrics']['score']:.1f} | 100.0 | {100 * (1 - res['metrics']['score']):+.1f} |")
    assert any(line.startswith("| per_task.grounding.n | ") for line in lines)


def _gold_text(s):
    if s.task == "grounding":
        return f"({s.interval[0]}, {s.interval[1]})"
    if s.task == "grounded_qa":
        return f"{s.answer} ({s.interval[0]}, {s.interval[1]})"
    return s.answer


def test_vital_score_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"clip": 1}]))
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": "0", "answer": "A"}\n')
    assert main(["score", "--benchmark", "videomme", "--data", str(bad), "--predictions", str(preds)]) == 2
    err = capsys.readouterr().err
    assert "not a known videomme annotation layout" in err and "Traceback" not in err
    good = tmp_path / "g.json"
    good.write_text(json.dumps([{"question": "q", "options": ["A. x", "B. y"], "answer": "A"}]))
    preds.write_text('{"id": "0", "answer": "A"}\n{"answer": "B"}\n')
    assert main(["score", "--benchmark", "videomme", "--data", str(good), "--predictions", str(preds)]) == 2
    assert "line 2: expected an object with an 'id'" in capsys.readouterr().err


def test_read_predictions_resume_semantics(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"id": "a", "answer": "A"}\n{"id": "b", "answer": "B"}\n{"id": "a", "answer": "C"}\n{"id": "c", "ans')
    rows, counts = read_predictions(p)  # a torn last line (killed mid-write) is ignored
    assert rows["a"]["answer"] == "C" and set(rows) == {"a", "b"} and counts == {"lines": 3, "duplicates": 1}


def test_compare_handles_missing_metrics_and_counts():
    md = compare({"no tools": {"metrics": {"accuracy": 0.5, "miou": 0.25}, "samples": 10},
                  "tools": {"metrics": {"accuracy": 0.75}, "per_task": {"x": {"n": 4, "accuracy": 1.0}}}},
                 sections=None)
    rows = {line.split(" | ")[0][2:]: line for line in md.splitlines()[2:]}
    assert rows["metrics.accuracy"] == "| metrics.accuracy | 50.0 | 75.0 | +25.0 |"
    assert rows["metrics.miou"] == "| metrics.miou | 25.0 | – |  |"
    assert rows["samples"] == "| samples | 10 | – |  |"
    assert rows["per_task.x.n"] == "| per_task.x.n | – | 4 |  |"
