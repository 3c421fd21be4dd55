"""``vital bench``: run the performance suite (``scripts/bench_*.py``) and report its numbers.

    vital bench [--quick] [--json] [--only model,sampler,train,data] [--out FILE] [--readme README.md]

Suites, each a script of the source checkout printing JSON lines: ``model`` (forward+backward vs
transformers/PyTorch, fraction of the GEMM peak), ``sampler`` (decode vs transformers
``generate()`` and the bandwidth roofline, tool turn append vs re-prefill, recompiles after
warm-up), ``train`` (SFT step MFU, RL step time split), ``data`` (pipeline examples/s). Ratios
compare timings taken in one process, so they stay comparable on a noisy machine. ``--quick``
targets 10 minutes on 2 CPU cores. A failing script is reported and the others still run; the
exit status is then 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def add_arguments(p) -> None:
    p.description = (__doc__ or "").strip().splitlines()[0]
    p.add_argument("--quick", action="store_true", help="short runs (the whole suite in ~10 min on 2 CPU cores)")
    p.add_argument("--json", action="store_true",
                   help="print exactly the JSON lines (one object per line, with 'suite'); progress on stderr")
    p.add_argument("--only", default=None, metavar="SUITES",
                   help="comma-separated suites (default: model,sampler,train,data)")
    p.add_argument("--out", default=None, metavar="FILE", help="also write every JSON line to this JSONL file")
    p.add_argument("--readme", default=None, metavar="PATH",
                   help="regenerate the results table between <!-- bench:start --> and <!-- bench:end --> in PATH")
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="kill a script after S seconds")
    p.add_argument("--verbose", action="store_true", help="pass the scripts' progress output (stderr) through")
    p.add_argument("--scripts-dir", default=None, help="folder of bench_*.py (default: the checkout's scripts/)")


def _row(line: dict) -> str:
    from vital_jax.bench.readme_table import fmt_value

    base = line.get("baseline")
    text = f"  {line.get('name', '?'):44s} {fmt_value(line.get('value')):>12s} {line.get('unit', '')!s:12s}"
    return text + (f"  vs {base}" if base else "")


def run(args) -> int:
    from vital_jax.bench import readme_table, runner
    from vital_jax.cli import CommandError

    try:
        scripts = Path(args.scripts_dir) if args.scripts_dir else runner.find_scripts_dir()
        if not scripts.is_dir():
            raise runner.BenchError(f"--scripts-dir {scripts}: not a folder")
        suites = runner.resolve_suites(args.only, scripts)
        if args.readme:
            readme_table.check_markers(args.readme)   # fail now, not after a 10-minute run
    except (runner.BenchError, readme_table.ReadmeError) as e:
        raise CommandError(str(e)) from None

    meta = readme_table.run_meta(quick=args.quick, suites=suites, root=scripts.parent)   # date, load: at the start
    out_file = open(args.out, "w") if args.out else None   # noqa: SIM115 (written as lines come)
    every: list[dict] = []

    def on_line(line: dict) -> None:
        every.append(line)
        text = json.dumps(line)
        if out_file is not None:
            out_file.write(text + "\n")
            out_file.flush()
        if args.json:
            print(text, flush=True)
        elif line.get("name") != "bench_suite_failed":
            print(_row(line), flush=True)

    def on_start(suite: str, script: Path) -> None:
        msg = f"bench: {suite} ({script.name}{' --quick' if args.quick else ''}) ..."
        print(msg, file=sys.stderr, flush=True)
        if not args.json:
            print(f"{suite}:", flush=True)

    def on_done(res) -> None:
        if res.ok:
            print(f"bench: {res.suite} done in {res.seconds:.0f} s, {len(res.lines)} lines", file=sys.stderr,
                  flush=True)
            return
        why = res.error or f"exit status {res.returncode}"
        tail = "\n".join("    " + t for t in res.stderr_tail.splitlines()[-15:])
        print(f"bench: {res.suite} FAILED ({why}) after {res.seconds:.0f} s; stderr tail:\n{tail}",
              file=sys.stderr, flush=True)

    def on_stderr(suite: str, text: str) -> None:
        print(f"  [{suite}] {text}", file=sys.stderr, flush=True)

    try:
        results = runner.run_all(suites, scripts, quick=args.quick, timeout=args.timeout, on_line=on_line,
                                 on_stderr=on_stderr if args.verbose else None, on_start=on_start,
                                 on_done=on_done)
    finally:
        if out_file is not None:
            out_file.close()
    failed = [r for r in results if not r.ok]
    if args.readme:
        try:
            readme_table.update_readme(args.readme, every, meta)
        except readme_table.ReadmeError as e:
            raise CommandError(str(e)) from None
        print(f"bench: results table written to {args.readme}", file=sys.stderr, flush=True)
    if failed:
        print(f"bench: {len(failed)} of {len(results)} suites failed: " + ", ".join(
            f"{r.suite} ({r.error or f'exit {r.returncode}'})" for r in failed), file=sys.stderr, flush=True)
        return 1
    return 0
