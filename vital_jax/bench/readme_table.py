"""The README's benchmark results table, regenerated from the suite's JSON lines.

:func:`update_readme` replaces whatever lies between the two markers (both must be there, once,
start before end) with :func:`render_table` of the lines: a header sentence (machine, date, git
commit, quick or full, suites) and one row per headline metric, in a fixed order. Everything
outside the markers is left byte for byte.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from vital_jax.errors import VitalError

START = "<!-- bench:start -->"
END = "<!-- bench:end -->"

# (metric name, suite that prints it): the table's rows, in this order
HEADLINES: tuple[tuple[str, str], ...] = (
    ("fwd_bwd_speedup_vs_torch", "model"),
    ("fwd_bwd_response_speedup_vs_torch", "model"),
    ("fwd_speedup_vs_torch", "model"),
    ("fwd_bwd_fraction_of_gemm_peak", "model"),
    ("decode_speedup_vs_hf_generate", "sampler"),
    ("decode_fraction_of_roofline", "sampler"),
    ("tool_turn_speedup_vs_reprefill_4k", "sampler"),
    ("tool_turn_cost_ratio_8k_vs_1k", "sampler"),
    ("recompiles_after_warmup", "sampler"),
    ("train_step_mfu", "train"),
    ("train_step_recompiles_after_warmup", "train"),
    ("rl_step_time_tiny", "train"),
    ("rl_step_time_mid", "train"),
    ("pipeline_examples_per_s", "data"),
)


class ReadmeError(VitalError, ValueError):
    """The README cannot take the table (markers missing, repeated or out of order)."""


# --------------------------------------------------------------------------- run metadata


def machine_info() -> dict[str, Any]:
    """CPU model (``/proc/cpuinfo``), logical cores, RAM in GiB (``/proc/meminfo``), and the
    1-minute load average (other work on a shared machine slows every absolute number)."""
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = round(int(line.split()[1]) / 2**20, 1)
                break
    except (OSError, ValueError, IndexError):
        pass
    try:
        load = round(os.getloadavg()[0], 1)
    except OSError:
        load = None
    return {"cpu": cpu or platform.processor() or platform.machine() or "unknown CPU",
            "cores": os.cpu_count(), "ram_gib": ram, "load_avg_1min": load}


def git_commit(root: str | os.PathLike) -> str | None:
    """Short commit of the checkout, ``+dirty`` when tracked files differ from it."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, cwd=root, capture_output=True, text=True,
                             timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], check=False, cwd=root,
                               capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def run_meta(*, quick: bool, suites: Iterable[str], root: str | os.PathLike | None = None) -> dict[str, Any]:
    return {"machine": machine_info(), "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": git_commit(root) if root is not None else None, "quick": quick, "suites": list(suites)}


# --------------------------------------------------------------------------- formatting


def fmt_value(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.3g}" if abs(v) < 1e5 else f"{v:.3e}"
    return str(v)


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _get(line: dict, *keys, default=None):
    for k in keys:
        if isinstance(line.get(k), (int, float)) and not isinstance(line.get(k), bool):
            return line[k]
    return default


def _details_mfu(ln):
    parts = []
    if (s := _get(ln, "step_time_s")) is not None:
        parts.append(f"{s:.2f} s/step")
    if (t := _get(ln, "tokens_per_s")) is not None:
        parts.append(f"{t:.0f} tokens/s")
    if (a := _get(ln, "achieved_gflops")) is not None and (p := _get(ln, "peak_gflops")) is not None:
        parts.append(f"{a:.0f} of {p:.0f} GFLOP/s")
    if (c := _get(ln, "compile_s")) is not None:
        parts.append(f"compile {c:.0f} s")
    return ", ".join(parts)


def _details_rl(ln):
    split = [(k, _get(ln, f"{k}_s")) for k in ("rollout", "reward", "update")]
    parts = [" / ".join(f"{k} {v:.2f} s" for k, v in split if v is not None)]
    if (t := _get(ln, "rollout_tokens_per_s")) is not None:
        parts.append(f"rollout {t:.0f} tokens/s")
    n, steady = _get(ln, "compiles_after_first_step"), _get(ln, "steady_step_s")
    if n and steady is not None:
        parts.append(f"{n} compile(s) after step 1; {steady:.2f} s/step without those steps")
    model = ln.get("model")
    if isinstance(model, dict) and model.get("params"):
        parts.append(f"{model['params'] / 1e6:.1f}M params")
    return ", ".join(p for p in parts if p)


def _details_pipeline(ln):
    s = _get(ln, "speedup_vs_serial_decode")
    return "" if s is None else f"{s:.2f}x the serial decode rate"


DETAILS: dict[str, Callable[[dict], str]] = {
    "train_step_mfu": _details_mfu,
    "rl_step_time_tiny": _details_rl,
    "rl_step_time_mid": _details_rl,
    "pipeline_examples_per_s": _details_pipeline,
}


def render_table(lines: Iterable[dict[str, Any]], meta: dict[str, Any]) -> str:
    """Markdown: a header sentence and one row per headline metric (then failed suites)."""
    lines = list(lines)
    by_name: dict[str, dict] = {}
    for ln in lines:
        by_name.setdefault(ln.get("name"), ln)     # first occurrence wins
    failed = {ln.get("suite"): ln for ln in lines if ln.get("name") == "bench_suite_failed"}
    suites = list(meta.get("suites") or dict.fromkeys(ln.get("suite") for ln in lines if ln.get("suite")))
    m = meta.get("machine") or {}
    machine = f"{m.get('cpu', 'unknown CPU')} ({m.get('cores', '?')} cores"
    machine += f", {m['ram_gib']:g} GiB RAM" if m.get("ram_gib") else ""
    machine += f", load average {m['load_avg_1min']:g} at the start" if m.get("load_avg_1min") is not None else ""
    machine += ")"
    mode = "quick" if meta.get("quick") else "full"
    cmd = "vital bench" + (" --quick" if meta.get("quick") else "")
    out = [(f"Generated by `{cmd} --readme README.md` ({mode} run, suites: {', '.join(suites) or 'none'}) on "
           f"{meta.get('date', '?')}, commit `{meta.get('commit') or 'unknown'}`; machine: {machine}. "
           "Each ratio compares two timings taken in the same process; all lines: `vital bench --json`."),
           "",
           "| metric | value | unit | compared with | details |",
           "|---|---|---|---|---|"]
    for name, suite in HEADLINES:
        ln = by_name.get(name)
        if ln is None:
            if suite in suites and suite not in failed:
                out.append(f"| `{name}` | — | | | not reported by bench_{suite}.py |")
            continue
        details = DETAILS.get(name, lambda _: "")(ln)
        out.append(f"| `{name}` | {fmt_value(ln.get('value'))} | {_cell(ln.get('unit', ''))} | "
                   f"{_cell(ln.get('baseline', '—') or '—')} | {_cell(details)} |")
    for suite, ln in failed.items():
        last = (ln.get("stderr_tail") or "").strip().splitlines()
        out.append(f"| suite `{suite}` | failed | {_cell(ln.get('error', ''))} | | "
                   f"{_cell(last[-1][:160] if last else '')} |")
    return "\n".join(out)


# --------------------------------------------------------------------------- README


def replace_block(text: str, block: str, *, source: str = "README") -> str:
    """``text`` with everything between the markers replaced by ``block`` (markers kept)."""
    for marker in (START, END):
        n = text.count(marker)
        if n != 1:
            raise ReadmeError(f"{source}: expected the marker {marker} once, found it {n} times; "
                              f"add a section with {START} and {END} on their own lines")
    i, j = text.index(START), text.index(END)
    if j < i:
        raise ReadmeError(f"{source}: {END} comes before {START}")
    return text[:i + len(START)] + "\n" + block.strip("\n") + "\n" + text[j:]


def check_markers(path: str | os.PathLike) -> None:
    """Raise :class:`ReadmeError` now (before a long run) if ``path`` cannot take the table."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ReadmeError(f"{path}: cannot read: {e.strerror or e}") from None
    replace_block(text, "", source=str(path))


def update_readme(path: str | os.PathLike, lines: Iterable[dict[str, Any]], meta: dict[str, Any]) -> str:
    """Rewrite the table in ``path``; returns the table written."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ReadmeError(f"{path}: cannot read: {e.strerror or e}") from None
    table = render_table(lines, meta)
    new = replace_block(text, table, source=str(path))
    if new != text:
        path.write_text(new)
    return table
