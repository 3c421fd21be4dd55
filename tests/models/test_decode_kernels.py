"""`runtime.decode_attention`: JAX's Pallas decode kernels (GPU split-K decode, TPU paged
attention; interpret mode on CPU) equal the masked-softmax reference on one query per row over a
KV cache (GQA, per-row lengths from 1 slot to the whole cache, a cache length no power of two),
under a (2, 2, 2) mesh as unsharded, and through the sampler's decode steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models.test_blockwise_attention import _qkv
from vital_jax.models.qwen2_5_vl import ModelConfig
from vital_jax.models.qwen2_5_vl.config import ConfigError
from vital_jax.models.qwen2_5_vl.decode_kernels import DECODE_KERNELS
from vital_jax.models.qwen2_5_vl.modeling import xla_attention

# TPU interpret mode rounds the kernel's matmul inputs to bfloat16 (a TPU's default precision)
TOLERANCE = {"gpu_decode": 2e-5, "tpu_paged": 2e-2}


def _decode_case(B=3, H=4, K=2, S=160, d=16, seed=0):
    q, k, v = _qkv(np.random.default_rng(seed), B, 1, H, K, d, S=S)
    lengths = jnp.asarray([1, 37, S][:B] + [S // 2] * max(0, B - 3), jnp.int32)
    return q[:, 0], k, v, lengths


def _reference(q, k, v, lengths):
    mask = jnp.arange(k.shape[2])[None, None, :] < lengths[:, None, None]           # [B, 1, S]
    return xla_attention(q[:, None], k, v, mask, q.shape[-1] ** -0.5)[:, 0]


@pytest.mark.parametrize("name", ["gpu_decode", "tpu_paged"])
def test_decode_kernel_equals_reference(name):
    q, k, v, lengths = _decode_case()
    want = _reference(q, k, v, lengths)
    got = jax.jit(DECODE_KERNELS.get(name), static_argnums=4)(q, k, v, lengths, q.shape[-1] ** -0.5)
    np.testing.assert_allclose(got, want, atol=TOLERANCE[name], rtol=TOLERANCE[name])
    # the lengths are honoured: one slot more on every row moves the output well past the tolerance
    off = _reference(q, k, v, lengths + 1)
    assert float(jnp.max(jnp.abs(off - got))) > 20 * TOLERANCE[name]


@pytest.mark.parametrize("name", ["gpu_decode", "tpu_paged"])
def test_sharded_over_rows_and_heads_equals_unsharded(name, mesh222):
    q, k, v, lengths = _decode_case(B=4, H=4, K=2, S=64)
    f = jax.jit(DECODE_KERNELS.get(name), static_argnums=4)
    want = f(q, k, v, lengths, 0.25)
    with jax.set_mesh(mesh222):
        rows = jax.NamedSharding(mesh222, jax.P(("data", "fsdp")))
        qs = jax.device_put(q, jax.NamedSharding(mesh222, jax.P(("data", "fsdp"), "tensor", None)))
        cache = jax.NamedSharding(mesh222, jax.P(("data", "fsdp"), "tensor", None, None))
        got = f(qs, jax.device_put(k, cache), jax.device_put(v, cache), jax.device_put(lengths, rows), 0.25)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_unknown_name_names_the_field_and_the_known_ones():
    with pytest.raises(ConfigError, match=r"runtime\.decode_attention: .*'paged'.*gpu_decode.*tpu_paged"):
        ModelConfig.tiny().with_runtime(decode_attention="paged")
    assert ModelConfig.tiny().with_runtime(decode_attention="GPU-decode").runtime.decode_attention == "GPU-decode"


@pytest.mark.parametrize("name", ["gpu_decode", "tpu_paged"])
def test_bfloat16_in_bfloat16_out(name):
    q, k, v, lengths = _decode_case()
    bf = [x.astype(jnp.bfloat16) for x in (q, k, v)]
    got = jax.jit(DECODE_KERNELS.get(name), static_argnums=4)(*bf, lengths, q.shape[-1] ** -0.5)
    assert got.dtype == jnp.bfloat16      # the sampler's layer scan carries the compute dtype
    np.testing.assert_allclose(got.astype(jnp.float32), _reference(q, k, v, lengths), atol=3e-2)
