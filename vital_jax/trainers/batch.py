"""Host side of a train step: ragged sequences -> one static-shape batch pytree.

A :class:`Sequence_` is what both trainers produce per row: token ids, a token-aligned loss mask
(1 = a token the policy produced / the SFT target; 0 = prompt, tool observation, padding), the
visual inputs whose placeholders appear in the ids (in order), and for RL the advantage and the
sampler's log-probs. :func:`build_batch` pads rows to one token bucket and one vision bucket and
stacks them as ``[M, b, ...]`` (M micro-batches of b rows), so a run sees only
``len(token_buckets) x len(vision_buckets)`` shapes.

Vision inputs are kept **per row** (``[M, b, N, patch_dim]``) and encoded with ``vmap``: the
tower's work then shards with the batch like everything else, instead of every data shard
encoding the whole batch's clips. ``vis_index[b, t]`` says which of row b's merged visual tokens
sits at position t (-1: a text token).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from vital_jax.models.families import package_of
from vital_jax.errors import VitalError


class BatchError(VitalError, ValueError):
    """A row that does not fit the configured buckets (names the row and the limit)."""


@dataclasses.dataclass
class Sequence_:
    ids: Sequence[int]
    loss_mask: Sequence[int]
    visuals: Sequence[Any] = ()          # VisualInput-like: pixel_values, grid_thw, second_per_grid_t, kind
    advantage: float = 0.0
    group: int = 0                       # RL: prompt group (rows of a group are contiguous)
    generated: Sequence[int] | None = None  # 1 on tokens the policy sampled (default: loss_mask)
    logprobs: Sequence[float] | None = None  # RL: the sampler's log-prob of each token (0 off policy tokens)


def _bucket(n: int, buckets: Sequence[int], what: str, row: int) -> int:
    for b in sorted(buckets):
        if n <= b:
            return b
    raise BatchError(f"row {row}: {n} {what} exceed the largest bucket {max(buckets)}")


def build_batch(cfg, rows: Sequence[Sequence_], *, micro_batches: int,
                token_buckets: Sequence[int], vision_buckets: Sequence[int],
                with_vision: bool = True, token_len: int | None = None,
                patch_len: int | None = None) -> dict[str, Any]:
    """NumPy batch pytree with leading ``[M, b]`` dims (see the module docstring), for a model
    config ``cfg`` of any family (its positions and tower layout, :mod:`vital_jax.models.families`).

    Keys: ``input_ids, attention_mask, position_ids [M, 3, b, L], loss_mask (float32),
    vis_index, advantages [M, b]``, ``vision`` (the family's ``VisionArrays`` fields as a dict,
    ``[M, b, N, ...]``) when any row has a visual input, and ``sampler_logp`` ``[M, b, L]``
    when every row carries the sampler's log-probs (RL).
    """
    n = len(rows)
    if n == 0 or n % micro_batches:
        raise BatchError(f"{n} rows cannot split into {micro_batches} equal micro-batches")
    lengths = [len(r.ids) for r in rows]
    L = token_len or _bucket(max(lengths), token_buckets, "tokens", int(np.argmax(lengths)))
    if max(len(r.ids) for r in rows) > L:
        raise BatchError(f"a row has {max(len(r.ids) for r in rows)} tokens > token_len {L}")
    v = cfg.vision
    ids = np.full((n, L), cfg.pad_token_id, np.int32)
    attn = np.zeros((n, L), np.int32)
    loss = np.zeros((n, L), np.float32)
    pos = np.ones((3, n, L), np.int32)
    vis_index = np.full((n, L), -1, np.int32)
    adv = np.zeros((n,), np.float32)
    sampler_logp = np.zeros((n, L), np.float32) if all(r.logprobs is not None for r in rows) else None
    patches = [int(sum(np.prod(np.asarray(x.grid_thw)) for x in r.visuals)) for r in rows]
    use_vision = with_vision and max(patches) > 0
    if patch_len is not None:
        use_vision = with_vision and patch_len > 0
    N = (patch_len or _bucket(max(patches), vision_buckets, "vision patches", int(np.argmax(patches)))) if use_vision else 0
    fam = package_of(cfg)
    vis_rows = []   # per row, the family's tower arrays (VisionArrays) padded to N patches
    vis_ids = (cfg.image_token_id, cfg.video_token_id)
    special = vis_ids + (cfg.vision_start_token_id, cfg.vision_end_token_id)
    for i, r in enumerate(rows):
        k = len(r.ids)
        if len(r.loss_mask) != k:
            raise BatchError(f"row {i}: loss_mask has {len(r.loss_mask)} entries for {k} tokens")
        row_ids = np.asarray(r.ids, np.int32)
        ids[i, :k], attn[i, :k], loss[i, :k] = row_ids, 1, np.asarray(r.loss_mask, np.float32)
        adv[i] = r.advantage
        if sampler_logp is not None:
            if len(r.logprobs) != k:
                raise BatchError(f"row {i}: {len(r.logprobs)} sampler log-probs for {k} tokens")
            sampler_logp[i, :k] = np.asarray(r.logprobs, np.float32)
        # a policy can *generate* vision special tokens; the sampler embedded those as text, so
        # only tokens the host inserted are placeholders or drive M-RoPE positions
        gen = np.asarray(r.loss_mask if r.generated is None else r.generated) > 0
        layout_ids = np.where(np.isin(row_ids, special) & gen, cfg.pad_token_id, row_ids)
        placeholders = np.isin(layout_ids, vis_ids)
        expect = sum(int(np.prod(np.asarray(x.grid_thw))) // v.merge_unit for x in r.visuals)
        if int(placeholders.sum()) != expect:
            raise BatchError(f"row {i}: {int(placeholders.sum())} visual placeholder tokens, but its "
                             f"{len(r.visuals)} visual input(s) have {expect} merged tokens")
        pos[:, i, :k] = fam.visual_positions(cfg, layout_ids, r.visuals)[0] if r.visuals else np.arange(k)[None]
        if use_vision:
            if r.visuals:
                vis_index[i, :k][placeholders] = np.arange(expect)
            grids = np.asarray([np.asarray(x.grid_thw).reshape(3) for x in r.visuals], np.int64).reshape(-1, 3)
            pix = np.concatenate([np.asarray(x.pixel_values, np.float32) for x in r.visuals]) if r.visuals \
                else np.zeros((0, v.patch_dim), np.float32)
            vis_rows.append(fam.vision_arrays(cfg, pix, grids, pad_to=N))
    vis = {f: np.stack([np.asarray(getattr(a, f)) for a in vis_rows]) for f in vis_rows[0]._fields} \
        if vis_rows else None

    M, b = micro_batches, n // micro_batches

    def split(x, axis=0):
        x = np.moveaxis(x, axis, 0)
        x = x.reshape((M, b) + x.shape[1:])
        return np.moveaxis(x, 1, axis + 1) if axis else x

    out = {"input_ids": split(ids), "attention_mask": split(attn), "loss_mask": split(loss),
           "position_ids": split(pos, axis=1), "vis_index": split(vis_index), "advantages": split(adv)}
    if vis is not None:
        out["vision"] = {k: split(x) for k, x in vis.items()}
    if sampler_logp is not None:
        out["sampler_logp"] = split(sampler_logp)
    return out


# logical axes of each batch leaf (leading micro-batch dim replicated, rows over the batch axes)
BATCH_AXES: dict[str, tuple] = {
    "input_ids": (None, "batch", None), "attention_mask": (None, "batch", None),
    "loss_mask": (None, "batch", None), "position_ids": (None, None, "batch", None),
    "vis_index": (None, "batch", None), "advantages": (None, "batch"),
    "ref_logp": (None, "batch", None), "old_logp": (None, "batch", None),
    "sampler_logp": (None, "batch", None),
}


def vision_axes(ndim: int) -> tuple:
    """Logical axes of a ``vision`` leaf (any family's tower arrays, ``[M, b, ...]``): rows over
    the batch axes, the rest replicated."""
    return (None, "batch") + (None,) * (ndim - 2)


def batch_shardings(mesh, batch: dict[str, Any]):
    """NamedShardings for a batch pytree (rows over ``data x fsdp``); leaves may be arrays or
    ShapeDtypeStructs of the *global* batch."""
    from vital_jax.sharding import named_sharding

    out = {}
    for k, x in batch.items():
        if k == "vision":
            out[k] = {n: named_sharding(mesh, vision_axes(np.ndim(a)), np.shape(a)) for n, a in x.items()}
        else:
            out[k] = named_sharding(mesh, BATCH_AXES[k], np.shape(x))
    return out


# --------------------------------------------------------------------------- several processes


def global_pads(token_buckets: Sequence[int], vision_buckets: Sequence[int], rows: Sequence[Sequence_]) -> dict:
    """``build_batch`` keyword arguments that make every process pick the same buckets (each
    builds only its own rows); empty with one process."""
    import jax

    if jax.process_count() == 1:
        return {}
    from jax.experimental import multihost_utils

    tok = max(len(r.ids) for r in rows)
    pat = max(int(sum(np.prod(np.asarray(v.grid_thw)) for v in r.visuals)) for r in rows)
    tok, pat = np.max(multihost_utils.process_allgather(np.asarray([tok, pat])), axis=0)
    return {"token_len": _bucket(int(tok), token_buckets, "tokens", 0),
            "patch_len": _bucket(int(pat), vision_buckets, "vision patches", 0) if pat else 0}


def global_shapes(np_batch: dict) -> dict:
    """ShapeDtypeStructs of the global batch (this process's rows x process count), for the
    sharding rules."""
    import jax

    n = jax.process_count()

    def g(path, x):
        axis = 2 if getattr(path[0], "key", None) == "position_ids" else 1
        shape = list(np.shape(x))
        shape[axis] *= n
        return jax.ShapeDtypeStruct(tuple(shape), x.dtype)

    return jax.tree_util.tree_map_with_path(g, np_batch)
