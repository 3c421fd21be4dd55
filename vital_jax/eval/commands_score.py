"""``vital score``: benchmark metrics from a predictions file alone (no model, no videos)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vital_jax.cli import CommandError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vital_jax.eval.benchmarks import BENCHMARKS

    parser.add_argument("--benchmark", required=True, choices=sorted(BENCHMARKS), metavar="NAME",
                        help="one of: " + ", ".join(sorted(BENCHMARKS)))
    parser.add_argument("--data", required=True, help="the benchmark's annotation file")
    parser.add_argument("--predictions", required=True, help="predictions JSONL (see vital_jax.eval.predictions)")
    parser.add_argument("--out", default=None, help="write the metrics JSON here")
    parser.add_argument("--lenient", action="store_true",
                        help="read the whole response when it has no <answer> block (other systems)")
    parser.add_argument("--reversed", choices=("swap", "zero"), default="swap",
                        help="a predicted (end, start) interval: swap it (default) or score 0")
    parser.add_argument("--per-sample", default=None, help="also write per-sample values as JSONL here")


def run(args: argparse.Namespace) -> int:
    from vital_jax.data.records import DataFileError
    from vital_jax.eval.benchmarks import AnnotationLayoutError, load_benchmark
    from vital_jax.eval.predictions import PredictionsError, read_predictions
    from vital_jax.eval.scoring import score, summary_table

    try:
        samples = load_benchmark(args.benchmark, args.data)
        preds, counts = read_predictions(args.predictions)
    except (AnnotationLayoutError, DataFileError, PredictionsError, ValueError, KeyError) as e:
        raise CommandError(str(e)) from e
    if not samples:
        raise CommandError(f"{args.data}: no samples")
    result = score(args.benchmark, samples, preds, lenient=args.lenient, reversed_policy=args.reversed,
                   return_rows=args.per_sample is not None)
    result["duplicates"] = counts["duplicates"]
    result["data"], result["predictions"] = str(args.data), str(args.predictions)
    rows = result.pop("rows", None)
    print(summary_table(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    if args.per_sample and rows is not None:
        with open(args.per_sample, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return 0
