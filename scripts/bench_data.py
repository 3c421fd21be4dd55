"""Throughput of the data pipelines (examples/s) on this machine.

    .venv/bin/python scripts/bench_data.py [--num 120] [--threads 2] [--frames 16]

Generates a synthetic suite in a temp folder (timed), then measures, each after a warm-up batch:
records-only SFT batches, RL batches with frame decoding, and RL batches with decoding plus
DeepVideo-R1 augmentation (noise on half the prompts, hints on the other half).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

from vital_jax.data.pipeline import Augment, PipelineConfig, UniformFrames, rl_iterator, sft_iterator
from vital_jax.data.records import load_records
from vital_jax.data.synthetic import SynthConfig, generate


def _rate(it, n_batches: int, per_batch: int) -> float:
    next(it)  # warm-up: thread pool start, first reads
    t = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    return n_batches * per_batch / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=120)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--batches", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        m = generate(out, SynthConfig(num=args.num, seed=0))
        gen_s = time.perf_counter() - t
        print(f"synth: {m['videos']} videos (30-180 s, 64x64, 2 fps) in {gen_s:.1f} s "
              f"({m['videos'] / gen_s:.1f} videos/s)")
        sft = load_records(f"{out}/sft_tool.jsonl", out)
        rl = load_records(f"{out}/rl.jsonl", out)
        cfg = PipelineConfig(seed=0, process_index=0, process_count=1, read_threads=args.threads)
        rows = {
            "sft records (no decode), batch 32": _rate(sft_iterator(sft, cfg, batch_size=32), args.batches, 32),
            f"rl prompts, decode {args.frames} frames, P=8 G=8":
                _rate(rl_iterator(rl, cfg, prompts_per_batch=8, group_size=8, load=UniformFrames(args.frames)),
                      args.batches, 8),
            f"rl prompts, decode {args.frames} + augment, P=8 G=8":
                _rate(rl_iterator(rl, cfg, prompts_per_batch=8, group_size=8, load=UniformFrames(args.frames),
                                  augment=Augment(lambda ex: 0.5 if ex["record"].index % 2 else -0.5)),
                      args.batches, 8),
            f"sft examples, decode {args.frames} frames, batch 8":
                _rate(sft_iterator(sft, dataclasses.replace(cfg, seed=1), batch_size=8, load=UniformFrames(args.frames)),
                      args.batches, 8),
        }
        for name, rate in rows.items():
            print(f"{name:55s} {rate:10.1f} examples/s")


if __name__ == "__main__":
    main()
