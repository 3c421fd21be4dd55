#!/usr/bin/env bash
# Fresh-machine main job: install into .venv and run `vital demo` on the embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e .
if ! .venv/bin/vital --help 2>/dev/null | grep -q ' demo '; then
  echo "vital demo does not exist yet (it comes with the trainer issue)." >&2
  exit 1
fi
exec .venv/bin/vital demo "$@"
