"""Bootstrap intervals and paired differences (vital_jax.eval.stats) against a direct NumPy
computation, and the per-sample values behind the synthetic suite's headline metrics."""

import numpy as np
import pytest

from vital_jax.eval.benchmarks import Sample
from vital_jax.eval.scoring import sample_values, score
from vital_jax.eval.stats import bootstrap_ci, interval, paired

# a fixed small example: 40 per-sample scores in [0, 1] (IoU-like, a few exact zeros and ones)
X = np.round(np.random.default_rng(7).beta(0.7, 1.3, 40), 3)
X[:5], X[5:8] = 0.0, 1.0


def _numpy_percentile(x, y=None, n=20000, seed=1):
    """The textbook percentile bootstrap, written out: resample indices, mean, 2.5/97.5 %."""
    idx = np.random.default_rng(seed).integers(0, len(x), (n, len(x)))
    stat = x[idx].mean(1) - (0.0 if y is None else y[idx].mean(1))
    return np.percentile(stat, [2.5, 97.5])


def test_interval_matches_a_numpy_bootstrap_and_contains_the_mean():
    lo, hi = bootstrap_ci(X, n_resamples=20000)
    ref = _numpy_percentile(X)
    assert lo == pytest.approx(ref[0], abs=0.01) and hi == pytest.approx(ref[1], abs=0.01)
    got = interval({str(i): v for i, v in enumerate(X)})
    assert got["n"] == 40 and got["mean"] == pytest.approx(X.mean())
    assert got["ci"][0] < got["mean"] < got["ci"][1]
    # seeded: the same call gives the same interval
    assert interval(list(X)) == interval(list(X))


def test_interval_shrinks_with_n():
    w1 = np.diff(bootstrap_ci(X))[0]
    w4 = np.diff(bootstrap_ci(np.tile(X, 4)))[0]       # same distribution, 4x the samples
    assert w4 == pytest.approx(w1 / 2, rel=0.15)


def test_paired_difference_is_narrower_than_unpaired_when_runs_are_correlated():
    rng = np.random.default_rng(3)
    a = X
    b = np.clip(X - 0.05 + 0.02 * rng.standard_normal(X.size), 0, 1)   # the same questions, a bit worse
    ids = [f"s{i}" for i in range(X.size)]
    got = paired(dict(zip(ids, a)), dict(zip(reversed(ids), b[::-1])))   # keyed by id, order irrelevant
    assert got["n"] == 40 and got["mean"] == pytest.approx(a.mean() - b.mean())
    ref = _numpy_percentile(a, b)                                        # same indices for a and b
    assert got["ci"] == pytest.approx(list(ref), abs=0.005)
    assert got["ci"][0] > 0                                              # paired: clearly positive
    # unpaired (independent resamples of two runs): the question difficulty swamps the difference
    rng = np.random.default_rng(5)
    i, j = rng.integers(0, 40, (2, 20000, 40))
    unpaired = np.percentile(a[i].mean(1) - b[j].mean(1), [2.5, 97.5])
    assert unpaired[0] < 0 < unpaired[1]
    assert np.diff(unpaired)[0] > 5 * np.diff(got["ci"])[0]


def test_degenerate_and_mismatched_inputs():
    assert bootstrap_ci(np.zeros(30)) == (0.0, 0.0)               # a model that never scores
    assert all(np.isnan(bootstrap_ci([0.5])))                       # one sample: no interval
    assert interval([])["n"] == 0 and np.isnan(interval([])["mean"])
    with pytest.raises(ValueError, match="different samples"):
        paired({"a": 1.0, "b": 0.0}, {"a": 1.0, "c": 0.0})


def test_sample_values_average_to_the_synthetic_metrics():
    """Unequal task sizes: the per-sample score values (weights folded in) average to score()'s
    mean over tasks; accuracy and mIoU over the samples that have them."""
    g = [Sample(id=f"g{i}", task="grounding", video=None, question="q", intervals=((2.0, 6.0),),
                category="temporal_grounding", duration=20.0) for i in range(3)]
    m = [Sample(id="m0", task="multiple_choice", video=None, question="q", options=("A. x", "B. y"), answer="B",
                category="multiple_choice")]
    q = [Sample(id=f"q{i}", task="grounded_qa", video=None, question="q", options=("A. x", "B. y"), answer="A",
                intervals=((1.0, 3.0),), category="grounded_qa", duration=20.0) for i in range(2)]
    samples = g + m + q
    preds = {"g0": {"answer": "(2.0, 6.0)"}, "g1": {"answer": "(4.0, 8.0)"}, "g2": {"answer": "nonsense"},
             "m0": {"answer": "B"}, "q0": {"answer": "A (1.0, 2.0)"}, "q1": {"answer": "B (1.0, 3.0)"}}
    res = score("synthetic", samples, preds, return_rows=True)
    vals = sample_values(samples, res["rows"])
    assert set(vals["score"]) == {s.id for s in samples}
    assert set(vals["accuracy"]) == {"m0", "q0", "q1"} and set(vals["miou"]) == {"g0", "g1", "g2", "q0", "q1"}
    for k in ("accuracy", "miou", "score"):
        assert np.mean(list(vals[k].values())) == pytest.approx(res["metrics"][k]), k
    # the score is not the plain per-sample mean here (3 grounding samples would outweigh 1 MC)
    plain = np.mean([np.mean([r[k] for k in ("correct", "iou") if k in r]) for r in res["rows"]])
    assert plain != pytest.approx(res["metrics"]["score"])
