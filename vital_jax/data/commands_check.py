"""``vital data check``: validate annotation files against the schema and the videos on disk.

Bad records are reported (file, record index, field) and skipped; the exit status is non-zero
only when an input file cannot be read at all.
"""

from __future__ import annotations

import argparse
import math
import sys

from vital_jax.cli import CommandError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("check",), help="what to do (check: validate files)")
    parser.add_argument("--data", required=True, nargs="+", help="annotation file(s): JSON or JSONL")
    parser.add_argument("--video-root", required=True, help="folder the media paths are relative to")
    parser.add_argument("--kind", choices=("rl", "cot", "tool_cot"), default=None,
                        help="force the record kind (default: detected per record)")
    parser.add_argument("--no-decode", action="store_true", help="check files exist, skip probing them")
    parser.add_argument("--max-problems", type=int, default=50, help="problems printed per file")


def check_file(path, root, *, kind=None, decode=True):
    """Records that pass every check, and the problems (schema, media, times vs the real video)."""
    import os

    from vital_jax.data.records import Problem, scan_records, TIME_TOLERANCE

    records, problems = scan_records(path, root, kind=kind)
    good = []
    probed: dict[str, object] = {}
    for r in records:
        field = r.media_type
        if not r.media_path.is_file():
            problems.append(Problem(r.file, r.index, field, f"{r.media_path} does not exist"))
            continue
        if decode and r.is_video:
            key = str(r.media_path)
            if key not in probed:
                probed[key] = _probe(key)
            info = probed[key]
            if isinstance(info, str):
                problems.append(Problem(r.file, r.index, field, info))
                continue
            # annotated times must lie inside the real video, not only the declared duration
            real = info.duration
            if not math.isclose(real, r.duration, rel_tol=0.05, abs_tol=1.0):
                problems.append(Problem(r.file, r.index, "duration",
                                        f"declared {r.duration:.2f} s but the video lasts {real:.2f} s"))
                continue
            ends = []
            if r.solution is not None and r.solution.interval is not None:
                ends.append(("solution", r.solution.interval[1]))
            if r.tool is not None and r.tool.tool_params is not None:
                ends.append(("tool_params", r.tool.tool_params[1]))
            late = [(f, e) for f, e in ends if e > real + TIME_TOLERANCE]
            if late:
                problems.append(Problem(r.file, r.index, late[0][0],
                                        f"end {late[0][1]} is after the video's real end {real:.2f} s"))
                continue
        elif not decode and not os.access(r.media_path, os.R_OK):
            problems.append(Problem(r.file, r.index, field, f"{r.media_path} is not readable"))
            continue
        good.append(r)
    problems.sort(key=lambda p: p.index)
    return good, problems


def _probe(path: str):
    from vital_jax.video import VideoError, probe

    try:
        return probe(path)
    except VideoError as e:
        return f"not decodable: {e.problem}"


def run(args: argparse.Namespace) -> int:
    from vital_jax.data.records import DataFileError, count_by_source

    unreadable = 0
    for path in args.data:
        try:
            good, problems = check_file(path, args.video_root, kind=args.kind, decode=not args.no_decode)
        except DataFileError as e:
            print(f"error: {e}", file=sys.stderr)
            unreadable += 1
            continue
        total = len(good) + len({p.index for p in problems})
        print(f"{path}: {total} records, {len(good)} ok, {total - len(good)} with problems")
        for source, n in count_by_source(good).items():
            print(f"  {source}: {n}")
        for p in problems[: args.max_problems]:
            print(f"  problem: record {p.index}: field '{p.field}': {p.message}")
        if len(problems) > args.max_problems:
            print(f"  ... {len(problems) - args.max_problems} more problems")
    if unreadable:
        raise CommandError(f"{unreadable} of {len(args.data)} input file(s) could not be read")
    return 0
