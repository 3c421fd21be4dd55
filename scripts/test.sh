#!/usr/bin/env bash
# Fresh-machine test command: project-local venv, install with test extras, run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# torch==2.13.0 is pinned in the [test] extra (CPU build on this machine kind's disk).
.venv/bin/python -m pip install -q -e '.[test]'
# Two workers (VITAL_TEST_WORKERS): most tests wait on single-threaded XLA compiles, so two run
# side by side on 2 cores; each worker has its own 8 fake CPU devices. Whole modules per worker
# (loadfile: module fixtures such as trained models are built once), heaviest modules first
# (tests/conftest.py).
exec .venv/bin/python -m pytest -n "${VITAL_TEST_WORKERS:-2}" --dist loadfile "$@"
