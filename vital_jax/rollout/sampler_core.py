"""The pure, jitted heart of the sampler: extend a KV cache by a chunk, decode K steps.

Everything here is a function of explicit pytrees (params, :class:`SamplerState`, chunk arrays,
:class:`SamplingParams`) with static shapes. Host work (tokenising, M-RoPE positions, choosing a
bucket, vision layout) lives in :mod:`vital_jax.rollout.sampler`.

Cache discipline (no left padding anywhere):
- row ``b`` owns cache slots ``[0, length[b])``; a chunk of ``N`` tokens (``n[b] <= N`` real,
  right-padded) is written at slots ``[length[b], length[b] + N)`` and ``length`` advances by
  ``n[b]`` only, so padding slots are junk that the next write overwrites;
- query ``i`` of row ``b`` sees slot ``s`` iff ``s <= length[b] + i``, so junk is never read;
- the cache is allocated with ``slack`` extra slots (the largest chunk) beyond the row capacity,
  because ``dynamic_update_slice`` silently clamps an out-of-range write (platform.md): a padded
  chunk written at ``length <= capacity`` always fits.

KV window (``kv``, a static argument of :func:`extend` and :func:`decode`): attention reads only
the first ``kv`` slots of the cache, a static slice ``cache[..., :kv, :]``. The host picks ``kv``
(one of a few buckets) so that every slot the call must write is inside the window: extend
``[length[b], length[b] + N)`` of every row it appends to (``n[b] > 0``), decode up to
:func:`decode_need` of every row (idle rows too: the loop writes their junk into the window it
carries). A write past the window would clamp onto real slots, so the host must never
under-estimate. ``kv`` = the whole allocation (or None) is the plain path: no slicing.
Extend copies the window out, runs the layers on it and puts back only the chunk's ``N`` slots of
the rows it appends to (a row with ``n[b] = 0`` may be longer than the window: its clamped junk
stays in the discarded copy); decode carries the window through its loop and puts it back once.

Model family: every model call goes through the family's ``hidden_states`` / ``encode_vision``
(:mod:`vital_jax.models.families`); the visual features are that family's pytree (Qwen2.5-VL:
merged embeddings; Qwen3-VL: merged embeddings and DeepStack features), visual tokens on axis -2.

M-RoPE: ``next_pos[b]`` is the row's next free position (max + 1). A chunk carries positions
relative to it (``rope.row_positions(..., start=0)``; positions are shift-equivariant) and an
``advance[b]`` (the relative next position) that is added after the chunk. A decode step feeds
its token at ``next_pos`` on all three axes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vital_jax.models.families import modeling_of
from vital_jax.models.qwen2_5_vl.modeling import KVCache, SlotMask, lm_logits

Array = jax.Array

# Why a row stopped in a decode call (DecodeOut.reason).
RUNNING = 0      # still active when the call ended (K steps, or another row stopped first)
STOP_TOKEN = 1   # sampled a stop token id (eos, ...)
STOP_SEQ = 2     # the generated tokens end with a pre-tokenised stop sequence
BUDGET = 3       # produced its max_new tokens for this call
LENGTH = 4       # the cache row is full (context limit)
IDLE = 5         # not asked to decode (budget 0)
REASON_NAMES = {RUNNING: "running", STOP_TOKEN: "stop_token", STOP_SEQ: "stop_sequence", BUDGET: "budget",
                LENGTH: "length", IDLE: "idle"}


class SamplerState(NamedTuple):
    """Everything that carries over between sampler calls, per row ``b`` of the batch.

    cache:       KV cache, layout [layers, B, K, S + slack, d].
    length:      [B] int32 slots in use (tokens in the context).
    next_pos:    [B] int32 next M-RoPE position (max position so far + 1).
    last_logits: [B, V] f32 logits for the row's next token (from its last processed token).
    presence:    [B, V] bool tokens seen in the context (repetition penalty).
    tail:        [B, T] int32 last T *generated* tokens of the current turn, -1 padded
                 (stop-sequence matching; reset by every chunk appended to the row).
    rng:         [B, 2] uint32 per-row PRNG key data.
    """

    cache: KVCache
    length: Array
    next_pos: Array
    last_logits: Array
    presence: Array
    tail: Array
    rng: Array


class SamplingParams(NamedTuple):
    """Sampling controls as arrays (changing values never recompiles).

    temperature [B] f32 (0 = greedy), top_k [B] int32 (0 = off), top_p [B] f32 (1 = off),
    repetition_penalty [B] f32 (1 = off; HF/vLLM rule: divide positive logits of seen tokens,
    multiply negative ones), stop_ids [Nt] int32 (-1 = unused), stop_seqs [Ns, T] int32,
    right-aligned, -1 left padding (an all -1 row is unused); forced [B, F] int32: token j of
    this decode call for row b is ``forced[b, j]`` when >= 0 (a scripted policy / prefix
    forcing: the seam tests and demos use to drive the tool loop), -1 = sample.
    """

    temperature: Array
    top_k: Array
    top_p: Array
    repetition_penalty: Array
    stop_ids: Array
    stop_seqs: Array
    forced: Array


class DecodeOut(NamedTuple):
    """tokens [B, K] (pad after a row stops), logprobs [B, K] f32 (log-softmax of the raw model
    logits at the sampled token), count [B] tokens produced, reason [B] (module constants)."""

    tokens: Array
    logprobs: Array
    count: Array
    reason: Array


def init_state(cfg, batch: int, capacity: int, slack: int, tail_len: int, rng: Array,
               cache_dtype=None) -> SamplerState:
    """A fresh state: empty rows, position 0. ``rng`` is [B, 2] uint32 key data."""
    V = cfg.text.vocab_size
    return SamplerState(
        cache=KVCache.zeros(cfg, batch, capacity + slack, cache_dtype),
        length=jnp.zeros((batch,), jnp.int32),
        next_pos=jnp.zeros((batch,), jnp.int32),
        last_logits=jnp.zeros((batch, V), jnp.float32),
        presence=jnp.zeros((batch, V), bool),
        tail=jnp.full((batch, tail_len), -1, jnp.int32),
        rng=rng,
    )


def _window(cache: KVCache, kv: int | None) -> KVCache:
    """The first ``kv`` slots of every layer/row (a static slice; the cache itself if it is no larger)."""
    if kv is None or kv >= cache.k.shape[3]:
        return cache
    if kv < 1:
        raise ValueError(f"kv window {kv} must be positive")
    return KVCache(cache.k[:, :, :, :kv], cache.v[:, :, :, :kv])


def _put_window(full: KVCache, win: KVCache) -> KVCache:
    """Write a window back at slot 0 (in place when ``full`` is donated)."""
    if win.k.shape == full.k.shape:
        return win
    z = (0,) * 5
    return KVCache(jax.lax.dynamic_update_slice(full.k, win.k, z),
                            jax.lax.dynamic_update_slice(full.v, win.v, z))


def _put_chunk(full: KVCache, win: KVCache, start: Array, n: int, rows: Array) -> KVCache:
    """Copy slots ``[start[b], start[b] + n)`` from the window into the full cache for the rows
    with ``rows[b]`` (the only slots an extend call changed); other rows keep their slots.
    Layout [layers, B, K, S, d]; rows on axis 1."""
    if win.k.shape == full.k.shape:
        return win

    def move(f, w):
        def row(fb, wb, s, keep):                                       # [layers, K, S, d]
            part = jax.lax.dynamic_slice_in_dim(wb, s, n, axis=2)
            part = jnp.where(keep, part, jax.lax.dynamic_slice_in_dim(fb, s, n, axis=2))
            return jax.lax.dynamic_update_slice_in_dim(fb, part, s, axis=2)
        return jax.vmap(row, in_axes=(1, 1, 0, 0), out_axes=1)(f, w, start, rows)

    return KVCache(move(full.k, win.k), move(full.v, win.v))


def decode_need(length: np.ndarray, budget: np.ndarray, steps: int, capacity: int) -> np.ndarray:
    """Per row, the cache slots ``[0, need)`` one :func:`decode` call may write (host, numpy).

    An active row writes its tokens at ``length .. length + c - 1`` with ``c <= min(steps,
    budget, capacity - length)``; once it stops, later steps of the same call (other rows still
    running) write a padding token's K/V at its unchanged ``length`` (junk, never read). Hence
    ``need = length + min(steps, budget + 1, capacity - length + 1)``, at most ``capacity + 1``.
    """
    length = np.asarray(length, np.int64)
    room = np.minimum(np.maximum(np.asarray(budget, np.int64), 0) + 1, capacity - length + 1)
    return length + np.minimum(steps, room)


def extend(cfg, params: dict, state: SamplerState, ids: Array, rel_pos: Array, n: Array,
           advance: Array, vis: Any, vis_index: Array, all_logits: bool = False, kv: int | None = None):
    """Append a right-padded chunk to every row at its own offset.

    ids [B, N] int32; rel_pos [3, B, N] positions relative to ``next_pos``; n [B] real tokens
    (0 = row untouched); advance [B] added to ``next_pos`` (0 for all but a segment's last
    chunk); vis: the family's visual features (:func:`encode_vision`); vis_index [B, N] their
    row (axis -2) for visual placeholders, -1 for text.

    ``kv`` (static): attention reads the first ``kv`` cache slots only; the caller guarantees
    ``length[b] + N <= kv`` for every row with ``n[b] > 0`` (see the module docstring).

    Returns the new state (and the chunk's logits [B, N, V] when ``all_logits``; tests only).
    """
    N = ids.shape[1]
    win = _window(state.cache, kv)
    pos = rel_pos + state.next_pos[None, :, None]
    h, win = modeling_of(cfg).hidden_states(cfg, params, ids, vis, vis_index, pos, SlotMask(state.length),
                                            cache=win, write_at=state.length)
    touched = n > 0
    cache = _put_chunk(state.cache, win, state.length, N, touched)
    last = jnp.take_along_axis(h, jnp.maximum(n - 1, 0)[:, None, None], axis=1)          # [B, 1, D]
    logits = lm_logits(cfg, params, last)[:, 0]
    valid = jnp.arange(N)[None, :] < n[:, None]                                          # [B, N]
    seen = jax.vmap(lambda p, t, v: p.at[t].max(v))(state.presence, ids, valid)
    new = SamplerState(
        cache=cache,
        length=state.length + n,
        next_pos=state.next_pos + jnp.where(touched, advance, 0),
        last_logits=jnp.where(touched[:, None], logits, state.last_logits),
        presence=seen,
        tail=jnp.where(touched[:, None], -1, state.tail),
        rng=state.rng,
    )
    if all_logits:
        return new, lm_logits(cfg, params, h)
    return new


# ---------------------------------------------------------------------------------------------
# sampling one token per row
# ---------------------------------------------------------------------------------------------
def _penalize(logits: Array, presence: Array, penalty: Array) -> Array:
    p = penalty[:, None]
    pen = jnp.where(logits > 0, logits / p, logits * p)
    return jnp.where(presence, pen, logits)


def _filter_top_k_top_p(scaled: Array, top_k: Array, top_p: Array) -> Array:
    """Mask (to -inf) tokens outside top-k and the top-p nucleus, per row. scaled [B, V]."""
    V = scaled.shape[-1]
    srt = -jnp.sort(-scaled, axis=-1)                                                    # descending
    k = jnp.where(top_k > 0, jnp.minimum(top_k, V), V)
    kth = jnp.take_along_axis(srt, (k - 1)[:, None], axis=-1)                            # [B, 1]
    probs = jax.nn.softmax(srt, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs                                          # mass above each
    keep = before < top_p[:, None]
    keep = keep.at[:, 0].set(True)                                                       # never empty
    pth = jnp.min(jnp.where(keep, srt, jnp.inf), axis=-1, keepdims=True)
    thresh = jnp.maximum(kth, pth)
    return jnp.where(scaled >= thresh, scaled, -jnp.inf)


def sample_tokens(logits: Array, presence: Array, sp: SamplingParams, keys: Array) -> tuple[Array, Array]:
    """One token per row and its log-prob under the raw model distribution.

    logits [B, V] f32; keys [B] typed PRNG keys. Greedy rows (temperature 0) take the argmax of
    the penalised logits; the others sample from softmax(penalised / T) after top-k/top-p.
    The full-vocabulary sort that top-k/top-p need runs only if some row asks for it (lax.cond).
    """
    pen = _penalize(logits, presence, sp.repetition_penalty)
    greedy = sp.temperature <= 0
    scaled = pen / jnp.where(greedy, 1.0, sp.temperature)[:, None]
    need_filter = jnp.any(((sp.top_k > 0) | (sp.top_p < 1.0)) & ~greedy)
    scaled = jax.lax.cond(need_filter, lambda s: _filter_top_k_top_p(s, sp.top_k, sp.top_p), lambda s: s, scaled)
    drawn = jax.vmap(jax.random.categorical)(keys, scaled)
    tok = jnp.where(greedy, jnp.argmax(pen, axis=-1), drawn).astype(jnp.int32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return tok, jnp.take_along_axis(logp, tok[:, None], axis=-1)[:, 0]


def _stop_seq_hit(tail: Array, stop_seqs: Array) -> Array:
    """[B] whether the tail ends with any stop sequence. tail [B, T]; stop_seqs [Ns, T]."""
    used = jnp.any(stop_seqs >= 0, axis=-1)                                              # [Ns]
    eq = (tail[:, None, :] == stop_seqs[None]) | (stop_seqs[None] < 0)                   # [B, Ns, T]
    return jnp.any(jnp.all(eq, axis=-1) & used[None], axis=-1)


# ---------------------------------------------------------------------------------------------
# decode loop
# ---------------------------------------------------------------------------------------------
def decode(cfg, steps: int, capacity: int, params: dict, state: SamplerState, sp: SamplingParams,
           budget: Array, exit_on_stop: Array, kv: int | None = None) -> tuple[SamplerState, DecodeOut]:
    """Up to ``steps`` tokens per row in one ``lax.while_loop``.

    Each step samples from ``last_logits``, feeds the token through the model (its K/V go into
    the cache, so a stop token is part of the context the next chunk attends to), and stops a row
    on a stop id, a stop sequence, ``budget[b]`` tokens, or a full row (``capacity``). The loop
    ends when no row is active, after ``steps``, or (``exit_on_stop`` true) as soon as any row
    stops, so a row that needs a tool waits at most one step for the others.
    Inactive rows still flow through the matmuls (static shapes) but change nothing.

    ``kv`` (static): the loop carries and attends over the first ``kv`` cache slots only (put
    back into the full cache once, after the loop); the caller guarantees ``kv >=``
    :func:`decode_need` for every row.
    """
    B = state.length.shape[0]
    full = state.cache
    state = state._replace(cache=_window(full, kv))
    pad = jnp.int32(cfg.pad_token_id)
    active0 = (budget > 0) & (state.length < capacity)
    reason0 = jnp.where(budget <= 0, IDLE, jnp.where(state.length >= capacity, LENGTH, RUNNING)).astype(jnp.int32)
    out0 = DecodeOut(jnp.full((B, steps), pad), jnp.zeros((B, steps), jnp.float32), jnp.zeros((B,), jnp.int32),
                     reason0)

    def cond(carry):
        step, _, active, stopped, _ = carry
        return (step < steps) & jnp.any(active) & ~(exit_on_stop & stopped)

    def body(carry):
        step, st, active, _, out = carry
        keys = jax.vmap(jax.random.wrap_key_data)(st.rng)
        split = jax.vmap(lambda k: jax.random.split(k, 2))(keys)                         # [B, 2]
        tok, _ = sample_tokens(st.last_logits, st.presence, sp, split[:, 1])
        F = sp.forced.shape[1]
        f = jnp.take_along_axis(sp.forced, jnp.minimum(out.count, F - 1)[:, None], axis=1)[:, 0]
        tok = jnp.where((out.count < F) & (f >= 0), f, tok)
        tok = jnp.where(active, tok, pad)
        lp = jnp.take_along_axis(jax.nn.log_softmax(st.last_logits, axis=-1), tok[:, None], axis=-1)[:, 0]
        # feed the token: position next_pos on all three axes, write at slot length
        pos = jnp.broadcast_to(st.next_pos[None, :, None], (3, B, 1))
        h, cache = modeling_of(cfg).hidden_states(cfg, params, tok[:, None], None, None, pos, SlotMask(st.length),
                                                  cache=st.cache, write_at=st.length)
        logits = lm_logits(cfg, params, h)[:, 0]
        inc = active.astype(jnp.int32)
        tail = jnp.where(active[:, None], jnp.concatenate([st.tail[:, 1:], tok[:, None]], axis=1), st.tail)
        st = SamplerState(
            cache=cache,
            length=st.length + inc,
            next_pos=st.next_pos + inc,
            last_logits=jnp.where(active[:, None], logits, st.last_logits),
            presence=st.presence.at[jnp.arange(B), tok].max(active),
            tail=tail,
            rng=jnp.where(active[:, None], jax.vmap(jax.random.key_data)(split[:, 0]), st.rng),
        )
        count = out.count + inc
        hit_id = jnp.any(tok[:, None] == sp.stop_ids[None, :], axis=-1)
        hit_seq = _stop_seq_hit(tail, sp.stop_seqs)
        why = jnp.where(hit_id, STOP_TOKEN, jnp.where(hit_seq, STOP_SEQ, jnp.where(
            st.length >= capacity, LENGTH, jnp.where(count >= budget, BUDGET, RUNNING))))
        ends = active & (why != RUNNING)
        out = DecodeOut(
            tokens=out.tokens.at[:, step].set(tok),
            logprobs=out.logprobs.at[:, step].set(jnp.where(active, lp, 0.0)),
            count=count,
            reason=jnp.where(ends, why, out.reason).astype(jnp.int32),
        )
        return step + 1, st, active & ~ends, jnp.any(ends), out

    carry = (jnp.int32(0), state, active0, jnp.bool_(False), out0)
    _, state, _, _, out = jax.lax.while_loop(cond, body, carry)
    return state._replace(cache=_put_window(full, state.cache)), out


def rewind(state: SamplerState, drop: Array) -> SamplerState:
    """Forget the last ``drop[b]`` *generated text* tokens of each row (host-side stop-string
    fallback). Slots past the new length become junk; ``last_logits`` is stale until the next
    chunk is appended, and ``presence`` keeps the dropped tokens (a minor over-penalty)."""
    return state._replace(length=state.length - drop, next_pos=state.next_pos - drop,
                          tail=jnp.where((drop > 0)[:, None], -1, state.tail))


def encode_vision(cfg, max_tokens: int, params: dict, va) -> Any:
    """The family's visual features with their token axis (-2) padded (or cut) to ``max_tokens``,
    so the chunk functions see one shape whatever vision bucket produced them."""
    def fit(a):
        m = a.shape[-2]
        if m >= max_tokens:
            return a[..., :max_tokens, :]
        return jnp.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, max_tokens - m), (0, 0)])

    return jax.tree.map(fit, modeling_of(cfg).encode_vision(cfg, params["vision"], va))
