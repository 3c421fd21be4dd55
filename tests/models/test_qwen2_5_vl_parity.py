"""Parity of the Flax Qwen2.5-VL with transformers' Qwen2_5_VLForConditionalGeneration.

Both models get the same weights (ours loaded from the HF checkpoint transformers saved) and the
same explicit M-RoPE positions (the original rule; see hf_reference's module docstring).
"""

import json

import jax
import numpy as np
import pytest
import torch

from tests.models import hf_reference as ref
from vital_jax.models.qwen2_5_vl import (
    CheckpointError, ConfigError, InputError, ModelConfig, PositionError, encode_visual, export_pretrained,
    forward, load_pretrained, rope_index,
)

ATOL = 2e-5


@pytest.fixture(scope="module")
def hf_untied(tmp_path_factory):
    model = ref.build_hf_model(ref.tiny_hf_config(), seed=0)
    d = ref.save_hf_checkpoint(model, tmp_path_factory.mktemp("hf_untied"), max_shard_size="200KB")
    config, params = load_pretrained(d)
    return model, d, config, params


def _batch(segment_rows, seed=0, seconds=None):
    rows = [ref.build_input_ids(segs, seed=seed + i) for i, segs in enumerate(segment_rows)]
    ids, mask = ref.pad_left(rows)
    imgs, vids = [], []
    for segs in segment_rows:
        i, v = ref.segment_grids(segs)
        imgs += i
        vids += v
    batch = {"input_ids": ids, "attention_mask": mask}
    if imgs:
        batch["pixel_values"] = ref.make_visual(imgs, seed=seed + 100)
        batch["image_grid_thw"] = np.asarray(imgs)
    if vids:
        batch["pixel_values_videos"] = ref.make_visual(vids, seed=seed + 200)
        batch["video_grid_thw"] = np.asarray(vids)
        batch["second_per_grid_ts"] = np.asarray(seconds if seconds is not None else [1.0] * len(vids))
    return batch


def _compare_logits(model, config, params, batch):
    pos, _ = ref.reference_rope_index(batch["input_ids"], batch.get("image_grid_thw"), batch.get("video_grid_thw"),
                                      batch.get("second_per_grid_ts"), batch["attention_mask"])
    want = ref.hf_logits(model, batch["input_ids"], pos, **{k: v for k, v in batch.items() if k != "input_ids"})
    got = np.asarray(forward(config, params, {**batch, "position_ids": pos}))
    valid = batch["attention_mask"].astype(bool)
    np.testing.assert_allclose(got[valid], want[valid], atol=ATOL, rtol=1e-4)
    return got


CASES = {
    "text": [[("text", 9)]],
    "image": [[("text", 4), ("image", (1, 4, 6)), ("text", 5)]],
    "video": [[("text", 3), ("video", (4, 4, 4)), ("text", 6)]],
    "two_videos_ragged_windows_and_image": [
        [("text", 2), ("video", (2, 6, 10)), ("text", 3), ("image", (1, 2, 2)), ("text", 2)],
        [("text", 5), ("video", (4, 4, 6)), ("text", 4)],
    ],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(hf_untied, case):
    model, _, config, params = hf_untied
    _compare_logits(model, config, params, _batch(CASES[case], seed=len(case), seconds=None))


def test_low_rope_theta_exposes_height_width_positions(tmp_path):
    # With theta 1e6 and head_dim 16 the h/w frequencies are tiny, so a wrong h/w position moves
    # logits by ~1e-4 only; theta 10 makes every axis matter.
    rope = dict(rope_type="default", rope_theta=10.0, mrope_section=[2, 3, 3])
    model = ref.build_hf_model(ref.tiny_hf_config(text_config=dict(rope_parameters=rope)), seed=2)
    config, params = load_pretrained(ref.save_hf_checkpoint(model, tmp_path))
    assert config.text.rope_theta == 10.0
    _compare_logits(model, config, params, _batch(CASES["two_videos_ragged_windows_and_image"], seed=8))


def test_video_temporal_spacing_and_left_padding(hf_untied):
    model, _, config, params = hf_untied
    rows = [[("text", 2), ("video", (6, 4, 4)), ("text", 3)], [("text", 9)]]
    _compare_logits(model, config, params, _batch(rows, seed=3, seconds=[0.5]))


@pytest.mark.parametrize("grids", [[(2, 6, 10)], [(4, 4, 6), (1, 2, 2), (2, 8, 8)], [(1, 10, 14)]])
def test_vision_tower_matches_transformers(hf_untied, grids):
    model, _, config, params = hf_untied
    pix = ref.make_visual(grids, seed=7)
    want = ref.hf_vision(model, pix, grids)
    got = np.asarray(encode_visual(config, params, pix, np.asarray(grids)))
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("case", sorted(CASES))
def test_rope_index_equals_original_rule(case):
    cfg = ModelConfig.tiny()
    b = _batch(CASES[case] + [[("text", 3), ("video", (3, 2, 4)), ("text", 2)]], seed=1, seconds=None)
    secs = np.linspace(0.5, 2.0, len(b.get("video_grid_thw", [])))
    want = ref.reference_rope_index(b["input_ids"], b.get("image_grid_thw"), b.get("video_grid_thw"), secs,
                                    b["attention_mask"])
    got = rope_index(cfg, b["input_ids"], b.get("image_grid_thw"), b.get("video_grid_thw"), secs, b["attention_mask"])
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_rope_index_text_timestamps_split_per_group():
    """A video written with textual timestamps: each temporal group is positioned as its own
    (1, h, w) item (Qwen3-VL's grid repeated with t = 1), the text between groups gets text
    positions (max so far + 1), and seconds per grid play no part."""
    cfg = ModelConfig.tiny()
    rows = [[("text", 4), ("video_ts", (3, 2, 4)), ("text", 2), ("image", (1, 2, 4)), ("text", 1)],
            [("text", 2), ("video_ts", (2, 4, 4)), ("text", 3)]]
    b = _batch(rows, seed=3)
    pos, deltas = rope_index(cfg, b["input_ids"], b["image_grid_thw"], b["video_grid_thw"], [0.5, 3.0],
                             b["attention_mask"])
    # the same ids with Qwen3-VL's per-group grids (and any seconds) give the same positions
    split = np.asarray([(1, 2, 4)] * 3 + [(1, 4, 4)] * 2)
    same, d2 = rope_index(cfg, b["input_ids"], b["image_grid_thw"], split, [7.0] * 5, b["attention_mask"])
    np.testing.assert_array_equal(pos, same)
    np.testing.assert_array_equal(deltas, d2)
    # row 0 by hand: 4 text, then per group 3 text + <vs> + 2 pads (1x2 merged) + <ve>
    p = pos[:, 0, b["attention_mask"][0] == 1]
    nxt = 4
    i = 4
    for _ in range(3):
        np.testing.assert_array_equal(p[:, i:i + 4], np.broadcast_to(nxt + np.arange(4), (3, 4)))  # text, <vs>
        nxt += 4
        i += 4
        np.testing.assert_array_equal(p[:, i:i + 2], [[nxt, nxt], [nxt, nxt], [nxt, nxt + 1]])  # t, h, w
        nxt += 2  # max (w) + 1
        i += 2
        assert (p[:, i] == nxt).all()  # <|vision_end|>
        nxt += 1
        i += 1
    # a group run of the wrong length is an error naming the group
    bad = b["input_ids"][1].copy()
    bad[np.nonzero(bad == ref.VIDEO_ID)[0][-1]] = 5
    with pytest.raises(PositionError, match="row 0: video item .* group 1 needs a run of 4"):
        rope_index(cfg, bad[None], None, b["video_grid_thw"][1:], None, b["attention_mask"][1:])


def test_tied_embeddings(tmp_path):
    model = ref.build_hf_model(ref.tiny_hf_config(tie_word_embeddings=True), seed=1)
    d = ref.save_hf_checkpoint(model, tmp_path)
    config, params = load_pretrained(d)
    assert config.text.tie_word_embeddings and "lm_head" not in params
    _compare_logits(model, config, params, _batch(CASES["video"], seed=5))


def test_export_then_transformers_loads_same_logits(hf_untied, tmp_path):
    model, _, config, params = hf_untied
    out = export_pretrained(config, params, tmp_path / "export", max_shard_bytes=150_000)
    assert (out / "model.safetensors.index.json").is_file()
    reloaded = ref.Qwen2_5_VLForConditionalGeneration.from_pretrained(
        out, dtype=torch.float32, attn_implementation="eager").eval()
    batch = _batch(CASES["two_videos_ragged_windows_and_image"], seed=9)
    pos, _ = ref.reference_rope_index(batch["input_ids"], batch["image_grid_thw"], batch["video_grid_thw"],
                                      batch["second_per_grid_ts"], batch["attention_mask"])
    kw = {k: v for k, v in batch.items() if k != "input_ids"}
    a = ref.hf_logits(model, batch["input_ids"], pos, **kw)
    b = ref.hf_logits(reloaded, batch["input_ids"], pos, **kw)
    valid = batch["attention_mask"].astype(bool)
    np.testing.assert_allclose(a[valid], b[valid], atol=1e-5, rtol=1e-5)
    # and our own loader reads our export back bit-exactly
    _, again = load_pretrained(out)
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sharded_forward_equals_unsharded(hf_untied, mesh222):
    _, d, config, params = hf_untied
    _, sharded = load_pretrained(d, mesh=mesh222)
    q = sharded["layers"]["q_kernel"]
    assert q.sharding.spec[1] == "fsdp" and q.sharding.spec[2] == "tensor", q.sharding.spec
    assert len(q.addressable_shards) == 8 and q.addressable_shards[0].data.shape[1] == 32
    batch = _batch(CASES["two_videos_ragged_windows_and_image"] * 2, seed=11)
    want = np.asarray(forward(config, params, batch))
    with jax.set_mesh(mesh222):
        got = forward(config, sharded, batch)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=1e-5)


def test_bf16_close_to_f32_transformers(hf_untied):
    model, d, _, _ = hf_untied
    cfg16, p16 = load_pretrained(d, dtype="bfloat16")
    cfg16 = cfg16.with_runtime(compute_dtype="bfloat16")
    assert p16["embed"].dtype == np.dtype("bfloat16")
    batch = _batch(CASES["video"], seed=2)
    pos, _ = ref.reference_rope_index(batch["input_ids"], None, batch["video_grid_thw"], None, batch["attention_mask"])
    want = ref.hf_logits(model, batch["input_ids"], pos, **{k: v for k, v in batch.items() if k != "input_ids"})
    got = np.asarray(forward(cfg16, p16, {**batch, "position_ids": pos}))
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < 0.05, err
    assert (got.argmax(-1) == want.argmax(-1)).mean() > 0.8


def test_scan_and_unrolled_and_remat_agree(hf_untied):
    _, _, config, params = hf_untied
    batch = _batch(CASES["image"], seed=4)
    base = np.asarray(forward(config, params, batch))
    for rt in (dict(scan_layers=False), dict(remat="full"), dict(remat="dots", scan_layers=False)):
        np.testing.assert_allclose(np.asarray(forward(config.with_runtime(**rt), params, batch)), base, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# bad input: clear errors naming the tensor/key/file, before any compute
# ---------------------------------------------------------------------------------------------
def test_checkpoint_errors(hf_untied, tmp_path):
    from vital_jax.models.safetensors_io import SafetensorsFile, save_file

    _, d, config, params = hf_untied
    src = export_pretrained(config, params, tmp_path / "good")
    st = SafetensorsFile(src / "model.safetensors")
    tensors = {n: np.array(st.get(n)) for n in st.names()}

    def write(name, t, cfg_patch=None):
        out = tmp_path / name
        out.mkdir()
        cfg = json.loads((src / "config.json").read_text())
        if cfg_patch:
            cfg_patch(cfg)
        (out / "config.json").write_text(json.dumps(cfg))
        save_file(t, out / "model.safetensors")
        return out

    missing = dict(tensors)
    del missing["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(CheckpointError, match=r"missing tensor.*model\.layers\.1\.mlp\.up_proj\.weight"):
        load_pretrained(write("missing", missing))
    extra = dict(tensors, **{"model.layers.9.extra.weight": np.zeros(2, np.float32)})
    with pytest.raises(CheckpointError, match="unexpected tensor.*layers.9.extra"):
        load_pretrained(write("extra", extra))
    bad = dict(tensors)
    bad["visual.blocks.0.attn.qkv.bias"] = np.zeros(95, np.float32)
    with pytest.raises(CheckpointError, match=r"visual\.blocks\.0\.attn\.qkv\.bias.*\[95\].*\[96\]"):
        load_pretrained(write("shape", bad))
    with pytest.raises(ConfigError, match="unknown config key.*'frobnicate'"):
        load_pretrained(write("unknown_key", tensors, lambda c: c.update(frobnicate=1)))
    with pytest.raises(ConfigError, match="model_type is 'llama'"):
        load_pretrained(write("wrong_type", tensors, lambda c: c.update(model_type="llama")))
    trunc = tmp_path / "trunc"
    trunc.mkdir()
    (trunc / "config.json").write_text((src / "config.json").read_text())
    (trunc / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_pretrained(trunc)


def test_batch_errors(hf_untied):
    _, _, config, params = hf_untied
    b = _batch(CASES["video"], seed=0)
    with pytest.raises(InputError, match="video placeholder tokens but video_grid_thw gives"):
        forward(config, params, {**b, "video_grid_thw": np.asarray([[4, 4, 8]]),
                                 "pixel_values_videos": ref.make_visual([(4, 4, 8)])})
    with pytest.raises(InputError, match="pixel_values has shape"):
        forward(config, params, {**b, "pixel_values_videos": b["pixel_values_videos"][:-1]})
    with pytest.raises(InputError, match="unknown batch key"):
        forward(config, params, {**b, "pixels": 1})
    with pytest.raises(PositionError, match="exceed the grids"):
        rope_index(config, b["input_ids"], None, None)


def test_hf_config_layouts_flat_and_nested():
    nested = ModelConfig.tiny().to_hf_dict()
    flat = {k: v for k, v in nested.items() if k != "text_config"}
    tc = dict(nested["text_config"])
    rope = tc.pop("rope_parameters")
    flat.update({k: v for k, v in tc.items() if k != "model_type"})
    flat["rope_theta"] = rope["rope_theta"]
    flat["rope_scaling"] = {"type": "mrope", "mrope_section": rope["mrope_section"]}
    flat["vision_config"] = dict(nested["vision_config"], in_chans=3)
    del flat["vision_config"]["in_channels"]
    assert ModelConfig.from_hf_dict(flat) == ModelConfig.from_hf_dict(nested) == ModelConfig.tiny()
