"""Host side of the sampler: buckets, positions, vision layout, and the jitted calls.

:class:`Sampler` owns the compiled functions for one ``(model config, SamplerConfig)`` and turns
ragged per-row requests into the static shapes of :mod:`vital_jax.rollout.sampler_core`:

- :meth:`Sampler.extend` appends a :class:`Segment` (token ids + the visual items whose
  placeholders they contain) to each row at the row's own offset: M-RoPE positions by the
  original rule relative to the row's next position, vision encoded once per call for all rows,
  chunks padded to the smallest bucket that holds them (longer segments run as several chunks);
- :meth:`Sampler.prefill` = a fresh state + ``extend``;
- :meth:`Sampler.decode` runs up to ``decode_steps`` tokens per row on device.

Attention reads a static window of the cache (``SamplerConfig.kv_buckets``), chosen per call as
the smallest bucket that holds every slot the call writes, so a short context costs a short
context's attention even in a large sampler. After :meth:`Sampler.warmup` nothing compiles again:
every device call is one of :meth:`SamplerConfig.programs` (a chunk bucket or decode, times a KV
bucket) or one of ``len(vision_buckets)`` vision shapes.
Host code never runs ``jnp`` ops on the hot path (that would compile tiny programs); results
come back with ``jax.device_get``. Any model family serves (its vision layout, positions and
features come from its package, :mod:`vital_jax.models.families`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from vital_jax.models.families import package_of
from vital_jax.models.qwen2_5_vl.modeling import KVCache
from vital_jax.rollout import sampler_core as core
from vital_jax.errors import VitalError


class SamplerError(VitalError, ValueError):
    """A request does not fit the sampler (too long, too many visual tokens, bad options)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplerConfig:
    """Static shapes of the sampler (each distinct value is one compiled program).

    batch_size: rows decoded together.
    cache_length: tokens a row may hold (context limit); the cache has ``max(chunk_buckets)``
      extra slack slots so padded chunk writes never clamp: ``slots = cache_length + slack``.
    chunk_buckets: token counts a chunk is padded to (prefill and append share them).
    kv_buckets: cache slots attention reads (a static window ``cache[..., :kv, :]``). Each call
      takes the smallest bucket holding every slot it must write: extend ``length[b] + chunk``
      over the rows it appends to, decode ``length[b] + min(decode_steps, budget[b] + 1, room)``
      over all rows (:func:`core.decode_need`). Sorted and deduplicated; each must be in
      ``[1, slots]``; ``slots`` is added automatically when the largest is smaller (the window
      that always fits). ``None`` (default) = every ``512 * 4**k <= 3/4 * slots``, then
      ``slots``: (512, 2048, 6144) for the default 4096 + 2048 slots, (512, 2048, 8192, 13088)
      for 8704 + 4384, one ``slots`` window for 682 slots or fewer. ``()`` = only ``slots``
      (attention over the whole allocation, as before buckets existed).
      Trade-off: every (chunk bucket, kv bucket) pair that some row length can reach, and every
      reachable (decode, kv bucket), is one compiled program (:meth:`SamplerConfig.programs`; the
      default config compiles 11 extend + 3 decode programs instead of 4 + 1), while a call's
      attention cost (and decode's KV bytes per step) is proportional to its window: with the
      default factor of 4, at most 4x the slots it needs above 512 (up to 16/3x just below
      ``slots``, where a geometric bucket within 3/4 of ``slots`` would not be worth its
      compiles). Windows smaller than the allocation cost one copy of the window per call
      (extend copies it out and puts back only the chunk; decode copies it in and out once per
      call, not per step) and a transient buffer of that size.
    vision_buckets: patch counts the vision tower input is padded to (multiples of 4).
    max_visual_tokens: merged visual tokens one extend call may carry (all rows together).
    decode_steps: tokens per decode call (the ``while_loop`` bound).
    stop_seq_len / max_stop_seqs / max_stop_ids: capacity of the stop tables.
    max_forced_tokens: capacity of the forced-token table (scripted policies; 1 = unused).
    """

    batch_size: int = 1
    cache_length: int = 4096
    chunk_buckets: tuple[int, ...] = (32, 128, 512, 2048)
    vision_buckets: tuple[int, ...] = (256, 1024, 4096, 16384)
    max_visual_tokens: int = 4096
    decode_steps: int = 64
    stop_seq_len: int = 8
    max_stop_seqs: int = 16
    max_stop_ids: int = 4
    max_forced_tokens: int = 1
    kv_buckets: tuple[int, ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "chunk_buckets", tuple(sorted(int(b) for b in self.chunk_buckets)))
        object.__setattr__(self, "vision_buckets", tuple(sorted(int(b) for b in self.vision_buckets)))
        if any(b % 4 for b in self.vision_buckets):
            raise SamplerError(f"vision_buckets {self.vision_buckets} must be multiples of 4 (2x2 merge)")
        if self.batch_size < 1 or self.cache_length < 1 or self.decode_steps < 1:
            raise SamplerError("batch_size, cache_length and decode_steps must be positive")
        if not self.chunk_buckets or self.chunk_buckets[0] < 1:
            raise SamplerError(f"chunk_buckets {self.chunk_buckets} must be positive (and at least one)")
        if self.kv_buckets is not None:
            kv = tuple(sorted({int(b) for b in self.kv_buckets}))
            if kv and (kv[0] < 1 or kv[-1] > self.slots):
                raise SamplerError(f"kv_buckets {self.kv_buckets} must lie in [1, cache_length + slack = "
                                   f"{self.slots}]")
            object.__setattr__(self, "kv_buckets", kv)

    @property
    def slack(self) -> int:
        return self.chunk_buckets[-1]

    @property
    def slots(self) -> int:
        """Cache slots allocated per row: ``cache_length + slack``."""
        return self.cache_length + self.slack

    @property
    def kv_windows(self) -> tuple[int, ...]:
        """The resolved KV buckets (see ``kv_buckets``): sorted, ending with ``slots``."""
        S = self.slots
        if self.kv_buckets is None:
            auto, b = [], 512
            while 4 * b <= 3 * S:
                auto.append(b)
                b *= 4
            return (*auto, S)
        return tuple(b for b in self.kv_buckets if b < S) + (S,)

    def programs(self) -> list[tuple]:
        """Every chunk/decode program some request can reach (one compile each):
        ``("extend", chunk, kv)`` where a row length in ``[0, cache_length]`` plus the chunk
        lands in window ``kv``, and ``("decode", kv)`` where :func:`core.decode_need`, which
        ranges over ``[1, cache_length + 1]``, does."""
        kvs = self.kv_windows
        prev = (0, *kvs[:-1])
        out: list[tuple] = [("extend", N, K) for N in self.chunk_buckets for K, p in zip(kvs, prev)
                            if K >= N and p < self.cache_length + N]
        return out + [("decode", K) for K, p in zip(kvs, prev) if p < self.cache_length + 1]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplingOptions:
    """How to pick tokens. ``stop_sequences`` are token-id tuples (see :func:`stop_sequences`);
    ``max_new_tokens`` bounds one :meth:`Sampler.generate` turn. VITAL uses temperature 1.0,
    top_p 1.0 and repetition_penalty 1.05 for rollouts."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    max_new_tokens: int = 256
    stop_token_ids: tuple[int, ...] = ()
    stop_sequences: tuple[tuple[int, ...], ...] = ()


@dataclasses.dataclass
class Segment:
    """Tokens to append to one row, with the visual items (``pixel_values [P, patch_dim]``,
    ``grid_thw (t, h, w)``, ``second_per_grid_t``, ``kind``: e.g. a
    :class:`vital_jax.video.VisualInput`) whose placeholder runs appear in ``ids``, in order."""

    ids: Sequence[int]
    visuals: Sequence[Any] = ()


@dataclasses.dataclass
class DecodeResult:
    """NumPy view of a decode call: per row the ``count[b]`` new tokens, their log-probs, and
    why the row stopped (``reason`` names from :data:`core.REASON_NAMES`)."""

    tokens: list[np.ndarray]
    logprobs: list[np.ndarray]
    reason: list[str]


def stop_sequences(tokenizer, strings: Sequence[str], prefixes: Sequence[str] = ("", " ", "\n", ">", ".")) -> tuple:
    """Pre-tokenised stop sequences for ``strings``.

    A string can reach the model's output through several tokenisations (its first token may
    merge with the character before it), so each string is tokenised after a few common
    prefixes; any of these id sequences ends with the string's text, so matching one as a
    suffix of the generated ids is a correct stop. A tokenisation not covered here is caught by
    the host-side check (:func:`find_stop_string`) after the decode call.
    """
    out: list[tuple[int, ...]] = []
    for s in strings:
        for p in prefixes:
            ids = tuple(tokenizer.encode(p + s))
            if ids and ids not in out:
                out.append(ids)
    return tuple(out)


def find_stop_string(tokenizer, ids: Sequence[int], strings: Sequence[str]) -> int | None:
    """Host fallback: the smallest k such that the text of ``ids[:k]`` contains a stop string,
    or None. Used when device matching missed a rare tokenisation."""
    text = tokenizer.decode(list(ids))
    if not any(s in text for s in strings):
        return None
    for k in range(1, len(ids) + 1):
        t = tokenizer.decode(list(ids[:k]))
        if any(s in t for s in strings):
            return k
    return None


def _bucket(n: int, buckets: Sequence[int], what: str) -> int:
    for b in buckets:
        if n <= b:
            return b
    raise SamplerError(f"{what}: {n} exceeds the largest bucket {buckets[-1]}")


@functools.lru_cache(maxsize=16)
def _programs(cfg, batch_size: int, cache_length: int, slack: int, stop_seq_len: int,
              decode_steps: int, max_visual_tokens: int, shard):
    """The jitted functions of a sampler, shared by every Sampler with the same static shapes.

    jit caches compiled programs per function object, so a Sampler that built its own
    ``jax.jit(partial(...))`` recompiled everything (each ``evaluate()`` call, the demo's four
    evaluations). Params are arguments, not captured: the cache holds programs, not weights.
    """
    init = jax.jit(functools.partial(core.init_state, cfg, batch_size, cache_length, slack, stop_seq_len),
                   **({} if shard is None else {"out_shardings": shard}))
    extend = jax.jit(functools.partial(core.extend, cfg), static_argnames=("all_logits", "kv"),
                     donate_argnames=("state",))
    decode = jax.jit(functools.partial(core.decode, cfg, decode_steps, cache_length),
                     static_argnames=("kv",), donate_argnames=("state",))
    encode = jax.jit(functools.partial(core.encode_vision, cfg, max_visual_tokens))
    return init, extend, decode, encode


class Sampler:
    """Compiled prefill/append/decode for one model and one :class:`SamplerConfig`.

    Args:
      cfg: the model config of any family (hashable; a static argument of every jitted function).
      params: the model params (nested dict of arrays, e.g. from ``load_pretrained``).
      config: static shapes.
      mesh: optional ``jax.sharding.Mesh``; the cache is then sharded with the logical rules
        (batch over data/fsdp, kv heads over tensor, never replicated per device).
    """

    def __init__(self, cfg, params: dict, config: SamplerConfig = SamplerConfig(), *, mesh=None):
        self.cfg, self.config, self.mesh = cfg, config, mesh
        self.family = package_of(cfg)
        c = config
        # jit keys its compiled programs on whether each input is committed to a device: a
        # checkpoint's params are, freshly initialised ones are not, and an uncommitted init
        # state or placeholder beside committed params meant a program compiled after warm-up.
        # So without a mesh everything the sampler makes or is given lives on one device,
        # committed (device_put of arrays already there copies nothing).
        self._device = None if mesh is not None else jax.devices()[0]
        self.params = params
        shard = self._state_shardings()
        self._init, self._extend, self._decode, self._encode = _programs(
            cfg, c.batch_size, c.cache_length, c.slack, c.stop_seq_len, c.decode_steps, c.max_visual_tokens, shard)
        #: device calls made, by program: ("extend", chunk, kv) / ("decode", kv) -> count
        self.calls: collections.Counter = collections.Counter()
        # placed like the encoder's output (see above)
        self._zero_vis = jax.device_put(self.family.modeling.zero_features(cfg, c.max_visual_tokens),
                                        self._device)

    @property
    def params(self) -> dict:
        return self._params

    @params.setter
    def params(self, params: dict) -> None:
        """New weights (e.g. the policy after an update); placed as in ``__init__``."""
        self._params = params if self._device is None else jax.device_put(params, self._device)

    # ------------------------------------------------------------------ sharding
    def _state_shardings(self):
        if self.mesh is None:
            return jax.sharding.SingleDeviceSharding(self._device)
        from vital_jax.sharding import named_sharding

        t, c = self.cfg.text, self.config
        B, S = c.batch_size, c.slots
        kv_shape = (t.num_layers, B, t.num_kv_heads, S, t.head_dim)
        kv = named_sharding(self.mesh, (None, "batch", "act_kv_heads", "cache_seq", None), kv_shape)
        row = named_sharding(self.mesh, ("batch",), (B,))
        row2 = named_sharding(self.mesh, ("batch", None), (B, 2))
        rowv = named_sharding(self.mesh, ("batch", "act_vocab"), (B, t.vocab_size))
        rowt = named_sharding(self.mesh, ("batch", None), (B, c.stop_seq_len))
        return core.SamplerState(KVCache(kv, kv), row, row, rowv, rowv, rowt, row2)

    # ------------------------------------------------------------------ state
    def init_state(self, seeds: int | Sequence[int] = 0) -> core.SamplerState:
        """Empty rows. ``seeds``: one int (row b gets seed + b) or one per row."""
        B = self.config.batch_size
        seeds = [int(seeds) + b for b in range(B)] if np.isscalar(seeds) else [int(s) for s in seeds]
        if len(seeds) != B:
            raise SamplerError(f"{len(seeds)} seeds for batch size {B}")
        # threefry key data of jax.random.key(s) is [0, s] for 32-bit seeds: built on the host so
        # making a state compiles nothing new
        rng = np.stack([np.zeros(B, np.uint32), np.asarray(seeds, np.uint64).astype(np.uint32)], axis=1)
        return self._init(rng)

    def lengths(self, state: core.SamplerState) -> np.ndarray:
        return np.asarray(jax.device_get(state.length))

    # ------------------------------------------------------------------ programs
    def _kv(self, need: int) -> int:
        """The KV window for a call that writes cache slots ``[0, need)`` (host side)."""
        return _bucket(int(need), self.config.kv_windows, "kv slots")

    # ------------------------------------------------------------------ vision
    def _vision(self, items: list) -> tuple[np.ndarray | jax.Array, list[int]]:
        """Encode all visual items of one call; returns the features and each item's offset (rows)."""
        if not items:
            return self._zero_vis, []
        unit = self.cfg.vision.merge_unit
        grids = np.asarray([np.asarray(v.grid_thw).reshape(3) for v in items], np.int64)
        counts = (np.prod(grids, axis=1) // unit).astype(int)
        total = int(counts.sum())
        if total > self.config.max_visual_tokens:
            raise SamplerError(f"{total} visual tokens in one call exceed max_visual_tokens="
                               f"{self.config.max_visual_tokens}")
        patches = int(np.prod(grids, axis=1).sum())
        n = _bucket(patches, self.config.vision_buckets, "vision patches")
        pix = np.concatenate([np.asarray(v.pixel_values, np.float32) for v in items])
        va = self.family.vision_arrays(self.cfg, pix, grids, pad_to=n)
        return self._encode(self.params, va), np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist()

    # ------------------------------------------------------------------ extend
    def _positions(self, seg: Segment) -> tuple[np.ndarray, int]:
        return self.family.visual_positions(self.cfg, seg.ids, seg.visuals)

    def extend(self, state: core.SamplerState, segments: Sequence[Segment | None], *,
               all_logits: bool = False, lengths: np.ndarray | None = None):
        """Append ``segments[b]`` (None or empty = leave row b alone) to each row.

        ``lengths``: the rows' current lengths if the caller tracks them (saves a device
        round trip); they choose the KV window, so they must be exact or over-estimates.
        Raises SamplerError if a row would exceed ``cache_length``. With ``all_logits`` also
        returns the logits of every appended token as a list of ``[n_b, V]`` arrays (tests).
        """
        B = self.config.batch_size
        if len(segments) != B:
            raise SamplerError(f"{len(segments)} segments for batch size {B}")
        have = self.lengths(state) if lengths is None else np.asarray(lengths)
        rows, items, vis_rows = [], [], []
        for b, seg in enumerate(segments):
            if seg is None or len(seg.ids) == 0:
                rows.append(None)
                continue
            ids = np.asarray(seg.ids, np.int64)
            if have[b] + len(ids) > self.config.cache_length:
                raise SamplerError(f"row {b}: {have[b]} + {len(ids)} tokens exceed cache_length "
                                   f"{self.config.cache_length}")
            pos, nxt = self._positions(seg)
            rows.append((ids, pos, nxt))
            vis_rows.append((b, len(items)))
            items.extend(seg.visuals)
        vis, offsets = self._vision(items)
        # vis_index: the k-th placeholder token of row b takes merged row offset(first item of b) + k
        first_item = dict(vis_rows)
        vis_idx_rows = {}
        for b, r in enumerate(rows):
            if r is None:
                continue
            ids = r[0]
            is_vis = (ids == self.cfg.image_token_id) | (ids == self.cfg.video_token_id)
            vi = np.full(ids.shape, -1, np.int64)
            if is_vis.any():
                vi[is_vis] = offsets[first_item[b]] + np.arange(int(is_vis.sum()))
            vis_idx_rows[b] = vi
        n_tot = np.asarray([0 if r is None else len(r[0]) for r in rows])
        logits_parts: list[list[np.ndarray]] = [[] for _ in range(B)]
        done = 0
        while done < n_tot.max():
            rem = np.maximum(n_tot - done, 0)
            N = _bucket(int(rem.max()), self.config.chunk_buckets, "chunk") if rem.max() <= self.config.slack \
                else self.config.slack
            n = np.minimum(rem, N).astype(np.int32)
            # the rows appended to in this chunk are at have + done; the others are not written
            kv = self._kv(int(have[n > 0].max()) + done + N)
            ids = np.full((B, N), self.cfg.pad_token_id, np.int32)
            pos = np.zeros((3, B, N), np.int32)
            vidx = np.full((B, N), -1, np.int32)
            adv = np.zeros((B,), np.int32)
            for b, r in enumerate(rows):
                if r is None or n[b] == 0:
                    continue
                sl = slice(done, done + int(n[b]))
                ids[b, :n[b]] = r[0][sl]
                pos[:, b, :n[b]] = r[1][:, sl]
                vidx[b, :n[b]] = vis_idx_rows[b][sl]
                if done + n[b] == n_tot[b]:
                    adv[b] = r[2]
            out = self._extend(self.params, state, ids, pos, n, adv, vis, vidx, all_logits=all_logits, kv=kv)
            self.calls["extend", N, kv] += 1
            if all_logits:
                state, lg = out
                lg = np.asarray(jax.device_get(lg))
                for b in range(B):
                    logits_parts[b].append(lg[b, :n[b]])
            else:
                state = out
            done += N
        if all_logits:
            return state, [np.concatenate(p) if p else np.zeros((0, self.cfg.text.vocab_size), np.float32)
                           for p in logits_parts]
        return state

    def prefill(self, segments: Sequence[Segment | None], seeds: int | Sequence[int] = 0, **kw):
        """A fresh state with ``segments`` as the prompts (right-padded per chunk, no left pad)."""
        return self.extend(self.init_state(seeds), segments, lengths=np.zeros(self.config.batch_size, int), **kw)

    # ------------------------------------------------------------------ decode
    def sampling_params(self, options: SamplingOptions | Sequence[SamplingOptions],
                        forced: Sequence[Sequence[int] | None] | None = None) -> core.SamplingParams:
        """Per-row arrays; stop tables are shared by the batch (the union of the rows').
        ``forced[b]``: tokens row b must produce first in the next decode call (scripted policy)."""
        B, c = self.config.batch_size, self.config
        opts = [options] * B if isinstance(options, SamplingOptions) else list(options)
        if len(opts) != B:
            raise SamplerError(f"{len(opts)} SamplingOptions for batch size {B}")
        stop_ids = sorted({int(t) for o in opts for t in o.stop_token_ids})
        seqs = list(dict.fromkeys(tuple(int(t) for t in s) for o in opts for s in o.stop_sequences))
        if len(stop_ids) > c.max_stop_ids or len(seqs) > c.max_stop_seqs:
            raise SamplerError(f"{len(stop_ids)} stop ids / {len(seqs)} stop sequences exceed "
                               f"max_stop_ids={c.max_stop_ids} / max_stop_seqs={c.max_stop_seqs}")
        ids = np.full((c.max_stop_ids,), -1, np.int32)
        ids[:len(stop_ids)] = stop_ids
        tab = np.full((c.max_stop_seqs, c.stop_seq_len), -1, np.int32)
        for i, s in enumerate(seqs):
            if not 0 < len(s) <= c.stop_seq_len:
                raise SamplerError(f"stop sequence {s} has {len(s)} tokens; 1..{c.stop_seq_len} allowed")
            tab[i, c.stop_seq_len - len(s):] = s
        for o in opts:
            if o.temperature < 0 or not 0 < o.top_p <= 1 or o.top_k < 0 or o.repetition_penalty <= 0:
                raise SamplerError(f"bad sampling options {o}")
        return core.SamplingParams(
            temperature=np.asarray([o.temperature for o in opts], np.float32),
            top_k=np.asarray([o.top_k for o in opts], np.int32),
            top_p=np.asarray([o.top_p for o in opts], np.float32),
            repetition_penalty=np.asarray([o.repetition_penalty for o in opts], np.float32),
            stop_ids=ids, stop_seqs=tab, forced=self._forced(forced),
        )

    def _forced(self, forced) -> np.ndarray:
        F = self.config.max_forced_tokens
        out = np.full((self.config.batch_size, F), -1, np.int32)
        for b, f in enumerate(forced or ()):
            if f is None or len(f) == 0:
                continue
            if len(f) > F:
                raise SamplerError(f"row {b}: {len(f)} forced tokens exceed max_forced_tokens={F}")
            out[b, :len(f)] = f
        return out

    def decode(self, state: core.SamplerState, params: core.SamplingParams, budget, *,
               exit_on_stop: bool = False, lengths: np.ndarray | None = None) -> tuple[core.SamplerState, DecodeResult]:
        """Up to ``decode_steps`` tokens per row (``budget[b]`` caps row b; 0 = idle).

        ``lengths``: the rows' current lengths if the caller tracks them (else read from the
        device); they choose the KV window, so they must be exact or over-estimates."""
        c = self.config
        budget = np.broadcast_to(np.asarray(budget, np.int32), (c.batch_size,))
        have = self.lengths(state) if lengths is None else np.asarray(lengths)
        kv = self._kv(core.decode_need(have, budget, c.decode_steps, c.cache_length).max())
        state, out = self._decode(self.params, state, params, budget, np.bool_(exit_on_stop), kv=kv)
        self.calls["decode", kv] += 1
        out = jax.device_get(out)
        cnt = out.count
        return state, DecodeResult(
            tokens=[out.tokens[b, :cnt[b]] for b in range(len(cnt))],
            logprobs=[out.logprobs[b, :cnt[b]] for b in range(len(cnt))],
            reason=[core.REASON_NAMES[int(r)] for r in out.reason],
        )

    def rewind(self, state: core.SamplerState, drop) -> core.SamplerState:
        """Drop the last ``drop[b]`` generated tokens of each row (see :func:`core.rewind`)."""
        return _rewind(state, np.asarray(drop, np.int32))

    def generate(self, state: core.SamplerState, options: SamplingOptions | Sequence[SamplingOptions],
                 max_new_tokens=None, rows=None) -> tuple[core.SamplerState, DecodeResult]:
        """Decode until every selected row stops (repeated decode calls); tokens concatenated."""
        B = self.config.batch_size
        opts = [options] * B if isinstance(options, SamplingOptions) else list(options)
        sp = self.sampling_params(opts)
        left = np.asarray([o.max_new_tokens for o in opts] if max_new_tokens is None else
                          np.broadcast_to(max_new_tokens, (B,)), np.int32)
        if rows is not None:
            left = np.where(np.isin(np.arange(B), rows), left, 0).astype(np.int32)
        toks = [[] for _ in range(B)]
        lps = [[] for _ in range(B)]
        reason = ["idle" if left[b] <= 0 else "running" for b in range(B)]
        have = self.lengths(state)
        while (left > 0).any():
            state, res = self.decode(state, sp, left, lengths=have)
            have = have + np.asarray([len(t) for t in res.tokens])
            for b in range(B):
                if left[b] <= 0:
                    continue
                toks[b].append(res.tokens[b])
                lps[b].append(res.logprobs[b])
                left[b] -= len(res.tokens[b])
                if res.reason[b] not in ("running",):
                    reason[b] = res.reason[b]
                    left[b] = 0
        return state, DecodeResult(
            tokens=[np.concatenate(t).astype(np.int32) if t else np.zeros(0, np.int32) for t in toks],
            logprobs=[np.concatenate(t).astype(np.float32) if t else np.zeros(0, np.float32) for t in lps],
            reason=reason,
        )

    # ------------------------------------------------------------------ warm-up
    def warmup(self, *, vision: bool = True) -> None:
        """Compile every program once: :meth:`SamplerConfig.programs` (chunk x KV window, decode x KV window),
        the vision buckets, init and rewind. Runs on an empty state (all writes at slot 0)."""
        state = self.init_state(0)
        B, c = self.config.batch_size, self.config
        for prog in c.programs():
            if prog[0] == "decode":
                continue
            _, N, K = prog
            z = np.zeros((B, N), np.int32)
            state = self._extend(self.params, state, z, np.zeros((3, B, N), np.int32), np.zeros(B, np.int32),
                                 np.zeros(B, np.int32), self._zero_vis, np.full((B, N), -1, np.int32),
                                 all_logits=False, kv=K)  # same call signature as extend(): same cache key
        if vision:
            grid = np.asarray([[1, 2, 2]])  # any grid: the compiled shape is the bucket's
            for n in c.vision_buckets:
                va = self.family.vision_arrays(self.cfg, np.zeros((4, self.cfg.vision.patch_dim), np.float32),
                                               grid, pad_to=n)
                jax.block_until_ready(self._encode(self.params, va))
        sp = self.sampling_params(SamplingOptions())
        zero = np.zeros(B, np.int32)
        for prog in c.programs():
            if prog[0] == "decode":
                state, out = self._decode(self.params, state, sp, zero, np.bool_(False), kv=prog[1])
        jax.device_get(out)
        state = self.rewind(state, zero)
        jax.block_until_ready(state.length)


@jax.jit
def _rewind(state, drop):
    return core.rewind(state, drop)
