import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from vital_jax.sharding import constrain, logical_to_spec, make_mesh
from vital_jax.testing import CompileCounter


def test_fake_devices_and_mesh(devices8):
    mesh = make_mesh(2, 2, 2)
    assert mesh.shape == {"data": 2, "fsdp": 2, "tensor": 2}
    assert make_mesh(1, -1, 2).shape["fsdp"] == 4
    with pytest.raises(ValueError, match="needs 12 devices"):
        make_mesh(3, 2, 2)


def test_logical_rules_drop_non_dividing_axes(mesh222):
    assert logical_to_spec(("embed", "mlp"), (8, 6), mesh222) == P("fsdp", "tensor")
    assert logical_to_spec(("batch", None), (4, 3), mesh222) == P(("data", "fsdp"), None)
    # batch 2 is divisible by data only
    assert logical_to_spec(("batch",), (2,), mesh222) == P("data")
    assert logical_to_spec(("kv_heads",), (1,), mesh222) == P(None)
    with pytest.raises(KeyError, match="no sharding rule"):
        logical_to_spec(("nonsense",))


def test_constrain_under_mesh_and_compile_counter(mesh222):
    f = jax.jit(lambda x: constrain(x * 2, ("batch", "act_mlp")))
    x = jnp.arange(32.0).reshape(8, 4)
    x1 = x + 1
    with jax.set_mesh(mesh222):
        with CompileCounter() as warm:
            y = f(x)
        with CompileCounter() as cc:
            y2 = f(x1)
    assert warm.count >= 1
    assert cc.count == 0
    np.testing.assert_allclose(np.asarray(y), np.asarray(x) * 2)
    assert isinstance(y.sharding, NamedSharding)
    assert y.sharding.spec == P(("data", "fsdp"), "tensor")
    assert not jnp.allclose(y, y2)
