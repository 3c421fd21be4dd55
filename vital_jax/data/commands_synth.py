"""``vital synth``: write the synthetic long-video task suite (videos + MTVR-format files)."""

from __future__ import annotations

import argparse
import json

from vital_jax.cli import CommandError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (becomes the --video-root)")
    parser.add_argument("--num", type=int, default=300, help="number of videos (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-seconds", type=float, default=30.0, help="shortest video (>= 20)")
    parser.add_argument("--max-seconds", type=float, default=180.0, help="longest video")
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels (even, >= 32)")
    parser.add_argument("--fps", type=float, default=2.0, help="frame rate (2 = the tool's rate)")
    parser.add_argument("--eval-fraction", type=float, default=0.15, help="videos held out for eval")
    parser.add_argument("--difficulty", type=int, choices=(1, 2, 3), default=None,
                        help="fix the difficulty level (default: uniform over 1-3)")


def run(args: argparse.Namespace) -> int:
    from vital_jax.data.synthetic import SynthConfig, generate

    try:
        cfg = SynthConfig(num=args.num, seed=args.seed, min_seconds=args.min_seconds,
                          max_seconds=args.max_seconds, size=args.size, fps=args.fps,
                          eval_fraction=args.eval_fraction, difficulty=args.difficulty)
    except ValueError as e:
        raise CommandError(str(e)) from e
    manifest = generate(args.out, cfg)
    print(json.dumps({k: manifest[k] for k in ("videos", "splits", "records", "seconds")}, indent=1))
    print(f"wrote {args.out}/{{sft_tool,sft_cot,rl,eval}}.jsonl; use --video-root {args.out}")
    return 0
