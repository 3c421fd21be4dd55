"""The fast attention paths against transformers and against the plain dense formulas.

- vision: banded window attention (always on) and banded frame attention
  (``runtime.vision_frame_block``), on layouts where the band matters: many frames and windows,
  ragged window borders, bucket padding, unrolled and scanned layers;
- text: the no-cache causal path (``CausalMask``: heads-major, query chunks that skip later
  keys) on sequences long enough to be chunked, with left padding, values and gradients.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models import hf_reference as ref
from vital_jax.models.qwen2_5_vl import (
    ConfigError, ModelConfig, encode_visual, forward, init_params, load_pretrained, vision_arrays,
)
from vital_jax.models.qwen2_5_vl import modeling
from vital_jax.models.qwen2_5_vl.vision_layout import max_frame_patches

ATOL = 2e-5


@pytest.fixture(scope="module")
def hf_tiny(tmp_path_factory):
    model = ref.build_hf_model(ref.tiny_hf_config(), seed=0)
    config, params = load_pretrained(ref.save_hf_checkpoint(model, tmp_path_factory.mktemp("hf_fast")))
    return model, config, params


# frames of 24, 4 and 64 patches (tiny windows are 16 patches): 228 patches, so with the frame
# block 64 the band (3 x 64) is narrower than the sequence and frames straddle block borders
GRIDS = [(4, 4, 6), (1, 2, 2), (2, 8, 8)]


@pytest.mark.parametrize("scan", [False, True])
def test_banded_frame_attention_matches_transformers(hf_tiny, scan):
    model, config, params = hf_tiny
    assert max_frame_patches(GRIDS) == 64
    cfg = config.with_runtime(vision_frame_block=max_frame_patches(GRIDS), scan_layers=scan)
    pix = ref.make_visual(GRIDS, seed=3)
    want = ref.hf_vision(model, pix, GRIDS)
    got = np.asarray(encode_visual(cfg, params, pix, np.asarray(GRIDS)))
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("scan", [False, True])
def test_banded_vision_equals_dense_masks_with_bucket_padding(scan):
    # Reference: the tower with every block on the dense [N, N] segment mask (the formula the
    # banded paths replace), real rows only; padded to a bucket so filler rows exist too.
    cfg = ModelConfig.tiny().with_runtime(scan_layers=scan)
    _, params = init_params(cfg, seed=1)
    grids = np.asarray([(3, 6, 10), (2, 4, 4), (1, 10, 2)])
    pix = ref.make_visual([tuple(g) for g in grids], seed=5)
    va = vision_arrays(cfg, pix, grids, pad_to=640)
    n_real = int(np.prod(grids, axis=1).sum()) // cfg.vision.merge_unit

    def dense_attention(cfg_, q, k, vv, seg_w, seg_f, is_full):
        seg = jnp.where(is_full, seg_f, seg_w)
        attn = modeling.attention_fn(cfg_.runtime.attention)
        return attn(q[None], jnp.swapaxes(k, 0, 1)[None], jnp.swapaxes(vv, 0, 1)[None],
                    (seg[:, None] == seg[None, :])[None], cfg_.vision.head_dim ** -0.5)[0]

    fast = jax.jit(lambda vp, va: modeling.encode_vision(cfg.with_runtime(vision_frame_block=60), vp, va))
    got = np.asarray(fast(params["vision"], va))[:n_real]
    mp = pytest.MonkeyPatch()
    mp.setattr(modeling, "_vision_attention", dense_attention)
    try:
        want = np.asarray(jax.jit(lambda vp, va: modeling.encode_vision(cfg, vp, va))(params["vision"], va))[:n_real]
    finally:
        mp.undo()
    assert np.abs(want).max() > 1e-3
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


def test_frame_block_smaller_than_a_frame_raises():
    cfg = ModelConfig.tiny().with_runtime(vision_frame_block=32)   # the (2, 8, 8) item has 64-patch frames
    _, params = init_params(cfg)
    pix = ref.make_visual(GRIDS, seed=1)
    with pytest.raises(Exception, match="vision_frame_block=32"):
        jax.block_until_ready(encode_visual(cfg, params, pix, np.asarray(GRIDS)))
    # a frame of exactly the block size is fine
    ok = encode_visual(cfg.with_runtime(vision_frame_block=64), params, pix, np.asarray(GRIDS))
    assert np.all(np.isfinite(np.asarray(ok)))
    with pytest.raises(ConfigError, match="vision_frame_block"):
        cfg.with_runtime(vision_frame_block=-1)


def test_long_sequence_logits_match_transformers(hf_tiny):
    # 300+ tokens: the causal path splits queries into chunks; left padding on row 1
    model, config, params = hf_tiny
    rows = [[("text", 120), ("video", (2, 6, 10)), ("text", 150)],
            [("text", 40), ("image", (1, 4, 6)), ("text", 200)]]
    ids, mask = ref.pad_left([ref.build_input_ids(s, seed=i) for i, s in enumerate(rows)])
    assert ids.shape[1] >= 256 and len(modeling._query_chunks(ids.shape[1])) > 1
    imgs, vids = [], []
    for s in rows:
        i, v = ref.segment_grids(s)
        imgs += i
        vids += v
    batch = dict(input_ids=ids, attention_mask=mask, pixel_values=ref.make_visual(imgs, seed=1),
                 image_grid_thw=np.asarray(imgs), pixel_values_videos=ref.make_visual(vids, seed=2),
                 video_grid_thw=np.asarray(vids), second_per_grid_ts=np.asarray([1.0]))
    pos, _ = ref.reference_rope_index(ids, batch["image_grid_thw"], batch["video_grid_thw"],
                                      batch["second_per_grid_ts"], mask)
    want = ref.hf_logits(model, ids, pos, **{k: v for k, v in batch.items() if k != "input_ids"})
    got = np.asarray(forward(config, params, {**batch, "position_ids": pos}))
    valid = mask.astype(bool)
    np.testing.assert_allclose(got[valid], want[valid], atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("n", [300, 517])
def test_causal_mask_path_equals_dense_mask_values_and_grads(n):
    cfg = ModelConfig.tiny()
    _, params = init_params(cfg, seed=2)
    B = 2
    rng = np.random.default_rng(n)
    x = jnp.asarray(rng.normal(size=(B, n, cfg.text.hidden_size)), jnp.float32)
    valid = np.ones((B, n), np.int32)
    valid[1, :37] = 0                                                   # left padding on row 1
    pos = np.broadcast_to(np.maximum(np.cumsum(valid, axis=1) - 1, 0), (3, B, n)).astype(np.int32)
    w = jnp.asarray(rng.normal(size=(B, n, cfg.text.hidden_size)) * valid[..., None], jnp.float32)
    dec = {"layers": params["layers"], "final_norm": params["final_norm"]}

    def loss(p, x, mask):
        return jnp.vdot(modeling.decode_hidden(cfg, p, x, pos, mask)[0], w)

    fast = jax.jit(jax.value_and_grad(lambda p, x: loss(p, x, modeling.CausalMask(valid)), argnums=(0, 1)))
    dense = jax.jit(jax.value_and_grad(lambda p, x: loss(p, x, modeling.causal_mask(valid)), argnums=(0, 1)))
    (lf, gf), (ld, gd) = fast(dec, x), dense(dec, x)
    np.testing.assert_allclose(float(lf), float(ld), rtol=1e-5)
    gx_f, gx_d = np.asarray(gf[1]), np.asarray(gd[1])
    np.testing.assert_allclose(gx_f[valid.astype(bool)], gx_d[valid.astype(bool)], atol=1e-5, rtol=1e-4)
    for a, b in zip(jax.tree.leaves(gf[0]), jax.tree.leaves(gd[0])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="CausalMask"):
        modeling.decode_hidden(cfg, dec, x, pos, modeling.CausalMask(valid),
                               cache=modeling.KVCache.zeros(cfg, B, n), write_at=jnp.zeros((B,), jnp.int32))
