"""The README results table: written between the markers only, from hand-made JSON lines."""

import pytest

from vital_jax.bench import readme_table as rt

META = {"machine": {"cpu": "Test CPU @ 2.0GHz", "cores": 2, "ram_gib": 23.4, "load_avg_1min": 3.5}, "date": "2030-01-02 03:04 UTC",
        "commit": "abc1234", "quick": True, "suites": ["model", "sampler", "train", "data"]}

LINES = [
    {"name": "parity", "value": 1e-5, "unit": "max |logit diff|", "suite": "model"},
    {"name": "fwd_bwd_speedup_vs_torch", "value": 1.234567, "unit": "x", "baseline": "transformers eager fwd+bwd",
     "raw": {"ours": [1.0]}, "suite": "model"},
    {"name": "train_step_mfu", "value": 0.41, "unit": "fraction", "baseline": "GEMM peak | this run",
     "step_time_s": 3.2, "tokens_per_s": 480.0, "achieved_gflops": 60.0, "peak_gflops": 150.0, "compile_s": 20.0,
     "suite": "train"},
    {"name": "rl_step_time_mid", "value": 12.5, "unit": "s", "rollout_s": 5.0, "reward_s": 0.001, "update_s": 7.4,
     "rollout_tokens_per_s": 100.0, "model": {"params": 23_000_000}, "compiles_after_first_step": 2,
     "steady_step_s": 10.0, "suite": "train"},
    {"name": "pipeline_examples_per_s", "value": 60.0, "unit": "examples/s", "baseline": "serial decode",
     "speedup_vs_serial_decode": 2.0, "suite": "data"},
    {"name": "bench_suite_failed", "value": 1, "unit": "exit code", "suite": "sampler", "error": "exit status 1",
     "stderr_tail": "Traceback ...\nValueError: boom"},
]

README = f"""# title

intro | with a pipe

{rt.START}
old table
{rt.END}

## after
tail text
"""


def test_table_rows_and_header():
    table = rt.render_table(LINES, META)
    assert "Test CPU @ 2.0GHz (2 cores, 23.4 GiB RAM, load average 3.5 at the start)" in table and "2030-01-02 03:04 UTC" in table
    assert "`abc1234`" in table and "quick run" in table and "vital bench --quick" in table
    rows = [r for r in table.splitlines() if r.startswith(("| `", "| suite"))]
    names = [r.split("|")[1].strip() for r in rows]
    # headline order; non-headline lines (parity) left out; missing model/train headlines flagged
    assert names.index("`fwd_bwd_speedup_vs_torch`") < names.index("`train_step_mfu`") < names.index(
        "`rl_step_time_mid`") < names.index("`pipeline_examples_per_s`")
    assert "`parity`" not in names
    row = dict(zip(names, rows))
    assert "| 1.23 | x | transformers eager fwd+bwd |" in row["`fwd_bwd_speedup_vs_torch`"]
    assert "GEMM peak \\| this run" in row["`train_step_mfu`"]      # pipes escaped
    assert "3.20 s/step" in row["`train_step_mfu`"] and "60 of 150 GFLOP/s" in row["`train_step_mfu`"]
    assert "rollout 5.00 s / reward 0.00 s / update 7.40 s" in row["`rl_step_time_mid`"]
    assert "23.0M params" in row["`rl_step_time_mid`"] and "10.00 s/step without those" in row["`rl_step_time_mid`"]
    assert "2.00x the serial decode rate" in row["`pipeline_examples_per_s`"]
    assert "not reported" in row["`fwd_speedup_vs_torch`"]         # model ran, metric missing
    # the failed suite: one row, its metrics not flagged as missing one by one
    assert "ValueError: boom" in row["suite `sampler`"] and "failed" in row["suite `sampler`"]
    assert "`decode_speedup_vs_hf_generate`" not in names


def test_update_readme_replaces_only_between_markers(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(README)
    table = rt.update_readme(path, LINES, META)
    text = path.read_text()
    before, after = README.split(rt.START)[0], README.split(rt.END)[1]
    assert text.startswith(before + rt.START + "\n") and text.endswith(rt.END + after)
    assert "old table" not in text and table in text
    # idempotent: the same lines give the same file
    rt.update_readme(path, LINES, META)
    assert path.read_text() == text


@pytest.mark.parametrize("text,msg", [
    ("# no markers\n", "once, found it 0 times"),
    (f"{rt.START}\nx\n", f"{rt.END} once, found it 0 times"),
    (f"{rt.START}\n{rt.END}\n{rt.END}\n", "found it 2 times"),
    (f"{rt.END}\n{rt.START}\n", "comes before"),
])
def test_markers_missing_or_wrong_is_a_clear_error(tmp_path, text, msg):
    path = tmp_path / "README.md"
    path.write_text(text)
    with pytest.raises(rt.ReadmeError, match=msg) as e:
        rt.update_readme(path, LINES, META)
    assert str(path) in str(e.value)
    assert path.read_text() == text                                  # left untouched
    with pytest.raises(rt.ReadmeError):
        rt.check_markers(path)


def test_repo_readme_has_the_markers():
    from pathlib import Path

    rt.check_markers(Path(__file__).resolve().parents[2] / "README.md")


def test_machine_info_and_meta(tmp_path):
    m = rt.machine_info()
    assert m["cpu"] and m["cores"] >= 1
    meta = rt.run_meta(quick=False, suites=["data"], root=tmp_path)   # not a git checkout: no commit
    assert meta["commit"] is None and meta["suites"] == ["data"] and meta["date"].endswith("UTC")
    assert "full run" in rt.render_table([], meta)
