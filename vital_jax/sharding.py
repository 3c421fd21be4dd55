"""Mesh construction and the one table that maps logical axis names to mesh axes.

Every parameter carries a tuple of logical axis names (``nnx.Param(..., logical_axes=(...))``);
activations get constraints at a few named points with :func:`constrain`. The rules below are the
only place where logical names meet the physical mesh axes ``data``, ``fsdp`` and ``tensor``.

A mesh axis that does not divide a dimension is dropped for that dimension (the tensor stays
replicated along it) so tiny test models with, say, one KV head still run on a (2, 2, 2) mesh.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axis, tuple of mesh axes, or None (replicated).
LOGICAL_RULES: dict[str, Any] = {
    # activations
    "batch": ("data", "fsdp"),
    "seq": None,
    "act_embed": None,
    "act_heads": "tensor",
    "act_kv_heads": "tensor",
    "act_mlp": "tensor",
    "act_vocab": "tensor",
    "cache_seq": None,
    # text parameters
    "vocab": "tensor",
    "embed": "fsdp",
    "mlp": "tensor",
    "heads": "tensor",
    "kv_heads": "tensor",
    "head_dim": None,
    "layers": None,
    "norm": None,
    # vision parameters
    "vis_patch": None,
    "vis_embed": "fsdp",
    "vis_mlp": "tensor",
    "vis_qkv": "tensor",
    "vis_heads": "tensor",
    "vis_merge": "tensor",
}


def make_mesh(
    data: int = 1,
    fsdp: int = 1,
    tensor: int = 1,
    *,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A (data, fsdp, tensor) mesh with Auto axes (GSPMD-style propagation).

    ``-1`` in one axis takes all remaining devices.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = [data, fsdp, tensor]
    if shape.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got data={data} fsdp={fsdp} tensor={tensor}")
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1]))
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices are not divisible by {known} (mesh {shape})")
        shape[shape.index(-1)] = len(devices) // known
    n = int(np.prod(shape))
    if n != len(devices):
        raise ValueError(
            f"mesh data={shape[0]} fsdp={shape[1]} tensor={shape[2]} needs {n} devices, "
            f"{len(devices)} are available"
        )
    arr = np.asarray(devices, dtype=object).reshape(shape)
    return Mesh(arr, MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def _mesh_axis_sizes(mesh) -> dict[str, int]:
    return dict(zip(mesh.axis_names, mesh.axis_sizes if hasattr(mesh, "axis_sizes") else mesh.devices.shape))


def logical_to_spec(
    logical_axes: Sequence[str | None] | None,
    shape: Sequence[int] | None = None,
    mesh=None,
    rules: Mapping[str, Any] | None = None,
) -> P:
    """PartitionSpec for a tensor with the given logical axes.

    With ``shape`` and ``mesh`` given, mesh axes that do not divide the dimension, or that an
    earlier dimension already uses, are dropped.
    """
    if logical_axes is None:
        return P()
    rules = LOGICAL_RULES if rules is None else rules
    sizes = _mesh_axis_sizes(mesh) if mesh is not None else None
    used: set[str] = set()
    out = []
    for i, name in enumerate(logical_axes):
        if name is None:
            out.append(None)
            continue
        if name not in rules:
            raise KeyError(f"logical axis {name!r} has no sharding rule (known: {sorted(rules)})")
        target = rules[name]
        axes = () if target is None else ((target,) if isinstance(target, str) else tuple(target))
        kept = []
        dim = None if shape is None else shape[i]
        for ax in axes:
            if ax in used:
                continue
            if sizes is not None:
                if ax not in sizes:
                    continue
                size = sizes[ax]
                prod = size * int(np.prod([sizes[a] for a in kept])) if kept else size
                if dim is not None and dim % prod:
                    continue
            kept.append(ax)
        used.update(kept)
        out.append(None if not kept else (kept[0] if len(kept) == 1 else tuple(kept)))
    return P(*out)


def named_sharding(mesh: Mesh, logical_axes, shape=None, rules=None) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(logical_axes, shape, mesh, rules))


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """Sharding constraint on an activation, a no-op when no mesh is set (``jax.set_mesh``)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    spec = logical_to_spec(logical_axes, x.shape, mesh)
    return jax.lax.with_sharding_constraint(x, spec)


def tree_shardings(mesh: Mesh, abstract_state, rules=None):
    """NamedShardings for an NNX state (or any pytree of ``nnx.Variable``) from its metadata.

    Leaves without ``logical_axes`` metadata are replicated.
    """
    from flax import nnx

    def one(v):
        if isinstance(v, nnx.Variable):
            axes = v.get_metadata().get("logical_axes")
            return v.replace(named_sharding(mesh, axes, v.value.shape, rules))
        return NamedSharding(mesh, P())

    return jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))
