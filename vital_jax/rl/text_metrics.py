"""Plain-Python text metrics for rewards: ROUGE-1/2/L F-measure and word error rate.

ROUGE follows the usual definition (as in Google's ``rouge_score`` with its default tokenizer):
lower-case, every run of characters outside ``[a-z0-9]`` is a separator; ROUGE-N F1 on clipped
n-gram counts; ROUGE-L F1 on the longest common subsequence. We do **not** stem (``rouge_score``
with ``use_stemmer=True``, which VITAL used, applies the Porter stemmer to tokens longer than 3
characters), so "running" and "run" do not match here.
"""

from __future__ import annotations

import re
from collections import Counter

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    return _NON_ALNUM.sub(" ", text.lower()).split()


def _f1(overlap: int, n_pred: int, n_ref: int) -> float:
    if overlap == 0 or n_pred == 0 or n_ref == 0:
        return 0.0
    p, r = overlap / n_pred, overlap / n_ref
    return 2 * p * r / (p + r)


def rouge_n(reference: str | list[str], prediction: str | list[str], n: int) -> float:
    """ROUGE-N F1: clipped n-gram overlap between prediction and reference."""
    ref = rouge_tokens(reference) if isinstance(reference, str) else reference
    pred = rouge_tokens(prediction) if isinstance(prediction, str) else prediction
    ref_grams = Counter(tuple(ref[i : i + n]) for i in range(len(ref) - n + 1))
    pred_grams = Counter(tuple(pred[i : i + n]) for i in range(len(pred) - n + 1))
    overlap = sum((ref_grams & pred_grams).values())
    return _f1(overlap, sum(pred_grams.values()), sum(ref_grams.values()))


def lcs_length(a: list[str], b: list[str]) -> int:
    """Longest common subsequence length, O(len(a)·len(b)) time, O(len(b)) memory."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(reference: str | list[str], prediction: str | list[str]) -> float:
    """ROUGE-L F1 from the longest common subsequence of tokens."""
    ref = rouge_tokens(reference) if isinstance(reference, str) else reference
    pred = rouge_tokens(prediction) if isinstance(prediction, str) else prediction
    return _f1(lcs_length(ref, pred), len(pred), len(ref))


def rouge_mean(reference: str, prediction: str) -> float:
    """Mean of ROUGE-1, ROUGE-2 and ROUGE-L F1 (Video-R1's free-form reward)."""
    ref, pred = rouge_tokens(reference), rouge_tokens(prediction)
    return (rouge_n(ref, pred, 1) + rouge_n(ref, pred, 2) + rouge_l(ref, pred)) / 3.0


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
