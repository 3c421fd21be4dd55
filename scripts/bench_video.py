"""Benchmark: decode + preprocess throughput of the video pipeline (frames/s).

Makes a 2-minute 640x360 30 fps H.264 video (moving pattern + noise), then times
``load_video`` at 2 fps (240 frames -> patches) cold and with the frame cache, and VITAL
tool clips (``load_clip``) cold and cached.

    .venv/bin/python scripts/bench_video.py [--seconds 120] [--keep PATH]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from vital_jax.video import FrameCache, load_clip, load_video, probe, write_video


def make_video(path: str, seconds: float, fps: int = 30, h: int = 360, w: int = 640) -> None:
    t = np.arange(int(seconds * fps))
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(0)
    chunks = []
    for i in t:  # a drifting color field with some texture: realistic-ish bitrate
        r = (xx + 3 * i) % 256
        g = (yy + 2 * i) % 256
        b = ((xx + yy) // 2 + i) % 256
        f = np.stack([r, g, b], -1).astype(np.int16) + rng.integers(-8, 8, (h, w, 1))
        chunks.append(np.clip(f, 0, 255).astype(np.uint8))
    write_video(path, np.stack(chunks), fps)


def timed(fn, repeat=1):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--keep", default=None, help="write/reuse the test video at this path")
    args = ap.parse_args()
    from vital_jax.host_alloc import keep_freed_memory

    keep_freed_memory()   # XLA's per-run temp block reused, not re-faulted (both sides of a comparison)
    path = args.keep or os.path.join(tempfile.mkdtemp(), "bench.mp4")
    if not os.path.exists(path):
        t0 = time.perf_counter()
        make_video(path, args.seconds)
        print(f"wrote {path} in {time.perf_counter() - t0:.1f}s")
    info = probe(path)
    print(f"video: {info.num_frames} frames, {info.fps:.2f} fps, {info.width}x{info.height}, {info.duration:.1f}s")

    cache = FrameCache(1 << 30)
    v, cold = timed(lambda: load_video(path, cache=cache))
    n = len(v.frame_indices)
    print(f"load_video 2fps cold : {n} frames -> grid {v.grid_thw.tolist()} in {cold:.2f}s = {n / cold:.1f} frames/s")
    _, warm = timed(lambda: load_video(path, cache=cache), repeat=3)
    print(f"load_video 2fps cache: {n / warm:.1f} frames/s ({warm * 1e3:.0f} ms)")
    _, stamped = timed(lambda: load_video(path, cache=cache, timestamps=True), repeat=2)
    print(f"  + timestamp overlay : {n / stamped:.1f} frames/s")

    clip_cache = FrameCache(1 << 30)
    c, cold = timed(lambda: load_clip(path, 30.0, 62.0, cache=clip_cache))
    k = len(c.frame_indices)
    print(f"load_clip [30,62]s cold : {k} frames -> grid {c.grid_thw.tolist()} in {cold * 1e3:.0f} ms = {k / cold:.1f} frames/s")
    _, warm = timed(lambda: load_clip(path, 30.0, 62.0, cache=clip_cache), repeat=3)
    print(f"load_clip [30,62]s cache: {k / warm:.1f} frames/s ({warm * 1e3:.1f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
