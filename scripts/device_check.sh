#!/usr/bin/env bash
# One check on a machine with an accelerator (GPU or TPU): parity of the tiny model against the
# CPU reference (f32 and bf16, every attention implementation the device runs), then bf16
# fwd+bwd MFU, decode tokens/s and the tool-turn append vs re-prefill of a ~250M-parameter model.
# JSON lines on stdout (scripts/device_check.py says what each means). Bounded to 7.5 minutes;
# leaves nothing running.
#
#   bash scripts/device_check.sh            # on the accelerator machine, from the repo root
#   bash scripts/device_check.sh --smoke    # toy sizes: checks the script itself on a CPU
#
# What it installs: nothing from the network (such machines may have none). It uses the
# machine's own python3 with its JAX (CUDA or TPU build), flax, optax, numpy and tokenizers, and
# this checkout on PYTHONPATH; the check imports no video, data or config library. Wheels for
# anything missing can be put in .whl/ (pip download ... -d .whl): they are installed into
# /tmp/vital_site first, without touching the system.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/vital_site .whl/*.whl
  export PYTHONPATH="/tmp/vital_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false TOKENIZERS_PARALLELISM=false
if [ "${1:-}" != "--smoke" ]; then
  "$PY" - <<'EOF'
import jax
if jax.default_backend() == "cpu":
    raise SystemExit("device_check: JAX sees no accelerator here (backend cpu); use --smoke to check the script")
EOF
fi
# its own process group, killed whole on timeout or exit: nothing is left running
setsid timeout --kill-after=10 450 "$PY" scripts/device_check.py "$@" &
pid=$!
trap 'kill -- -$pid 2>/dev/null || true' EXIT INT TERM
wait $pid
