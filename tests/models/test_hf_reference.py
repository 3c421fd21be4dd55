"""Tests of the transformers reference harness (tests/models/hf_reference.py).

torch vs torch only: these prove the harness itself is right (explicit positions are used,
chunked/cached forwards equal a full forward, the reference rope rule is what the design doc
says and differs from transformers 5.23 exactly where documented).
"""

import json

import numpy as np
import pytest
import torch

from tests.models import hf_reference as R

ATOL = 2e-5


@pytest.fixture(scope="module")
def model():
    return R.build_hf_model(R.tiny_hf_config(), seed=0)


def _case(segs, seed=0, spg=None):
    ids = R.build_input_ids(segs, seed=seed)
    imgs, vids = R.segment_grids(segs)
    return dict(
        ids=ids,
        image_grid_thw=imgs,
        video_grid_thw=vids,
        pixel_values=R.make_visual(imgs, seed=100 + seed) if imgs else None,
        pixel_values_videos=R.make_visual(vids, seed=200 + seed) if vids else None,
        second_per_grid_ts=spg,
    )


def _vis(c):
    return {k: c[k] for k in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw",
                              "second_per_grid_ts")}


def _ref_pos(c, mask=None, ids=None):
    ids = c["ids"][None] if ids is None else ids
    return R.reference_rope_index(ids, c["image_grid_thw"], c["video_grid_thw"], c["second_per_grid_ts"], mask)


# ------------------------------------------------------------------------------- config / model


def test_tiny_config_values_and_overrides():
    cfg = R.tiny_hf_config()
    t, v = cfg.text_config, cfg.vision_config
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads) == (64, 2, 4, 2)
    assert t.hidden_size // t.num_attention_heads == 16
    assert (t.intermediate_size, t.vocab_size, t.max_position_embeddings) == (128, 320, 4096)
    assert t.rope_parameters["rope_theta"] == 1e6 and t.rope_parameters["mrope_section"] == [2, 3, 3]
    assert t.rms_norm_eps == 1e-6 and cfg.tie_word_embeddings is False
    assert (v.depth, v.hidden_size, v.intermediate_size, v.num_heads, v.out_hidden_size) == (4, 32, 64, 2, 64)
    assert (v.patch_size, v.temporal_patch_size, v.spatial_merge_size, v.window_size) == (14, 2, 2, 56)
    assert list(v.fullatt_block_indexes) == [1, 3] and v.tokens_per_second == 2 and v.in_channels == 3
    assert (cfg.image_token_id, cfg.video_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id) == (
        310, 311, 308, 309)
    assert (t.eos_token_id, t.pad_token_id, t.bos_token_id) == (305, 304, None)

    o = R.tiny_hf_config(tie_word_embeddings=True, text_num_hidden_layers=1, vision_depth=2,
                         vision_fullatt_block_indexes=[0], vision_config=dict(window_size=112))
    assert o.tie_word_embeddings and o.text_config.num_hidden_layers == 1
    assert o.vision_config.depth == 2 and list(o.vision_config.fullatt_block_indexes) == [0]
    assert o.vision_config.window_size == 112
    assert R.TINY["text_config"]["num_hidden_layers"] == 2  # TINY itself untouched


def test_build_model_perturbs_every_parameter(model):
    assert not model.training
    seen = 0
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32
        p = p.detach()
        assert float(p.std()) > 0.01, name  # no constant tensor (norms were 1, biases 0)
        if p.ndim == 1 and ("norm" in name or name.endswith("ln_q.weight")):
            assert 0.5 < float(p.mean()) < 1.5, name
            assert float((p - 1).abs().max()) > 0.05, name
        seen += 1
    assert seen == len(list(model.parameters()))
    again = R.build_hf_model(R.tiny_hf_config(), seed=0)
    other = R.build_hf_model(R.tiny_hf_config(), seed=1)
    for (n, a), (_, b), (_, c) in zip(model.named_parameters(), again.named_parameters(),
                                      other.named_parameters()):
        assert torch.equal(a, b), n
        assert not torch.equal(a, c), n
    tied = R.build_hf_model(R.tiny_hf_config(tie_word_embeddings=True))
    assert tied.lm_head.weight is tied.model.language_model.embed_tokens.weight


def test_inputs_helpers():
    segs = [("text", 5), ("video", (2, 4, 6)), ("text", 3), ("image", (1, 4, 4))]
    ids = R.build_input_ids(segs, seed=3)
    assert ids.dtype == np.int64 and len(ids) == 5 + (2 + 12) + 3 + (2 + 4)
    assert (ids[:5] < 300).all() and ids[5] == R.VISION_START_ID and (ids[6:18] == R.VIDEO_ID).all()
    assert ids[18] == R.VISION_END_ID and ids[22] == R.VISION_START_ID and (ids[23:27] == R.IMAGE_ID).all()
    assert R.segment_grids(segs) == ([(1, 4, 4)], [(2, 4, 6)])
    pv = R.make_visual([(2, 4, 6), (1, 4, 4)], seed=0)
    assert pv.shape == (48 + 16, 1176) and pv.dtype == np.float32
    assert np.array_equal(pv, R.make_visual([(2, 4, 6), (1, 4, 4)], seed=0))
    with pytest.raises(ValueError):
        R.make_visual([(1, 3, 4)])
    tt = R.mm_token_type_ids(ids)
    assert (tt[6:18] == 2).all() and (tt[23:27] == 1).all() and tt.sum() == 2 * 12 + 4
    padded, mask = R.pad_left([ids[:3], ids[:5]])
    assert padded.shape == (2, 5) and mask[0].tolist() == [0, 0, 1, 1, 1] and padded[0, 0] == R.PAD_ID


# ------------------------------------------------------------------------------- rope index


def test_reference_rope_index_hand_computed():
    # text text | S V*8 E | text ; video grid (4, 2, 4) -> merged t=4, 1x2
    segs = [("text", 2), ("video", (4, 2, 4)), ("text", 1)]
    ids = R.build_input_ids(segs)
    pos, d = R.reference_rope_index(ids[None], video_grid_thw=[(4, 2, 4)], second_per_grid_ts=[0.5])
    # interval = 0.5 s * 2 tok/s = 1.0
    assert pos[0, 0].tolist() == [0, 1, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 8]
    assert pos[1, 0].tolist() == [0, 1, 2, 3, 3, 3, 3, 3, 3, 3, 3, 7, 8]
    assert pos[2, 0].tolist() == [0, 1, 2, 3, 4, 3, 4, 3, 4, 3, 4, 7, 8]
    assert d.tolist() == [8 + 1 - 13]
    # interval 1.5 -> floor(0, 1.5, 3, 4.5) = 0, 1, 3, 4
    pos, d = R.reference_rope_index(ids[None], video_grid_thw=[(4, 2, 4)], second_per_grid_ts=[0.75])
    assert pos[0, 0].tolist() == [0, 1, 2, 3, 3, 4, 4, 6, 6, 7, 7, 8, 9]
    assert d.tolist() == [9 + 1 - 13]
    # default spg = 1.0 -> interval 2; image temporal stays at st; 1-D ids accepted
    segs = [("text", 1), ("image", (1, 4, 6)), ("text", 2)]
    pos, d = R.reference_rope_index(R.build_input_ids(segs), image_grid_thw=[(1, 4, 6)])
    assert pos.shape == (3, 1, 1 + 1 + 6 + 1 + 2)
    assert pos[:, 0, 2:8].tolist() == [[2] * 6, [2, 2, 2, 3, 3, 3], [2, 3, 4, 2, 3, 4]]
    assert pos[:, 0, 8:].tolist() == [[5, 6, 7]] * 3 and d.tolist() == [8 - 11]
    with pytest.raises(ValueError):  # grid says 6 tokens, ids hold 6 -> asking for more fails
        R.reference_rope_index(R.build_input_ids(segs), image_grid_thw=[(1, 4, 8)])


@pytest.mark.parametrize("segs,spg", [
    ([("text", 9)], None),
    ([("text", 3), ("image", (1, 4, 6)), ("text", 4), ("image", (1, 6, 2)), ("text", 2)], None),
    # single short video: (T-1) * interval = 1 * 2 = 2 < max(4, 6)/2 = 3
    ([("text", 4), ("video", (2, 4, 6)), ("text", 3)], [1.0]),
    # (T-1) * interval = 3 * 0.5 * 2 = 3 < max(8, 4)/2 = 4
    ([("text", 2), ("video", (4, 8, 4)), ("text", 3), ("image", (1, 2, 2)), ("text", 1)], [0.5]),
])
def test_reference_rope_agrees_with_transformers_where_rules_coincide(model, segs, spg):
    c = _case(segs, spg=spg)
    ref, ref_d = _ref_pos(c)
    hf, hf_d = R.hf_rope_index(model, c["ids"][None], c["image_grid_thw"], c["video_grid_thw"], spg)
    np.testing.assert_array_equal(ref, hf)
    np.testing.assert_array_equal(ref_d, hf_d)


def test_reference_rope_differs_from_transformers_for_long_videos(model):
    # (4,4,6): (T-1)*interval = 3*2 = 6 >= max(4,6)/2 = 3 -> text after the video differs.
    # (2,6,10): 1*2 = 2 < 5 would agree on its own, but everything after the first video shifts.
    segs = [("text", 5), ("video", (4, 4, 6)), ("text", 3), ("video", (2, 6, 10)), ("text", 4)]
    c = _case(segs, spg=[1.0, 1.0])
    ref, ref_d = _ref_pos(c)
    hf, hf_d = R.hf_rope_index(model, c["ids"][None], None, c["video_grid_thw"], [1.0, 1.0])
    st = 6  # 5 text + vision_start
    n1 = 4 * 2 * 3
    v1 = slice(st, st + n1)
    np.testing.assert_array_equal(ref[:, :, :v1.stop], hf[:, :, :v1.stop])  # same up to the 1st video
    assert ref[0, 0, v1].max() == st + 6 and ref[1:, 0, v1].max() == st + 2
    # text after: original resumes at max + 1 = st + 7, transformers at st + max(2, 3) = st + 3
    assert ref[:, 0, v1.stop].tolist() == [st + 7] * 3
    assert hf[:, 0, v1.stop].tolist() == [st + 3] * 3
    np.testing.assert_array_equal(ref[:, :, v1.stop:], hf[:, :, v1.stop:] + 4)  # constant shift after
    assert ref_d[0] == hf_d[0] + 4


def test_reference_rope_left_padding(model):
    segs_a = [("text", 3), ("image", (1, 4, 6)), ("text", 4)]
    segs_b = [("text", 2)]
    a, b = _case(segs_a, seed=1), _case(segs_b, seed=2)
    ids, mask = R.pad_left([a["ids"], b["ids"]])
    L = ids.shape[1]
    n_pad = int((mask[1] == 0).sum())
    ref, ref_d = R.reference_rope_index(ids, a["image_grid_thw"], None, None, mask)
    solo, solo_d = _ref_pos(a)
    np.testing.assert_array_equal(ref[:, 0], solo[:, 0])
    assert ref[:, 1, n_pad:].tolist() == [[0, 1]] * 3
    assert (ref[:, 1, :n_pad] == 1).all()  # original: masked tokens at position 1
    assert ref_d.tolist() == [solo_d[0], 2 - L]  # max + 1 - padded length
    hf, hf_d = R.hf_rope_index(model, ids, a["image_grid_thw"], None, None, mask)
    np.testing.assert_array_equal(np.where(mask[None] == 1, ref, 0), np.where(mask[None] == 1, hf, 0))
    assert (hf[:, 1, :n_pad] == 0).all()  # transformers 5.23 leaves them at 0
    assert hf_d.tolist() == [ref_d[0], ref_d[1] + n_pad]  # 5.23: max + 1 - n_valid


# ------------------------------------------------------------------------------- logits


def test_hf_logits_uses_explicit_positions(model):
    segs = [("text", 5), ("video", (4, 4, 6)), ("text", 6)]
    c = _case(segs, spg=[1.0])
    ids = c["ids"][None]
    ref, _ = _ref_pos(c)
    hf, _ = R.hf_rope_index(model, ids, None, c["video_grid_thw"], [1.0])
    a = R.hf_logits(model, ids, ref, **_vis(c))
    b = R.hf_logits(model, ids, hf, **_vis(c))
    assert a.shape == (1, len(c["ids"]), 320) and a.dtype == np.float32
    # identical up to (and including) the video, different once text positions diverge
    end = 6 + 24
    np.testing.assert_allclose(a[:, :end], b[:, :end], atol=ATOL)
    assert np.abs(a[:, end:] - b[:, end:]).max() > 1e-2
    # changing the temporal axis of one token only changes that token and later rows
    p2 = ref.copy()
    p2[0, 0, 10] += 3
    d = np.abs(R.hf_logits(model, ids, p2, **_vis(c)) - a).max(-1)[0]
    assert d[:10].max() < ATOL and d[10] > 1e-3
    # our explicit path with transformers' own positions == transformers' automatic path
    kw = R._visual_kwargs(c["pixel_values"], None, c["pixel_values_videos"], c["video_grid_thw"], [1.0])
    with torch.no_grad():
        auto = model(input_ids=torch.tensor(ids),
                     mm_token_type_ids=torch.tensor(R.mm_token_type_ids(ids)), **kw).logits.numpy()
    np.testing.assert_allclose(auto, b, atol=ATOL)


def test_height_width_axes_are_used_with_a_small_rope_theta():
    # With rope_theta 1e6 and mrope_section [2, 3, 3] (head_dim 16) the height/width axes own
    # the LOWEST frequencies (1e6 ** (-i/8), i = 2..7: 3e-2 ... 6e-6), so an h/w position error
    # moves tiny-model logits by only ~1e-4.  A theta override makes them count.
    cfg = R.tiny_hf_config(text_config=dict(
        rope_parameters=dict(rope_type="default", rope_theta=10.0, mrope_section=[2, 3, 3])))
    m = R.build_hf_model(cfg, seed=0)
    c = _case([("text", 3), ("image", (1, 4, 6)), ("text", 3)])
    pos, _ = _ref_pos(c)
    base = R.hf_logits(m, c["ids"][None], pos, **_vis(c))
    for axis in (1, 2):
        p2 = pos.copy()
        p2[axis, 0, 6] += 1
        d = np.abs(R.hf_logits(m, c["ids"][None], p2, **_vis(c)) - base).max(-1)[0]
        assert d[:6].max() < ATOL and d[6] > 1e-2, axis


@pytest.mark.parametrize("segs,spg", [
    ([("text", 7)], None),
    ([("text", 3), ("image", (1, 6, 4)), ("text", 5)], None),
    ([("text", 2), ("video", (2, 6, 10)), ("text", 4)], [1.0]),
    ([("text", 2), ("video", (2, 6, 10)), ("text", 3), ("video", (4, 4, 6)), ("text", 2),
      ("image", (1, 2, 4)), ("text", 2)], [1.0, 0.5]),
])
def test_harness_modalities_and_vision_features(model, segs, spg):
    c = _case(segs, spg=spg)
    pos, _ = _ref_pos(c)
    lg = R.hf_logits(model, c["ids"][None], pos, **_vis(c))
    assert lg.shape == (1, len(c["ids"]), 320) and np.isfinite(lg).all() and lg.std() > 0.3
    for pv, grids in ((c["pixel_values"], c["image_grid_thw"]), (c["pixel_values_videos"], c["video_grid_thw"])):
        if not grids:
            continue
        merged, hidden = R.hf_vision(model, pv, grids, return_blocks=True)
        n = sum(t * h * w for t, h, w in grids)
        assert merged.shape == (n // 4, 64) and len(hidden) == 1 + 4
        assert all(h.shape == (n, 32) for h in hidden)
        # items never attend to each other: per-item vision == joint vision
        off, moff = 0, 0
        for g in grids:
            k = g[0] * g[1] * g[2]
            alone, alone_hidden = R.hf_vision(model, pv[off:off + k], [g], return_blocks=True)
            np.testing.assert_allclose(alone, merged[moff:moff + k // 4], atol=ATOL)
            np.testing.assert_allclose(alone_hidden[-1], hidden[-1][off:off + k], atol=ATOL)
            off, moff = off + k, moff + k // 4
        # the harness's merged features are what the model scatters into the placeholders
        assert not model.model.visual.blocks[0]._forward_hooks  # hooks removed
        with torch.no_grad():
            feats = torch.cat(model.model.get_video_features(
                torch.tensor(pv), torch.tensor(grids)).pooler_output).numpy()
        np.testing.assert_allclose(feats, merged, atol=ATOL)


def test_hidden_states_are_in_original_patch_order(model):
    # with window attention, block outputs must follow the input patch order: the patch-embed
    # output (no mixing) of a permuted merge unit permutes the same way.
    g = (1, 8, 8)
    pv = R.make_visual([g], seed=5)
    _, hidden = R.hf_vision(model, pv, [g], return_blocks=True)
    with torch.no_grad():
        emb = model.model.visual.patch_embed(torch.tensor(pv)).numpy()
    np.testing.assert_allclose(hidden[0], emb, atol=1e-6)
    # block outputs are row-aligned with patches: row i depends most on patch i
    pv2 = pv.copy()
    pv2[37] += 5.0
    _, hidden2 = R.hf_vision(model, pv2, [g], return_blocks=True)
    delta = np.abs(hidden2[1] - hidden[1]).max(-1)
    assert int(delta.argmax()) == 37


def test_batch_left_padding_matches_single_rows(model):
    a = _case([("text", 4), ("video", (2, 6, 10)), ("text", 3)], seed=1, spg=[1.0])
    b = _case([("text", 2), ("image", (1, 4, 4)), ("text", 2)], seed=2)
    ids, mask = R.pad_left([a["ids"], b["ids"]])
    pos, _ = R.reference_rope_index(ids, b["image_grid_thw"], a["video_grid_thw"], [1.0], mask)
    lg = R.hf_logits(model, ids, pos, mask, pixel_values=b["pixel_values"], image_grid_thw=b["image_grid_thw"],
                     pixel_values_videos=a["pixel_values_videos"], video_grid_thw=a["video_grid_thw"],
                     second_per_grid_ts=[1.0])
    for row, c in ((0, a), (1, b)):
        solo = R.hf_logits(model, c["ids"][None], _ref_pos(c)[0], **_vis(c))
        n = len(c["ids"])
        np.testing.assert_allclose(lg[row, -n:], solo[0], atol=ATOL)


# ------------------------------------------------------------------------------- cache paths


def test_incremental_logits_equal_full_forward_with_new_video(model):
    # two left-padded rows; turn 1 differs per row, turn 2 brings a NEW video in each row
    t1 = [[("text", 6), ("image", (1, 4, 6)), ("text", 3)], [("text", 2), ("video", (2, 4, 4)), ("text", 3)]]
    t2 = [[("text", 2), ("video", (2, 6, 10)), ("text", 4)], [("text", 2), ("video", (4, 4, 6)), ("text", 10)]]
    rows, n2 = [], set()
    for r in range(2):
        full = t1[r] + t2[r]
        rows.append(R.build_input_ids(full, seed=10 + r))
        n2.add(len(R.build_input_ids(t2[r])))
    (n2,) = n2  # same turn-2 length in both rows -> one split index
    ids, mask = R.pad_left(rows)
    L = ids.shape[1]
    split = L - n2
    imgs = [(1, 4, 6)]
    vids = [(2, 6, 10), (2, 4, 4), (4, 4, 6)]  # row-major: row0 turn2, then row1 turn1, turn2
    spg = [1.0, 0.5, 1.0]
    pv, pvv = R.make_visual(imgs, 1), R.make_visual(vids, 2)
    pos, _ = R.reference_rope_index(ids, imgs, vids, spg, mask)
    vis = dict(pixel_values=pv, image_grid_thw=imgs, pixel_values_videos=pvv, video_grid_thw=vids,
               second_per_grid_ts=spg)
    full = R.hf_logits(model, ids, pos, mask, **vis)
    inc = R.hf_incremental_logits(model, ids, pos, split, mask, **vis)
    assert inc.shape == (2, L - split, 320)
    assert mask[:, split:].all()
    np.testing.assert_allclose(inc, full[:, split:], atol=ATOL)
    # three cuts, the first inside row 1's left padding (only real rows are compared)
    three = R.hf_incremental_logits(model, ids, pos, [3, split, L - 2], mask, **vis)
    real = mask[:, 3:].astype(bool)
    np.testing.assert_allclose(three[real], full[:, 3:][real], atol=ATOL)
    with pytest.raises(ValueError, match="straddles"):  # cut inside the new videos
        R.hf_incremental_logits(model, ids, pos, split + 5, mask, **vis)


def test_greedy_matches_teacher_forced_full_forward(model):
    a = _case([("text", 3), ("video", (2, 4, 6)), ("text", 4)], seed=1, spg=[1.0])
    b = _case([("text", 5)], seed=2)
    ids, mask = R.pad_left([a["ids"], b["ids"]])
    pos, deltas = R.reference_rope_index(ids, None, a["video_grid_thw"], [1.0], mask)
    vis = dict(pixel_values_videos=a["pixel_values_videos"], video_grid_thw=a["video_grid_thw"],
               second_per_grid_ts=[1.0])
    n_new = 5
    gen, glog = R.hf_greedy(model, ids, pos, n_new, mask, return_logits=True, **vis)
    assert gen.shape == (2, n_new) and glog.shape == (2, n_new, 320)
    np.testing.assert_array_equal(gen, glog.argmax(-1))
    # teacher-forced: the generated tokens continue at L + delta = max + 1 on all axes
    L = ids.shape[1]
    ext_ids = np.concatenate([ids, gen[:, :-1]], 1)
    ext_mask = np.concatenate([mask, np.ones((2, n_new - 1), np.int64)], 1)
    nxt = L + deltas
    ext = np.arange(n_new - 1)[None, :] + nxt[:, None]
    ext_pos = np.concatenate([pos, np.broadcast_to(ext[None], (3, 2, n_new - 1))], 2)
    full = R.hf_logits(model, ext_ids, ext_pos, ext_mask, **vis)
    np.testing.assert_allclose(full[:, L - 1:], glog, atol=ATOL)
    # per-row greedy equals the batched one
    solo = R.hf_greedy(model, a["ids"][None], _ref_pos(a)[0], n_new, **_vis(a))
    np.testing.assert_array_equal(solo[0], gen[0])
    # eos handling: stop tokens after the first eos become pad
    eos = int(gen[0, 1])
    g2 = R.hf_greedy(model, ids, pos, n_new, mask, eos_token_id=eos, **vis)
    assert g2[0, 1] == eos and (g2[0, 2:] == R.PAD_ID).all()


# ------------------------------------------------------------------------------- checkpoint


@pytest.mark.parametrize("tie,original", [(False, True), (True, True), (False, False)])
def test_sharded_save_and_reload(tmp_path, monkeypatch, tie, original):
    from safetensors import safe_open
    from transformers import Qwen2_5_VLForConditionalGeneration

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    m = R.build_hf_model(R.tiny_hf_config(tie_word_embeddings=tie), seed=3)
    d = R.save_hf_checkpoint(m, tmp_path / "ckpt", max_shard_size="100KB", original_format=original)
    index = json.loads((d / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all((d / s).exists() for s in shards)
    keys = set()
    for s in shards:
        with safe_open(str(d / s), "pt") as f:
            keys |= set(f.keys())
    assert keys == set(index["weight_map"])
    assert ("lm_head.weight" in keys) == (not tie)
    if original:  # published hub layout
        assert {"model.embed_tokens.weight", "model.layers.1.self_attn.q_proj.bias", "model.norm.weight",
                "visual.patch_embed.proj.weight", "visual.blocks.3.norm2.weight", "visual.merger.mlp.0.bias",
                "visual.merger.ln_q.weight"} <= keys
        assert not any(k.startswith(("model.language_model.", "model.visual.")) for k in keys)
    else:  # transformers 5.x module layout
        assert {"model.language_model.embed_tokens.weight", "model.visual.merger.mlp.0.bias"} <= keys
    n_params = len(dict(m.named_parameters()))
    assert len(keys) == n_params
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["text_config"]["rope_parameters"]["mrope_section"] == [2, 3, 3]

    back = Qwen2_5_VLForConditionalGeneration.from_pretrained(d, dtype=torch.float32,
                                                              attn_implementation="eager").eval()
    for (n, a), (_, b) in zip(m.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), n
    c = _case([("text", 3), ("image", (1, 4, 4)), ("text", 2)])
    pos, _ = _ref_pos(c)
    np.testing.assert_array_equal(R.hf_logits(m, c["ids"][None], pos, **_vis(c)),
                                  R.hf_logits(back, c["ids"][None], pos, **_vis(c)))

    single = R.save_hf_checkpoint(m, tmp_path / "single")
    assert (single / "model.safetensors").exists() and not (single / "model.safetensors.index.json").exists()
