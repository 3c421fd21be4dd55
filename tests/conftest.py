"""Suite-wide setup: 8 fake CPU devices (before JAX starts), offline hub, absl flags parsed."""

import atexit
import os
import shutil
import tempfile

# One persistent XLA compilation cache for the whole run: both xdist workers and the processes
# tests start inherit the variable, and load a program another test already compiled instead of
# compiling it again (the suite's CPU time fell ~7 %, AMD EPYC, 2026-12-07). CompileCounter counts
# the cache's hits as programs built, so the no-recompile checks keep their meaning. The process
# that makes the folder (the xdist controller) removes it at exit.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _xla_cache = tempfile.mkdtemp(prefix="vital-test-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _xla_cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    atexit.register(shutil.rmtree, _xla_cache, ignore_errors=True)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from vital_jax.testing import request_fake_cpu_devices  # noqa: E402

request_fake_cpu_devices(8)

from vital_jax.host_alloc import keep_freed_memory  # noqa: E402

keep_freed_memory()   # XLA CPU's per-run temp blocks reused instead of page-faulted every call

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", False)


# The suite runs as whole modules per worker (scripts/test.sh: --dist loadfile), so a module's
# fixtures are built once, and heaviest first, so the two workers finish close together (a long
# module started last would leave the other worker idle). Order by measured module time (AMD EPYC,
# 2 workers, 2026-12-07: test_learning ~460 s, test_multihost ~225 s, the rest below 190 s).
HEAVY_MODULES_FIRST = (
    "tests/trainers/test_learning.py",
    "tests/trainers/test_multihost.py",
    "tests/trainers/test_train_step.py",
    "tests/trainers/test_sft_resume.py",
    "tests/trainers/test_rl.py",
    "tests/models/test_blockwise_attention.py",
    "tests/trainers/test_qwen3_training.py",
    "tests/apps/test_demo.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(HEAVY_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))   # stable: the rest keep order


@pytest.fixture(scope="session")
def devices8():
    devs = jax.devices()
    assert len(devs) == 8, f"expected 8 fake CPU devices, got {len(devs)}"
    return devs


@pytest.fixture
def mesh222(devices8):
    from vital_jax.sharding import make_mesh

    return make_mesh(2, 2, 2)
