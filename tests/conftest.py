"""Suite-wide setup: 8 fake CPU devices (before JAX starts), offline hub, absl flags parsed."""

import os

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


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """Runs of one module that compile the same programs share a persistent XLA cache, for that
    module only (restored afterwards, so compile-counting tests elsewhere see normal compiles)."""
    old = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    yield
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])
