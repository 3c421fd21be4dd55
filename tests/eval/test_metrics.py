"""Metric functions against plain-NumPy/Python references written here, on hand-made sets."""

import numpy as np
import pytest

from vital_jax.eval import metrics as M
from vital_jax.eval.benchmarks import BENCHMARKS, Sample
from vital_jax.eval.scoring import score
from vital_jax.rl.rewards import parse_span


# ----------------------------------------------------------------- references (independent code)


def ref_iou(p, g):
    if p is None:
        return 0.0
    inter = max(0.0, min(p[1], g[1]) - max(p[0], g[0]))
    union = max(p[1], g[1]) - min(p[0], g[0])
    return inter / union if union > 0 else 0.0


def ref_iop(p, g):
    if p is None or p[1] - p[0] <= 0:
        return 0.0
    return max(0.0, min(p[1], g[1]) - max(p[0], g[0])) / (p[1] - p[0])


def ref_normalize(p, duration, swap=True):
    """Swap reversed, clip to [0, duration], nothing left → None."""
    if p is None:
        return None
    s, e = p
    if s > e:
        if not swap:
            return None
        s, e = e, s
    s, e = max(s, 0.0), min(e, duration)
    return (s, e) if e > s else None


def test_interval_iou_matches_reference_random():
    rng = np.random.default_rng(0)
    a = np.sort(rng.uniform(0, 60, (200, 2)), axis=1)
    b = np.sort(rng.uniform(0, 60, (200, 2)), axis=1)
    a[::17] = a[::17, :1]  # zero-length predictions
    got = M.interval_iou(a, b)
    want = np.array([ref_iou(tuple(p), tuple(g)) for p, g in zip(a, b)])
    np.testing.assert_allclose(got, want, atol=1e-12)
    np.testing.assert_allclose(M.interval_iop(a, b), [ref_iop(tuple(p), tuple(g)) for p, g in zip(a, b)], atol=1e-12)
    nan_rows = np.full((3, 2), np.nan)
    assert M.interval_iou(nan_rows, b[:3]).tolist() == [0.0, 0.0, 0.0]


def test_normalize_interval_cases():
    assert M.normalize_interval((12.0, 5.0), 30) == ((5.0, 12.0), "reversed")
    assert M.normalize_interval((12.0, 5.0), 30, reversed_policy="zero") == (None, "reversed")
    assert M.normalize_interval((-4.0, 10.0), 30) == ((0.0, 10.0), "clipped")
    assert M.normalize_interval((25.0, 40.0), 30) == ((25.0, 30.0), "clipped")
    assert M.normalize_interval((31.0, 40.0), 30) == (None, "outside")
    assert M.normalize_interval((-9.0, -1.0), 30) == (None, "outside")
    assert M.normalize_interval((7.0, 7.0), 30) == (None, "empty")
    assert M.normalize_interval((31.0, 40.0), None) == ((31.0, 40.0), "ok")  # no duration: no clipping
    assert M.normalize_interval(None, 30) == (None, "unparseable")


def test_read_interval_agrees_with_reward_parser_on_ordered_pairs():
    for text in ["(12.50, 15.00)", "from 3 to 9.5 seconds", "0:30 - 1:05", "B (2.0, 4.0)", "1, 2 then 5, 8"]:
        assert M.read_interval(text)[0] == parse_span(text)
    assert M.read_interval("[9, 3]") == ((9.0, 3.0), "ok")  # reversed: returned as written
    assert M.read_interval("no numbers") == (None, "unparseable")
    assert M.read_interval(None) == (None, "no_answer")


GT = [(5.0, 10.0), (0.0, 4.0), (20.0, 30.0), (10.0, 20.0), (2.0, 6.0), (8.0, 9.0), (1.0, 3.0), (15.0, 25.0), (0.0, 30.0)]
# (prediction row or None, the interval the answer names as written, or None)
PREDS = [
    ({"response": "<think>x</think> <answer>(5.0, 10.0)</answer>"}, (5.0, 10.0)),      # exact
    ({"response": "<think>x</think> <answer>[4, 0]</answer>"}, (4.0, 0.0)),            # reversed
    ({"response": "<answer>from 25 to 45 seconds</answer>"}, (25.0, 45.0)),              # partly outside
    ({"response": "<answer>(35.0, 50.0)</answer>"}, (35.0, 50.0)),                       # wholly outside
    ({"response": "<answer></answer>"}, None),                                            # empty answer
    ({"response": "the event is at 8 to 9"}, None),                                      # no answer tag
    ({"answer": "somewhere early"}, None),                                                # unparseable
    (None, None),                                                                         # missing
    ({"answer": "(7.0, 7.0)"}, (7.0, 7.0)),                                               # zero length
]


def _grounding_samples():
    return [Sample(id=str(i), task="grounding", video="v", question="q", intervals=(g,), duration=30.0,
                   category="short" if i % 2 else "long") for i, g in enumerate(GT)]


@pytest.mark.parametrize("policy", ["swap", "zero"])
def test_grounding_score_equals_reference(policy):
    samples = _grounding_samples()
    preds = {str(i): row for i, (row, _) in enumerate(PREDS) if row is not None}
    res = score("charades_sta", samples, preds, reversed_policy=policy)
    ious = np.array([ref_iou(ref_normalize(p, 30.0, swap=policy == "swap"), g) for (_, p), g in zip(PREDS, GT)])
    assert res["metrics"]["miou"] == pytest.approx(ious.mean())
    for t in (0.3, 0.5, 0.7):
        assert res["metrics"][f"r@{t:g}"] == pytest.approx(np.mean(ious >= t))
    assert res["samples"] == 9 and res["missing"] == 1 and res["predicted"] == 8
    st = res["status"]
    assert st["missing"] == 1 and st["no_answer"] == 1 and st["empty_answer"] == 1 and st["unparseable"] == 1
    assert st["outside"] == 1 and st["empty"] == 1 and st["clipped"] == 1 and st["reversed"] == 1
    assert st["ok"] == 1
    long = [i for i in range(9) if i % 2 == 0]
    assert res["per_category"]["long"]["miou"] == pytest.approx(ious[long].mean())
    assert res["per_category"]["long"]["n"] == len(long)
    # the swap policy is what makes the reversed answer count
    assert (ious[1] > 0.99) == (policy == "swap")


def test_lenient_reads_untagged_response():
    samples = _grounding_samples()[5:6]
    preds = {"5": PREDS[5][0]}
    assert score("charades_sta", samples, preds)["metrics"]["miou"] == 0.0
    assert score("charades_sta", samples, preds, lenient=True)["metrics"]["miou"] == pytest.approx(1.0)


def test_multi_gt_max_and_union():
    golds = [(0.0, 4.0), (10.0, 14.0)]
    pred = (2.0, 12.0)
    iou_max, iop_max = M.multi_iou(pred, golds, multi_gt="max")
    assert iou_max == pytest.approx(max(ref_iou(pred, g) for g in golds))
    assert iop_max == pytest.approx(max(ref_iop(pred, g) for g in golds))
    # union: |pred ∩ (g1 ∪ g2)| = 2 + 2 = 4; |pred ∪ g1 ∪ g2| = 14
    iou_u, iop_u = M.multi_iou(pred, golds, multi_gt="union")
    assert iou_u == pytest.approx(4 / 14) and iop_u == pytest.approx(4 / 10)
    assert M.multi_iou(None, golds) == (0.0, 0.0)


def test_grounded_qa_equals_reference():
    gts = [(2.0, 8.0), (10.0, 20.0), (0.0, 5.0), (3.0, 4.0), (5.0, 15.0)]
    answers = ["B", "A", "C", "D", "B"]
    rows = [
        {"response": "<think>t</think> <answer>B (2.0, 8.0)</answer>"},        # right, exact
        {"response": "<answer>A (12, 30)</answer>"},                           # right, clipped
        {"response": "<answer>A/C, (0, 5)</answer>"},                           # hedged → wrong, IoU 1
        {"response": "<answer>D (4, 3)</answer>"},                              # right, reversed
        None,                                                                   # missing
    ]
    opts = ("A. a", "B. b", "C. c", "D. d")
    samples = [Sample(id=f"q{i}", task="grounded_qa", video="v", question="q", options=opts, answer=a,
                      intervals=(g,), duration=25.0, category=("CW", "TN")[i % 2])
               for i, (g, a) in enumerate(zip(gts, answers))]
    preds = {f"q{i}": r for i, r in enumerate(rows) if r is not None}
    res = score("nextgqa", samples, preds)
    named = [(2.0, 8.0), (12.0, 25.0), (0.0, 5.0), (3.0, 4.0), None]
    correct = np.array([1, 1, 0, 1, 0], dtype=float)
    ious = np.array([ref_iou(p, g) for p, g in zip(named, gts)])
    iops = np.array([ref_iop(p, g) for p, g in zip(named, gts)])
    m = res["metrics"]
    assert m["accuracy"] == pytest.approx(correct.mean())
    assert m["miou"] == pytest.approx(ious.mean())
    assert m["miop"] == pytest.approx(iops.mean())
    assert m["iop@0.5"] == pytest.approx(np.mean(iops >= 0.5))
    assert m["r@0.3"] == pytest.approx(np.mean(ious >= 0.3))
    assert m["acc@gqa"] == pytest.approx(np.mean(correct * (iops >= 0.5)))
    assert res["status"]["hedged"] == 1 and res["status"]["missing"] == 1
    assert res["per_category"]["CW"]["accuracy"] == pytest.approx(correct[[0, 2, 4]].mean())


def test_multiple_choice_accuracy_per_category():
    opts = ("A. cat", "B. dog", "C. fish", "D. bird")
    golds = ["A", "B", "C", "D", "A", "B"]
    cats = ["count", "count", "action", "action", "action", "ocr"]
    answers = ["A", "(B) dog", "fish", "A, D", "", None]  # letter, marked letter, option text, hedged, empty, missing
    samples = [Sample(id=str(i), task="multiple_choice", video="v", question="q", options=opts, answer=g,
                      category=c, groups={"duration": "short" if i < 3 else "long"})
               for i, (g, c) in enumerate(zip(golds, cats))]
    preds = {str(i): {"answer": a} for i, a in enumerate(answers) if a is not None}
    res = score("videomme", samples, preds)
    correct = np.array([1, 1, 1, 0, 0, 0], dtype=float)
    assert res["metrics"]["accuracy"] == pytest.approx(correct.mean())
    per = {c: correct[[i for i, cc in enumerate(cats) if cc == c]].mean() for c in set(cats)}
    for c, v in per.items():
        assert res["per_category"][c]["accuracy"] == pytest.approx(v)
    assert res["metrics"]["category_mean"] == pytest.approx(np.mean(list(per.values())))
    assert res["groups"]["duration"]["short"]["accuracy"] == pytest.approx(1.0)
    assert res["groups"]["duration"]["long"]["accuracy"] == pytest.approx(0.0)
    assert res["status"] == {"empty_answer": 1, "hedged": 1, "missing": 1, "ok": 3}


def test_numeric_exact_and_mra():
    gold = np.array([3.0, 2.5, 10.0, 4.0, 0.0])
    pred = np.array([3.0, 2.54, 12.0, np.nan, 0.2])
    np.testing.assert_array_equal(M.numeric_correct(pred, gold), [1, 1, 0, 0, 0])
    thetas = np.arange(0.5, 0.96, 0.05)

    def ref_mra(p, g):
        if not np.isfinite(p):
            return 0.0
        rel = abs(p - g) / (abs(g) if g != 0 else 1.0)
        return float(np.mean([rel < 1 - t for t in thetas]))

    np.testing.assert_allclose(M.mean_relative_accuracy(pred, gold), [ref_mra(p, g) for p, g in zip(pred, gold)])
    # through score(): vsibench scores numbers by MRA, videommmu by exact match
    samples = [Sample(id=str(i), task="numeric", video=None, question="q", answer=f"{g:g}") for i, g in enumerate(gold)]
    preds = {str(i): {"answer": f"about {p:g}"} for i, p in enumerate(pred) if np.isfinite(p)}
    vsi = score("vsibench", samples, preds)
    assert vsi["metrics"]["accuracy"] == pytest.approx(np.mean([ref_mra(p, g) for p, g in zip(pred, gold)]))
    mmmu = score("videommmu", samples, preds)
    assert mmmu["metrics"]["accuracy"] == pytest.approx(0.4)
    assert BENCHMARKS["vsibench"].numeric == "mra"


def test_package_exports_the_functions():
    import vital_jax.eval as ev

    assert ev.score is score and callable(ev.load_benchmark) and ev.BENCHMARKS is BENCHMARKS


def test_recall_and_means_on_empty_sets():
    assert M.grounding_metrics(np.zeros(0)) == {"miou": 0.0, "r@0.3": 0.0, "r@0.5": 0.0, "r@0.7": 0.0}
    assert M.mean([]) == 0.0
    assert M.recall_at(np.array([0.3, 0.5, 0.69999]), (0.3, 0.5, 0.7)) == {"r@0.3": 1.0, "r@0.5": 2 / 3, "r@0.7": 0.0}
