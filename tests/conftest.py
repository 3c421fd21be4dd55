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


@pytest.fixture(scope="session")
def devices8():
    devs = jax.devices()
    assert len(devs) == 8, f"expected 8 fake CPU devices, got {len(devs)}"
    return devs


@pytest.fixture
def mesh222(devices8):
    from vital_jax.sharding import make_mesh

    return make_mesh(2, 2, 2)
