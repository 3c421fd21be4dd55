"""Text metrics for rewards: ROUGE (the ``rouge-score`` library) and word error rate.

ROUGE is Google's ``rouge_score`` with ``use_stemmer=True``, as VITAL's free-form reward used it
(lower-case, non-alphanumerics split, Porter stemming: "running" matches "run"); F-measures of
ROUGE-1, ROUGE-2 and ROUGE-L.
"""

from __future__ import annotations

import functools


@functools.cache
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def rouge_scores(reference: str, prediction: str) -> dict[str, float]:
    """F1 of ``rouge1``, ``rouge2`` and ``rougeL`` (stemmed)."""
    return {k: float(v.fmeasure) for k, v in _scorer().score(reference, prediction).items()}


def rouge_mean(reference: str, prediction: str) -> float:
    """Mean of ROUGE-1, ROUGE-2 and ROUGE-L F1 (Video-R1's free-form reward)."""
    return sum(rouge_scores(reference, prediction).values()) / 3.0


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance / max(1, #reference words); whitespace split, exact match.

    Can exceed 1 (many insertions); callers clamp.
    """
    ref, hyp = reference.split(), hypothesis.split()
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1] / max(1, len(ref))
