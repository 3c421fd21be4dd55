"""Speed of the Flax Qwen2.5-VL against transformers/PyTorch eager, same weights, same process.

    .venv/bin/python scripts/bench_model.py [--quick] [--reps N] [--profile]
                                            [--remat none|full|dots] [--scan] [--frame-block K]
                                            [--torch-attn eager|sdpa]

Model "mid" (~61M parameters, f32): text 512 hidden x 8 layers, 8 heads / 2 KV heads (head_dim 64,
mrope_section [8, 12, 12]), MLP 1536, vocab 32000, untied lm head; vision tower depth 4, hidden 256,
MLP 512, 4 heads, window 112 px, full attention in blocks 1 and 3. Batch 2 x 768 tokens, each row
holding one video of grid (4, 16, 16) = 1024 patches = 256 merged tokens, with explicit M-RoPE
positions from the original Qwen2.5-VL rule fed to both models.

transformers builds the random model (tests/models/hf_reference.py), saves it, and ours loads that
checkpoint, so both run the same weights. Measured (median of several runs, JAX and torch runs
interleaved so that load from other processes hits both alike):

- forward: logits [2, 768, 32000];
- forward+backward: gradient of the mean next-token cross-entropy over text labels w.r.t. all
  parameters (jitted ``jax.value_and_grad``; ``loss.backward()`` in torch). Ours computes it the
  way the trainers do: the lm head in chunks of positions, skipping chunks with no label (a
  video span); transformers computes all [B, L, V] logits. ``fwd_bwd_full_logits_speedup_vs_torch``
  is ours through the whole logits too, so both readings are on record;
- GEMM peak: a 2048^3 f32 matmul, jitted JAX and torch, in this process.

Model FLOPs are analytic: 2 x (multiply-adds of every matmul) per forward including attention
(text attention over the causal half of the L x L scores, vision attention over its windows /
frames: the work the model needs, whatever an implementation computes); forward+backward =
3 x forward. The fraction of the GEMM peak is taken from our fwd+bwd through the whole logits
(every lm-head row computed, as the FLOP count assumes).

A second labelling, ``response``: only each row's last 192 tokens are targets, as in an SFT row
whose prompt, video and question carry no loss. ``fwd_bwd_response_speedup_vs_torch`` compares
that loss's gradient (transformers still computes every logit; the trainers' lm head skips the
chunks without a target).

How ours runs (all explicit here, see ``--help``): unrolled layers (``scan_layers=False``; the
library default stays ``lax.scan``, which compiles faster, but the unrolled loop runs faster on
CPU), no remat, and ``vision_frame_block`` = the largest frame's patch count (256), so the
full-attention vision blocks attend in a band of frame-sized blocks instead of a dense [N, N]
mask (window blocks always do, with 64-patch blocks).

Both sides run in one process with ``vital_jax.host_alloc.keep_freed_memory()`` applied (glibc keeps
freed blocks instead of unmapping them; without it XLA's per-run 2 GB temp block is page-faulted
every step and torch's tensors likewise): the comparison is of the computations, not of page faults.

Prints one JSON line per measurement; the headline lines are ``fwd_bwd_speedup_vs_torch``,
``fwd_bwd_response_speedup_vs_torch``, ``fwd_speedup_vs_torch`` and
``fwd_bwd_fraction_of_gemm_peak``. ``--profile`` also times the
pieces of our model (vision tower, text decoder, lm head + loss) separately.
torch runs with ``torch.set_num_threads(threads)`` (2 by default, the machine's cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GRID = (4, 16, 16)          # one video per row: 4 temporal x 16 x 16 patches -> 256 merged tokens
BATCH, SEQ = 2, 768
RESPONSE = 192              # the "response" labelling: only each row's last 192 tokens are targets


def mid_hf_config(ref, dtype: str = "float32"):
    return ref.tiny_hf_config(
        text_config=dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=2,
                         intermediate_size=1536, vocab_size=32000, max_position_embeddings=4096,
                         rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=[8, 12, 12])),
        vision_config=dict(depth=4, hidden_size=256, intermediate_size=512, num_heads=4, out_hidden_size=512,
                           window_size=112, fullatt_block_indexes=[1, 3]),
        tie_word_embeddings=False,
    )


def make_batch(ref, cfg):
    """ids [B, L], positions [3, B, L] (original rule), pixels, grids, next-token labels/weights."""
    n_vis = GRID[0] * GRID[1] * GRID[2] // 4
    rows = []
    for b in range(BATCH):
        head = 40 + 30 * b
        tail = SEQ - head - n_vis - 2
        rows.append(ref.build_input_ids([("text", head), ("video", GRID), ("text", tail)], seed=b))
    ids = np.stack(rows)
    assert ids.shape == (BATCH, SEQ), ids.shape
    grids = np.asarray([GRID] * BATCH)
    pixels = ref.make_visual([GRID] * BATCH, seed=7)
    spg = np.ones((BATCH,), np.float32)
    mask = np.ones_like(ids)
    pos, _ = ref.reference_rope_index(ids, None, grids, spg, mask, tokens_per_second=int(cfg.vision.tokens_per_second),
                                      video_token_id=cfg.video_token_id, image_token_id=cfg.image_token_id)
    # next-token labels; only text targets count (no loss on video placeholders)
    labels = np.zeros_like(ids)
    labels[:, :-1] = ids[:, 1:]
    weights = np.zeros(ids.shape, np.float32)
    weights[:, :-1] = (ids[:, 1:] != cfg.video_token_id)
    # an SFT row: prompt, video and question unlabelled, the answer (last RESPONSE tokens) labelled
    response = np.zeros(ids.shape, np.float32)
    response[:, SEQ - RESPONSE - 1:-1] = 1.0
    return dict(ids=ids, mask=mask, pos=pos, pixels=pixels, grids=grids, spg=spg, labels=labels, weights=weights,
                response_weights=response)


# ---------------------------------------------------------------------------------------------
# analytic FLOPs
# ---------------------------------------------------------------------------------------------
def model_flops(cfg, layout) -> dict:
    """Forward FLOPs per component (2 per multiply-add)."""
    t, v = cfg.text, cfg.vision
    T = BATCH * SEQ
    N = layout.num_patches
    C, Fv, P = v.hidden_size, v.intermediate_size, v.patch_dim

    def seg_sq(seg):
        seg = seg[seg >= 0]
        _, counts = np.unique(seg, return_counts=True)
        return int(np.sum(counts.astype(np.int64) ** 2))

    vis_attn = 0
    for i in range(v.depth):
        s2 = seg_sq(layout.seg_full if i in v.fullatt_block_indexes else layout.seg_window)
        vis_attn += 2 * 2 * s2 * C                      # QK^T and PV over each segment
    D, H, K, d, F = t.hidden_size, t.num_heads, t.num_kv_heads, t.head_dim, t.intermediate_size
    out = {
        "vision_matmul": 2 * N * P * C + v.depth * 2 * N * (C * 3 * C + C * C + 3 * C * Fv)
        + 2 * (N // 4) * (4 * C * 4 * C + 4 * C * v.out_hidden_size),
        "vision_attention": vis_attn,
        "text_matmul": t.num_layers * 2 * T * (D * H * d + 2 * D * K * d + H * d * D + 3 * D * F),
        "text_attention": t.num_layers * 2 * 2 * BATCH * (SEQ * (SEQ + 1) // 2) * H * d,   # causal: keys <= query
        "lm_head": 2 * T * D * t.vocab_size,
    }
    out["total"] = sum(out.values())
    return out


def masked_nll(cfg, params, h, b, *, skip_unlabelled: bool = True):
    """Weighted mean next-token NLL from the final hidden states, by the library's training head
    (``modeling.target_logprobs``: logsumexp - target logit, the target picked by a compare so the
    backward is one fused softmax pass). ``skip_unlabelled``: the lm head runs in chunks of
    ``runtime.logits_chunk`` positions and skips chunks without a label, as the trainers do
    (``token_logps(only_loss_tokens=True)``); False: the whole [B, L, V] logits in one piece, as
    transformers computes them."""
    import jax.numpy as jnp

    from vital_jax.models.qwen2_5_vl import modeling

    where = b["weights"] > 0 if skip_unlabelled else None
    if not skip_unlabelled:
        cfg = cfg.with_runtime(logits_chunk=0)
    logp = modeling.target_logprobs(cfg, params, h, b["labels"], where)
    return -jnp.sum(logp * b["weights"]) / jnp.sum(b["weights"])


def train_loss(cfg, params, b, *, skip_unlabelled: bool = True):
    """The whole model's loss on the bench batch (see :func:`masked_nll`)."""
    from vital_jax.models.qwen2_5_vl import modeling

    vis = modeling.encode_vision(cfg, params["vision"], b["vision"])
    x = modeling.embed_tokens(cfg, params, b["ids"], vis, b["vis_index"])
    h, _ = modeling.decode_hidden(cfg, params, x, b["pos"], modeling.CausalMask(b["mask"]))
    return masked_nll(cfg, params, h, b, skip_unlabelled=skip_unlabelled)


# ---------------------------------------------------------------------------------------------
# timing helpers
# ---------------------------------------------------------------------------------------------
def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def interleaved(fns: dict, reps: int, warmup: int = 1) -> dict:
    """Run each fn ``warmup`` times, then ``reps`` rounds of all fns in turn; seconds per run."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            times[k].append(timed(fn))
    return times


def med(xs):
    return statistics.median(xs)


def emit(name, value, unit, **kw):
    print(json.dumps({"name": name, "value": value, "unit": unit, **kw}), flush=True)


def gemm_peaks(torch, reps: int) -> dict:
    import jax
    import jax.numpy as jnp

    n = 2048
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    mm = jax.jit(lambda x, y: x @ y)
    ta, tb = torch.randn(n, n), torch.randn(n, n)
    times = interleaved({"jax": lambda: mm(a, b).block_until_ready(), "torch": lambda: torch.mm(ta, tb)},
                        reps=max(reps, 5), warmup=2)
    flops = 2 * n ** 3
    # best-of is the usual peak convention (the machine is shared; the median is noisier)
    return {k: flops / min(v) / 1e9 for k, v in times.items()} | {
        f"{k}_median": flops / med(v) / 1e9 for k, v in times.items()}


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (< 3 min on 2 cores)")
    ap.add_argument("--reps", type=int, default=None, help="timed rounds (default 3 quick, 7 full)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--remat", default="none", choices=["none", "full", "dots"])
    ap.add_argument("--scan", action="store_true",
                    help="lax.scan over layers (the library default; faster compiles) instead of the unrolled "
                         "loop, which runs faster on CPU")
    ap.add_argument("--frame-block", type=int, default=None,
                    help="runtime.vision_frame_block (default: the largest frame's patches; 0 = dense frame mask)")
    ap.add_argument("--torch-attn", default="eager", choices=["eager", "sdpa"])
    ap.add_argument("--logits-chunk", type=int, default=None,
                    help="runtime.logits_chunk of the fwd+bwd loss (default: the library's)")
    ap.add_argument("--profile", action="store_true", help="also time pieces of our model")
    ap.add_argument("--skip-torch", action="store_true", help="ours only (for trying variants fast)")
    ap.add_argument("--long", default=None, help="long-context lengths, comma-separated (default 2048 quick, "
                    "2048,8192,16384 full)")
    ap.add_argument("--long-xla-max", type=int, default=8192, help="run xla at long lengths up to this many tokens")
    ap.add_argument("--long-only", action="store_true", help="only the long-context section")
    args = ap.parse_args()
    from vital_jax.host_alloc import keep_freed_memory

    keep_freed_memory()   # XLA's per-run temp block reused, not re-faulted (both sides of a comparison)
    reps = args.reps or (3 if args.quick else 7)
    t_start = time.perf_counter()

    if args.long_only:   # no torch: the same shapes from the HF config dict
        from tests.models import hf_reference as ref
        from vital_jax.models.qwen2_5_vl import ModelConfig

        cfg = ModelConfig.from_hf_dict(mid_hf_config(ref).to_dict(), strict=False)
        long_context(cfg, [int(x) for x in (args.long or "2048,8192,16384").split(",") if x], xla_max=args.long_xla_max)
        emit("wall_s", time.perf_counter() - t_start, "s")
        return

    import jax
    import jax.numpy as jnp
    import torch

    from tests.models import hf_reference as ref
    from vital_jax.models.qwen2_5_vl import load_pretrained, modeling
    from vital_jax.models.qwen2_5_vl.api import vision_arrays, visual_token_index
    from vital_jax.models.qwen2_5_vl.vision_layout import max_frame_patches, vision_layout

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    # ---- same weights on both sides ----------------------------------------------------------
    t0 = time.perf_counter()
    hf = ref.build_hf_model(mid_hf_config(ref), seed=0, attn_implementation=args.torch_attn)
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_hf_checkpoint(hf, tmp)
        cfg, params = load_pretrained(tmp)
    grids = np.asarray([GRID] * BATCH)
    frame_block = max_frame_patches(grids) if args.frame_block is None else args.frame_block
    cfg = cfg.with_runtime(remat=args.remat, scan_layers=args.scan, vision_frame_block=frame_block)
    if args.logits_chunk is not None:
        cfg = cfg.with_runtime(logits_chunk=args.logits_chunk)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    n_params_torch = sum(p.numel() for p in hf.parameters())
    setup_s = time.perf_counter() - t0

    data = make_batch(ref, cfg)
    layout = vision_layout(data["grids"], cfg.vision)
    flops = model_flops(cfg, layout)
    fwd_flops, fwdbwd_flops = flops["total"], 3 * flops["total"]

    # ---- ours ----------------------------------------------------------------------------------
    va = vision_arrays(cfg, data["pixels"], data["grids"])
    ids = jnp.asarray(data["ids"], jnp.int32)
    pos = jnp.asarray(data["pos"], jnp.int32)
    mask = jnp.asarray(data["mask"], jnp.int32)
    vis_index = jnp.asarray(visual_token_index(cfg, data["ids"], None, data["grids"]))
    labels = jnp.asarray(data["labels"], jnp.int32)
    weights = jnp.asarray(data["weights"])

    # inputs are jit arguments (closed-over arrays would become constants that XLA folds at compile time)
    batch = dict(ids=ids, pos=pos, mask=mask, vision=va, vis_index=vis_index, labels=labels, weights=weights)

    def logits_fn(p, b):
        return modeling.model_logits(cfg, p, b["ids"], b["pos"], b["mask"], vision=b["vision"], vis_index=b["vis_index"])

    def loss_fn(p, b):
        return train_loss(cfg, p, b)

    def loss_full_logits(p, b):  # the same loss through the whole [B, L, V] logits
        return train_loss(cfg, p, b, skip_unlabelled=False)

    jfwd = jax.jit(logits_fn)
    jgrad = jax.jit(jax.value_and_grad(loss_fn))
    jgrad_full = jax.jit(jax.value_and_grad(loss_full_logits))
    t0 = time.perf_counter()
    jfwd.lower(params, batch).compile()
    compile_fwd_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    jgrad.lower(params, batch).compile()
    compile_grad_s = time.perf_counter() - t0

    def ours_fwd():
        jfwd(params, batch).block_until_ready()

    def ours_fwd_bwd():
        jax.block_until_ready(jgrad(params, batch))

    def ours_fwd_bwd_full_logits():
        jax.block_until_ready(jgrad_full(params, batch))

    batch_resp = dict(batch, weights=jnp.asarray(data["response_weights"]))

    def ours_fwd_bwd_response():
        jax.block_until_ready(jgrad(params, batch_resp))

    # ---- torch ---------------------------------------------------------------------------------
    t_ids = torch.as_tensor(data["ids"], dtype=torch.long)
    t_kw = dict(
        input_ids=t_ids,
        position_ids=torch.as_tensor(data["pos"], dtype=torch.long),
        attention_mask=torch.as_tensor(data["mask"], dtype=torch.long),
        mm_token_type_ids=torch.as_tensor(ref.mm_token_type_ids(data["ids"], cfg.image_token_id,
                                                                cfg.video_token_id), dtype=torch.int),
        pixel_values_videos=torch.as_tensor(data["pixels"]),
        video_grid_thw=torch.as_tensor(data["grids"], dtype=torch.long),
        second_per_grid_ts=torch.as_tensor(data["spg"]),
        use_cache=False,
    )
    t_labels = torch.as_tensor(data["labels"], dtype=torch.long)
    t_weights = torch.as_tensor(data["weights"])

    t_targets = torch.where(t_weights > 0, t_labels, torch.full_like(t_labels, -100))
    t_targets_resp = torch.where(torch.as_tensor(data["response_weights"]) > 0, t_labels, torch.full_like(t_labels, -100))

    def torch_loss(targets=t_targets):  # what transformers' own causal-LM loss does: fused cross_entropy, ignore_index
        logits = hf(**t_kw).logits
        return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)

    def torch_fwd():
        with torch.no_grad():
            hf(**t_kw).logits

    def torch_fwd_bwd():
        hf.zero_grad(set_to_none=True)
        torch_loss().backward()

    def torch_fwd_bwd_response():
        hf.zero_grad(set_to_none=True)
        torch_loss(t_targets_resp).backward()

    # ---- sanity: same loss, same logits --------------------------------------------------------
    ours_loss, ours_grads = jgrad(params, batch)
    full_loss, full_grads = jgrad_full(params, batch)
    chunked_vs_full = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b_)))) / (float(np.max(np.abs(np.asarray(b_)))) + 1e-30)
                          for a, b_ in zip(jax.tree.leaves(ours_grads), jax.tree.leaves(full_grads)))
    del full_grads
    hf.zero_grad(set_to_none=True)
    tl = torch_loss()
    tl.backward()
    with torch.no_grad():
        tlog = hf(**t_kw).logits.numpy()
    max_logit_diff = float(np.max(np.abs(np.asarray(jfwd(params, batch)) - tlog)))
    # one gradient compared: lm_head ([D, V] ours, [V, D] torch)
    g_ours = np.asarray(ours_grads["lm_head"]).T
    g_torch = hf.lm_head.weight.grad.numpy()
    grad_rel = float(np.linalg.norm(g_ours - g_torch) / np.linalg.norm(g_torch))
    emit("parity", max_logit_diff, "max |logit diff|", loss_ours=float(ours_loss), loss_torch=float(tl.detach()),
         loss_ours_full_logits=float(full_loss), grad_chunked_vs_full_logits_max_rel=chunked_vs_full,
         lm_head_grad_rel_err=grad_rel, n_params=n_params, n_params_torch=n_params_torch)
    del tlog

    # ---- GEMM peak -----------------------------------------------------------------------------
    peaks = gemm_peaks(torch, reps)
    peak = max(peaks["jax"], peaks["torch"])
    emit("gemm_peak_2048", peak, "GFLOP/s", raw=peaks, note="max of jitted JAX and torch 2048^3 f32, best of runs")

    # ---- model timings (interleaved) -----------------------------------------------------------
    fns = {"ours_fwd": ours_fwd, "torch_fwd": torch_fwd}
    if args.skip_torch:
        fns = {"ours_fwd": ours_fwd}
    # two untimed rounds first: the heap (malloc with keep_freed_memory) settles after the
    # first runs of each program interleaved with the other side; until then blocks are faulted in
    tf = interleaved(fns, reps=reps, warmup=2)
    fns = {"ours_fwd_bwd": ours_fwd_bwd, "ours_fwd_bwd_full_logits": ours_fwd_bwd_full_logits,
           "torch_fwd_bwd": torch_fwd_bwd}
    if args.skip_torch:
        del fns["torch_fwd_bwd"]
    # three untimed rounds: the chunked head's program (one lax.cond per chunk) took a round
    # longer than the others to stop faulting in fresh heap pages next to torch's allocations
    tb = interleaved(fns, reps=reps, warmup=3)
    fns = {"ours_fwd_bwd_response": ours_fwd_bwd_response, "torch_fwd_bwd_response": torch_fwd_bwd_response}
    if args.skip_torch:
        del fns["torch_fwd_bwd_response"]
    tr = interleaved(fns, reps=reps, warmup=2)
    times = tf | tb | tr
    m = {k: med(v) for k, v in times.items()}

    from vital_jax.host_alloc import keep_freed_memory

    common = dict(batch=[BATCH, SEQ], keep_freed_memory=keep_freed_memory(), video_tokens_per_row=GRID[0] * GRID[1] * GRID[2] // 4,
                  params=n_params, remat=args.remat, scan=args.scan, frame_block=frame_block,
                  logits_chunk=cfg.runtime.logits_chunk,
                  torch_attn=args.torch_attn,
                  torch_threads=args.threads, reps=reps)
    raw = {k: [round(x, 4) for x in v] for k, v in times.items()} | {f"{k}_median_s": round(v, 4) for k, v in m.items()}
    if not args.skip_torch:
        emit("fwd_bwd_speedup_vs_torch", m["torch_fwd_bwd"] / m["ours_fwd_bwd"], "x",
             baseline=f"transformers {args.torch_attn} fwd+bwd", raw=raw, **common)
        emit("fwd_bwd_full_logits_speedup_vs_torch", m["torch_fwd_bwd"] / m["ours_fwd_bwd_full_logits"], "x",
             baseline=f"transformers {args.torch_attn} fwd+bwd",
             note="ours through the whole [B, L, V] logits like transformers (no lm-head chunk skipping)")
        emit("fwd_bwd_response_speedup_vs_torch", m["torch_fwd_bwd_response"] / m["ours_fwd_bwd_response"], "x",
             baseline=f"transformers {args.torch_attn} fwd+bwd", response_tokens_per_row=RESPONSE,
             note="loss on each row's last RESPONSE tokens only (an SFT row)")
        emit("fwd_speedup_vs_torch", m["torch_fwd"] / m["ours_fwd"], "x",
             baseline=f"transformers {args.torch_attn} fwd", raw=raw, **common)
    full = m["ours_fwd_bwd_full_logits"]
    emit("fwd_bwd_fraction_of_gemm_peak", fwdbwd_flops / full / 1e9 / peak, "fraction",
         achieved_gflops=fwdbwd_flops / full / 1e9, peak_gflops=peak,
         note="ours through the whole logits (the work the FLOP count assumes)", **common)
    emit("fwd_fraction_of_gemm_peak", fwd_flops / m["ours_fwd"] / 1e9 / peak, "fraction",
         achieved_gflops=fwd_flops / m["ours_fwd"] / 1e9, peak_gflops=peak)
    for k, v in m.items():
        f = fwdbwd_flops if "fwd_bwd" in k else fwd_flops
        # the chunk-skipping runs do less than the analytic count: their GFLOP/s would overstate
        extra = {} if k in ("ours_fwd_bwd", "ours_fwd_bwd_response") else {"gflops": f / v / 1e9}
        emit(f"{k}_s", v, "s", **extra)
    emit("model_flops", fwd_flops, "FLOP per forward", fwd_bwd=fwdbwd_flops,
         components={k: v for k, v in flops.items() if k != "total"})
    emit("compile_s", compile_grad_s, "s", fwd=compile_fwd_s, fwd_bwd=compile_grad_s, setup_s=setup_s)

    if args.profile:
        profile(cfg, params, batch, flops, peak, reps, None if args.skip_torch else hf, t_kw, torch)
    lengths = [int(x) for x in (args.long or ("2048" if args.quick else "2048,8192,16384")).split(",") if x]
    long_context(cfg, lengths, xla_max=args.long_xla_max)
    emit("wall_s", time.perf_counter() - t_start, "s")


def long_context(cfg, lengths, *, xla_max: int) -> None:
    """The text decoder of the same model at long lengths, one text-only row with its last 512
    tokens labelled (an SFT answer), remat full (how long rows are trained), through
    ``runtime.attention`` = ``xla`` and ``blockwise``: fwd+bwd seconds (one timed run after a
    warm-up) and the compiled step's temporary memory (``memory_analysis``). ``xla`` is compiled
    at every length but run only up to ``xla_max`` tokens (its scores outgrow this machine's RAM)."""
    import jax
    import jax.numpy as jnp

    from vital_jax.models.qwen2_5_vl import modeling

    params = modeling.init_params(cfg.with_runtime(scan_layers=True), seed=0)[1]
    for L in lengths:
        rng = np.random.default_rng(L)
        ids = jnp.asarray(rng.integers(0, cfg.text.vocab_size, size=(1, L)), jnp.int32)
        labels = jnp.roll(ids, -1, axis=1)
        weights = jnp.zeros((1, L), jnp.float32).at[:, L - 513:L - 1].set(1.0)
        b = dict(ids=ids, labels=labels, weights=weights, mask=jnp.ones((1, L), jnp.int32),
                 pos=jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (3, 1, L)))
        base = None
        for impl in ("xla", "blockwise"):
            c = cfg.with_runtime(attention=impl, remat="full", scan_layers=True)

            def loss(p, b, c=c):
                x = modeling.embed_tokens(c, p, b["ids"], None, None)
                h, _ = modeling.decode_hidden(c, p, x, b["pos"], modeling.CausalMask(b["mask"]))
                return masked_nll(c, p, h, b)

            step = jax.jit(jax.value_and_grad(loss))
            t0 = time.perf_counter()
            compiled = step.lower(params, b).compile()
            compile_s = time.perf_counter() - t0
            temp = compiled.memory_analysis().temp_size_in_bytes / 2**20
            seconds = None
            if impl != "xla" or L <= xla_max:
                jax.block_until_ready(compiled(params, b))
                seconds = timed(lambda: jax.block_until_ready(compiled(params, b)))
                base = seconds if impl == "xla" else base
            emit(f"long_fwd_bwd_{impl}_{L}", seconds, "s", tokens=L, attention=impl, temp_mib=round(temp, 1),
                 compile_s=round(compile_s, 1), ratio_vs_xla=None if (base is None or seconds is None) else
                 round(seconds / base, 3), note="text decoder only, 1 row, remat full, lax.scan")


def profile(cfg, params, batch, flops, peak, reps, hf, t_kw, torch):
    """Time pieces of our model, each jitted alone, forward and forward+backward."""
    import jax
    import jax.numpy as jnp

    from vital_jax.models.qwen2_5_vl import modeling

    b = batch
    key = jax.random.key(0)
    vis_embeds = jax.jit(lambda vp, va: modeling.encode_vision(cfg, vp, va))(params["vision"], b["vision"])
    x0 = jax.jit(lambda p, e, b: modeling.embed_tokens(cfg, p, b["ids"], e, b["vis_index"]))(params, vis_embeds, b)
    h0, _ = jax.jit(lambda p, x, b: modeling.decode_hidden(cfg, p, x, b["pos"], modeling.CausalMask(b["mask"])))(
        params, x0, b)
    ct_vis = jax.random.normal(key, vis_embeds.shape)
    ct_h = jax.random.normal(key, h0.shape)

    def vision(vp, b, ct):
        return jnp.vdot(modeling.encode_vision(cfg, vp, b["vision"]), ct)

    def decoder(p, x, b, ct):
        return jnp.vdot(modeling.decode_hidden(cfg, p, x, b["pos"], modeling.CausalMask(b["mask"]))[0], ct)

    def head(p, h, b):
        return masked_nll(cfg, p, h, b, skip_unlabelled=False)

    dec_params = {"layers": params["layers"], "final_norm": params["final_norm"]}
    head_params = {"lm_head": params["lm_head"]}
    pieces = {  # name: (fn, args, number of differentiated leading args, forward FLOPs)
        "vision": (vision, (params["vision"], b, ct_vis), 1, flops["vision_matmul"] + flops["vision_attention"]),
        "decoder": (decoder, (dec_params, x0, b, ct_h), 2, flops["text_matmul"] + flops["text_attention"]),
        "lm_head_ce": (head, (head_params, h0, b), 2, flops["lm_head"]),
    }
    fns = {}
    for name, (f, a, nd, _) in pieces.items():
        jf = jax.jit(f)
        jg = jax.jit(jax.grad(f, argnums=tuple(range(nd))))
        fns[f"{name}_fwd"] = (lambda jf=jf, a=a: jax.block_until_ready(jf(*a)))
        fns[f"{name}_fwd_bwd"] = (lambda jg=jg, a=a: jax.block_until_ready(jg(*a)))
    times = interleaved(fns, reps=reps, warmup=1)
    for name, (_, _, _, fl) in pieces.items():
        for kind, mult in (("fwd", 1), ("fwd_bwd", 3)):
            s = med(times[f"{name}_{kind}"])
            emit(f"profile_{name}_{kind}_s", s, "s", gflops=mult * fl / s / 1e9,
                 fraction_of_peak=mult * fl / s / 1e9 / peak)
    if hf is None:
        return
    # the torch vision tower alone (its windows are run one by one, see Qwen2_5_VLVisionAttention)
    visual = hf.model.visual
    pv, grid = t_kw["pixel_values_videos"], t_kw["video_grid_thw"]

    def t_vis_fwd():
        with torch.no_grad():
            visual(pv, grid_thw=grid)

    def t_vis_fwd_bwd():
        visual.zero_grad(set_to_none=True)
        visual(pv, grid_thw=grid).pooler_output.sum().backward()

    tt = interleaved({"torch_vision_fwd": t_vis_fwd, "torch_vision_fwd_bwd": t_vis_fwd_bwd}, reps=reps)
    for k, v in tt.items():
        emit(f"profile_{k}_s", med(v), "s")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
