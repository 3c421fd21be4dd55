"""The performance suite behind ``vital bench``: runs ``scripts/bench_*.py`` of a source checkout,
collects their JSON lines, and regenerates the README's results table.

- :mod:`vital_jax.bench.runner`: one subprocess per script, JSON lines collected, failures reported;
- :mod:`vital_jax.bench.readme_table`: the results table (machine, date, commit, headline metrics)
  written between ``<!-- bench:start -->`` and ``<!-- bench:end -->``.
"""
