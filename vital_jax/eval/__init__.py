"""Evaluation: benchmark annotation loaders, metrics, scoring of predictions, run comparison.

- :mod:`.benchmarks`: ``BENCHMARKS`` registry, ``load_benchmark(name, path) -> list[Sample]``
- :mod:`.metrics`: pure NumPy metrics (IoU, R@k, accuracy, MRA) and answer readers
- :mod:`.predictions`: the predictions JSONL format (``vital eval`` writes, ``vital score`` reads)
- :mod:`.scoring`: ``score(benchmark, samples, predictions) -> metrics dict``, ``summary_table``,
  ``sample_values`` (per-sample values behind the headline metrics)
- :mod:`.stats`: bootstrap intervals over samples (``interval``) and paired differences (``paired``)
- :mod:`.report`: ``compare(runs) -> Markdown`` side-by-side table

Names below load on first use, so ``import vital_jax.eval.benchmarks`` (the CLI's ``--help``)
does not pull in the RL package (and JAX) behind the answer readers.
"""

import importlib

_EXPORTS = {
    "BENCHMARKS": "benchmarks", "AnnotationLayoutError": "benchmarks", "Benchmark": "benchmarks",
    "Sample": "benchmarks", "load_benchmark": "benchmarks",
    "answer_text": "predictions", "append_prediction": "predictions", "read_predictions": "predictions",
    "compare": "report", "compare_files": "report",
    "sample_values": "scoring", "score": "scoring", "score_sample": "scoring", "summary_table": "scoring",
    "bootstrap_ci": "stats", "interval": "stats", "paired": "stats",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"vital_jax.eval.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'vital_jax.eval' has no attribute {name!r}")
