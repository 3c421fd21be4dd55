"""Paired comparison of two `vital demo` runs on the same held-out samples (same data seed), e.g.
the Qwen3-VL demo against the Qwen2.5-VL default:

    python scripts/compare_demos.py runs/demo_qwen3 runs/demo

prints, per evaluation cell, A − B with its paired 95 % bootstrap interval (score, accuracy, mIoU),
computed exactly as the demo's own paired rows (``vital_jax.apps.demo._paired``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vital_jax.apps.demo import _paired
from vital_jax.eval.benchmarks import load_benchmark
from vital_jax.eval.predictions import read_predictions
from vital_jax.eval.scoring import sample_values, score

CELLS = ("sft_tools", "sft_no_tools", "rl_tools", "rl_no_tools", "rl_tools_blind")


def cell_values(run: Path, cell: str, samples) -> dict:
    preds = read_predictions(run / "eval" / cell / "predictions.jsonl")[0]
    used = [s for s in samples if s.id in preds]
    return sample_values(used, score("synthetic", used, preds, return_rows=True)["rows"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="demo output folder A")
    ap.add_argument("b", type=Path, help="demo output folder B (the baseline)")
    args = ap.parse_args()
    sa = load_benchmark("synthetic", args.a / "data" / "eval.jsonl")
    sb = load_benchmark("synthetic", args.b / "data" / "eval.jsonl")
    if [(s.id, s.answer) for s in sa] != [(s.id, s.answer) for s in sb]:
        raise SystemExit("the two runs' held-out samples differ (another data seed?): nothing to pair")
    for cell in CELLS:
        if not all((r / "eval" / cell / "predictions.jsonl").is_file() for r in (args.a, args.b)):
            continue
        d = _paired(cell_values(args.a, cell, sa), cell_values(args.b, cell, sb))
        rest = "  ".join(f"{k} {d[k]['mean']:+.3f} [{d[k]['ci'][0]:+.3f}, {d[k]['ci'][1]:+.3f}]"
                         for k in ("accuracy", "miou") if k in d)
        print(f"{cell:15s} n {d['n']:4d}  score {d['mean']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]  {rest}")


if __name__ == "__main__":
    main()
