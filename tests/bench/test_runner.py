"""``vital bench``'s runner on a fake scripts folder: results collected with their suite, a
failing script reported while the others still run, and one real quick data run."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vital_jax import cli
from vital_jax.bench import runner

ROOT = Path(__file__).resolve().parents[2]

OK = """
import json, sys
print("starting", file=sys.stderr)
print(json.dumps({"name": "speedup", "value": 1.5, "unit": "x", "baseline": "other", "raw": {"t": [1, 2]},
                  "quick": "--quick" in sys.argv}))
print("some text that is not a result")
print(json.dumps([1, 2]))
print(json.dumps({"name": "plain", "value": 3, "unit": "s"}))
"""

FAIL = """
import json, sys
print(json.dumps({"name": "partial", "value": 0.5, "unit": "s"}), flush=True)
print("Traceback (most recent call last):\\nRuntimeError: the bench broke", file=sys.stderr)
sys.exit(3)
"""


@pytest.fixture
def scripts(tmp_path):
    d = tmp_path / "scripts"
    d.mkdir()
    for name, body in {"ok": OK, "fail": FAIL, "late": OK.replace("speedup", "late_speedup"),
                       "sleepy": "import time\ntime.sleep(60)\n"}.items():
        (d / f"bench_{name}.py").write_text(textwrap.dedent(body))
    return d


def test_run_all_collects_lines_and_reports_a_failure(scripts):
    seen = []
    results = runner.run_all(["ok", "fail", "late"], scripts, quick=True, on_line=seen.append)
    ok, fail, late = results
    assert ok.ok and ok.returncode == 0
    assert [x["name"] for x in ok.lines] == ["speedup", "plain"]
    assert ok.lines[0] == {"name": "speedup", "value": 1.5, "unit": "x", "baseline": "other", "raw": {"t": [1, 2]},
                           "quick": True, "suite": "ok"}
    assert "starting" in ok.stderr_tail and "some text that is not a result" in ok.stderr_tail
    assert not fail.ok and fail.returncode == 3
    assert "RuntimeError: the bench broke" in fail.stderr_tail
    assert [x["name"] for x in fail.lines] == ["partial", "bench_suite_failed"]
    failed = fail.lines[-1]
    assert failed["suite"] == "fail" and failed["value"] == 3 and "the bench broke" in failed["stderr_tail"]
    assert late.ok and late.lines[0]["name"] == "late_speedup"       # the script after the failure ran
    assert [x["name"] for x in seen] == ["speedup", "plain", "partial", "bench_suite_failed", "late_speedup", "plain"]


def test_missing_script_and_timeout_are_failures(scripts):
    missing = runner.run_suite("nope", scripts)
    assert not missing.ok and "no script" in missing.error
    slow = runner.run_suite("sleepy", scripts, timeout=1)
    assert not slow.ok and slow.returncode is None and "timed out" in slow.error and slow.seconds < 30


def test_suite_names(scripts):
    assert runner.resolve_suites(None, scripts) == list(runner.DEFAULT_SUITES)
    assert runner.resolve_suites("late, ok,ok", scripts) == ["late", "ok"]
    with pytest.raises(runner.BenchError, match="unknown suite"):
        runner.resolve_suites("ok,modle", scripts)
    assert runner.find_scripts_dir() == ROOT / "scripts"             # this source checkout
    assert {"model", "sampler", "train", "data"} <= set(runner.available_suites(ROOT / "scripts"))


def test_cli_json_out_and_exit_status(scripts, tmp_path, capsys):
    out = tmp_path / "all.jsonl"
    rc = cli.main(["bench", "--scripts-dir", str(scripts), "--only", "ok,fail", "--json", "--out", str(out)])
    assert rc == 1
    cap = capsys.readouterr()
    lines = [json.loads(s) for s in cap.out.splitlines()]         # stdout: JSON lines only
    assert [(x["suite"], x["name"]) for x in lines] == [("ok", "speedup"), ("ok", "plain"), ("fail", "partial"),
                                                        ("fail", "bench_suite_failed")]
    assert [json.loads(s) for s in out.read_text().splitlines()] == lines
    assert "fail FAILED (exit status 3)" in cap.err and "the bench broke" in cap.err


def test_cli_table_and_readme(scripts, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- bench:start -->\n<!-- bench:end -->\nend\n")
    assert cli.main(["bench", "--scripts-dir", str(scripts), "--only", "ok", "--readme", str(readme)]) == 0
    cap = capsys.readouterr()
    assert "speedup" in cap.out and "vs other" in cap.out
    assert "full run, suites: ok" in readme.read_text() and readme.read_text().endswith("<!-- bench:end -->\nend\n")


def test_cli_errors_before_running(scripts, tmp_path, capsys):
    assert cli.main(["bench", "--scripts-dir", str(scripts), "--only", "bogus"]) == 2
    (tmp_path / "R.md").write_text("no markers\n")
    assert cli.main(["bench", "--scripts-dir", str(scripts), "--only", "sleepy", "--readme",
                     str(tmp_path / "R.md")]) == 2                    # would sleep 60 s if it ran
    err = capsys.readouterr().err
    assert "unknown suite" in err and "<!-- bench:start --> once" in err


def test_real_quick_data_bench():
    """``vital bench --only data --quick --json`` end to end (about 10 s)."""
    proc = subprocess.run([sys.executable, "-m", "vital_jax.cli", "bench", "--only", "data", "--quick", "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(s) for s in proc.stdout.splitlines()]
    by = {x["name"]: x for x in lines}
    assert all(x["suite"] == "data" for x in lines)
    # the schema every line has, whether or not the script wrote a baseline / raw timings
    assert all({"name", "value", "unit", "baseline", "raw"} <= set(x) for x in lines)
    head = by["pipeline_examples_per_s"]
    assert head["value"] > 0 and head["unit"] == "examples/s" and head["baseline"]
    assert head["raw"]["serial_decode_videos_per_s"] > 0 and head["speedup_vs_serial_decode"] > 0
