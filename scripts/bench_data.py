"""Throughput of the data pipelines (examples/s) on this machine.

    .venv/bin/python scripts/bench_data.py [--quick] [--json] [--num 120] [--threads 2] [--frames 16]

Generates a synthetic suite in a temp folder (timed), then measures, each from a fresh iterator:
records-only SFT batches, RL batches with frame decoding, RL batches with decoding plus
DeepVideo-R1 augmentation (noise on half the prompts, hints on the other half), and SFT batches
with decoding. The baseline, measured in the same run: the same frame decoding
(``UniformFrames``) called on the same videos one after another in the main thread, no pipeline.
Baseline and cases run in interleaved rounds; each keeps its best round.

Prints one JSON object per line on stdout: the headline ``pipeline_examples_per_s`` (RL prompts
with frame decoding, vs the serial decode rate), one ``pipeline_<case>_examples_per_s`` per case
and ``synth_videos_per_s``; a readable table goes to stderr. ``--json`` is accepted for the
``vital bench`` contract (the output is JSON lines either way).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import tempfile
import time

from vital_jax.data.pipeline import (
    Augment,
    PipelineConfig,
    UniformFrames,
    rl_iterator,
    sft_iterator,
    to_example,
)
from vital_jax.data.records import load_records
from vital_jax.data.synthetic import SynthConfig, generate


def emit(name, value, unit, **kw):
    print(json.dumps({"name": name, "value": value, "unit": unit, **kw}), flush=True)


def _rate(make_it, n_batches: int, per_batch: int) -> tuple[float, float]:
    """(examples/s, seconds) of ``n_batches`` batches from a fresh iterator, timed from its
    creation: timing only after a warm-up batch would credit the pipeline with the examples its
    read-ahead buffer decoded meanwhile (a large share of a short run)."""
    t = time.perf_counter()
    it = make_it()
    for _ in range(n_batches):
        next(it)
    dt = time.perf_counter() - t
    it.close()  # stop its read-ahead threads (they would go on decoding into the next case)
    return n_batches * per_batch / dt, dt


def _serial_decode(records, frames: int, n: int) -> tuple[float, float]:
    """Baseline: ``UniformFrames`` on ``n`` records in turn, in this thread; (videos/s, seconds).
    Runs before the pipelines, so its warm-up call also spares them the one-time decoder set-up."""
    load = UniformFrames(frames)
    recs = itertools.cycle(records)
    load(to_example(records[-1]))  # warm-up outside the timing: PyAV import and codec set-up
    t = time.perf_counter()
    for _ in range(n):
        ex = load(to_example(next(recs)))
        assert "error" not in ex, ex["error"]
    dt = time.perf_counter() - t
    return n / dt, dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smaller suite and fewer batches (~10 s)")
    ap.add_argument("--json", action="store_true", help="JSON lines on stdout (always; for vital bench)")
    ap.add_argument("--num", type=int, default=None, help="synthetic examples (default 40 quick, 120 full)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--batches", type=int, default=None, help="timed batches per case (default 6 quick, 20 full)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds, best kept (default 2 quick, 3 full)")
    args = ap.parse_args()
    from vital_jax.host_alloc import keep_freed_memory

    keep_freed_memory()   # XLA's per-run temp block reused, not re-faulted (both sides of a comparison)
    num = args.num or (40 if args.quick else 120)
    batches = args.batches or (6 if args.quick else 20)
    reps = args.rounds or (2 if args.quick else 3)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        m = generate(out, SynthConfig(num=num, seed=0))
        gen_s = time.perf_counter() - t
        emit("synth_videos_per_s", m["videos"] / gen_s, "videos/s",
             raw={"videos": m["videos"], "seconds": gen_s}, note="vital synth: 30-180 s videos, 64x64, 2 fps")
        sft = load_records(f"{out}/sft_tool.jsonl", out)
        rl = load_records(f"{out}/rl.jsonl", out)
        cfg = PipelineConfig(seed=0, process_index=0, process_count=1, read_threads=args.threads)
        F = args.frames
        cases = {  # key: (description, iterator factory, examples per batch)
            "sft_records": ("sft records (no decode), batch 32", lambda: sft_iterator(sft, cfg, batch_size=32), 32),
            "rl_decode": (f"rl prompts, decode {F} frames, P=8 G=8",
                          lambda: rl_iterator(rl, cfg, prompts_per_batch=8, group_size=8, load=UniformFrames(F)), 8),
            "rl_decode_augment": (
                f"rl prompts, decode {F} + augment, P=8 G=8",
                lambda: rl_iterator(rl, cfg, prompts_per_batch=8, group_size=8, load=UniformFrames(F),
                                    augment=Augment(lambda ex: 0.5 if ex["record"].index % 2 else -0.5)), 8),
            "sft_decode": (f"sft examples, decode {F} frames, batch 8",
                           lambda: sft_iterator(sft, dataclasses.replace(cfg, seed=1), batch_size=8,
                                                load=UniformFrames(F)), 8),
        }
        # rounds of (baseline, every case): best of rounds for each, so load from other processes
        # does not decide the ratio by hitting one side only
        times: dict[str, list[float]] = {"serial": [], **{k: [] for k in cases}}
        for _ in range(reps):
            times["serial"].append(_serial_decode(rl, F, batches * 8)[1])
            for key, (_, make_it, per) in cases.items():
                times[key].append(_rate(make_it, batches, per)[1])
        serial = batches * 8 / min(times["serial"])
        rates = {}
        for key, (desc, _, per) in cases.items():
            rates[key] = batches * per / min(times[key])
            print(f"{desc:55s} {rates[key]:10.1f} examples/s", file=sys.stderr, flush=True)
            emit(f"pipeline_{key}_examples_per_s", rates[key], "examples/s",
                 raw={"examples": batches * per, "seconds": times[key]}, case=desc, read_threads=args.threads,
                 note=f"best of {reps} rounds")
        print(f"{'baseline: serial decode of ' + str(F) + ' frames, 1 thread':55s} {serial:10.1f} videos/s",
              file=sys.stderr, flush=True)
        emit("pipeline_examples_per_s", rates["rl_decode"], "examples/s",
             baseline=f"serial UniformFrames({F}) decode of the same videos in one thread, this run",
             raw={"pipeline_examples_per_s": rates["rl_decode"], "serial_decode_videos_per_s": serial,
                  "pipeline_seconds": times["rl_decode"], "serial_seconds": times["serial"],
                  "examples_per_round": batches * 8},
             speedup_vs_serial_decode=rates["rl_decode"] / serial, case=cases["rl_decode"][0],
             read_threads=args.threads, videos=m["videos"], rounds=reps, quick=args.quick)
    emit("bench_data_wall_s", time.perf_counter() - t_start, "s", quick=args.quick)


if __name__ == "__main__":
    main()
