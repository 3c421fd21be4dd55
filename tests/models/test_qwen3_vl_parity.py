"""Qwen3-VL (dense) parity: ours vs transformers' ``Qwen3VLForConditionalGeneration``.

Both sides run a tiny random model in float32 (transformers with eager attention, on CPU); ours
loads the very weights transformers' ``save_pretrained`` wrote. Position ids come from
transformers' own ``get_rope_index`` on the same inputs and are fed to both models, so what is
compared is the network, not two rope-index rules. Logits are compared at real (unpadded)
positions only.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration  # noqa: E402

from tests.models.hf_reference import (  # noqa: E402
    EOS_ID, IMAGE_ID, PAD_ID, VIDEO_ID, VISION_END_ID, VISION_START_ID, build_input_ids, mm_token_type_ids, pad_left,
)
from vital_jax.models import qwen3_vl  # noqa: E402
from vital_jax.models.qwen3_vl import ModelConfig, forward, load_pretrained, modeling  # noqa: E402

ATOL = 1e-4

#: transformers' nested config of ModelConfig.tiny(): the same numbers on both sides.
TINY = dict(
    text_config=dict(
        hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        intermediate_size=128, vocab_size=320, max_position_embeddings=4096, rms_norm_eps=1e-6,
        rope_parameters=dict(rope_type="default", rope_theta=5e5, mrope_section=[6, 5, 5], mrope_interleaved=True),
        bos_token_id=None, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
    ),
    vision_config=dict(
        depth=3, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=16,
        temporal_patch_size=2, spatial_merge_size=2, num_position_embeddings=36, deepstack_visual_indexes=[0, 2],
    ),
    image_token_id=IMAGE_ID, video_token_id=VIDEO_ID, vision_start_token_id=VISION_START_ID,
    vision_end_token_id=VISION_END_ID, tie_word_embeddings=False,
)
PATCH_DIM = 3 * 2 * 16 * 16
IMAGE_GRID = (1, 4, 8)   # 4x8 patches: both axes resampled from the 6x6 table (down and up)
VIDEO_GRID = (2, 4, 4)   # two temporal groups, written with textual timestamps as Qwen3-VL renders videos


def _hf_model(tie: bool, seed: int):
    """Random transformers model with every parameter redrawn (HF's own init leaves norms at 1 and
    biases at 0, which would hide a swapped scale/bias): norms 1 + 0.1 N, biases 0.1 N, the
    token embedding 0.5 N, matrices N / sqrt(fan_in)."""
    d = copy.deepcopy(TINY)
    d["tie_word_embeddings"] = tie
    model = Qwen3VLForConditionalGeneration._from_config(Qwen3VLConfig(**d), attn_implementation="eager",
                                                         dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if p.ndim == 1:
                p.copy_(1.0 + 0.1 * noise if torch.all(p == 1) else 0.1 * noise)
            elif "embed_tokens" in name:
                p.copy_(0.5 * noise)
            else:
                p.copy_(noise / np.sqrt(int(np.prod(p.shape[1:]))))
    return model.eval()


def saved_hf_model(tmp_path_factory, *, tie: bool, seed: int):
    """``(transformers model, our config, our params)``: a random model saved and loaded by us."""
    model = _hf_model(tie=tie, seed=seed)
    d = tmp_path_factory.mktemp(f"qwen3_vl_{'tied' if tie else 'untied'}_{seed}")
    model.save_pretrained(d)
    cfg, params = load_pretrained(d)
    return model, cfg, params


@pytest.fixture(scope="module")
def untied(tmp_path_factory):
    return saved_hf_model(tmp_path_factory, tie=False, seed=0)


def _pixels(grid, seed):
    return np.random.default_rng(seed).standard_normal((int(np.prod(grid)), PATCH_DIM)).astype(np.float32)


def _hf_positions(model, ids, mask, image_grids=(), video_grids=()):
    """transformers' own Qwen3-VL rope index (per temporal group for videos)."""
    with torch.no_grad():
        pos, _ = model.model.get_rope_index(
            torch.as_tensor(ids), mm_token_type_ids=torch.as_tensor(mm_token_type_ids(ids), dtype=torch.int),
            image_grid_thw=torch.tensor(image_grids, dtype=torch.long) if image_grids else None,
            video_grid_thw=torch.tensor(video_grids, dtype=torch.long) if video_grids else None,
            attention_mask=torch.as_tensor(mask),
        )
    return pos.numpy()


def _hf_logits(model, ids, pos, mask, **vis):
    kw = {k: torch.as_tensor(np.asarray(v)) for k, v in vis.items()}
    with torch.no_grad():
        out = model(input_ids=torch.as_tensor(ids), position_ids=torch.as_tensor(pos),
                    attention_mask=torch.as_tensor(mask),
                    mm_token_type_ids=torch.as_tensor(mm_token_type_ids(ids), dtype=torch.int), **kw)
    return out.logits.float().numpy()


def _max_diff(ours, ref, mask):
    sel = np.asarray(mask).astype(bool)
    return float(np.max(np.abs(np.asarray(ours)[sel] - ref[sel])))


def test_config_matches_tiny(untied):
    _, cfg, _ = untied
    assert cfg.text == ModelConfig.tiny().text
    assert cfg.vision == ModelConfig.tiny().vision
    assert cfg.image_token_id == IMAGE_ID and cfg.video_token_id == VIDEO_ID


def test_params_match_init_tree(untied):
    """The loaded tree has exactly the structure, shapes and dtypes init_params builds."""
    _, cfg, params = untied
    _, fresh = modeling.init_params(cfg)
    import jax
    shape = lambda t: jax.tree.map(lambda a: (a.shape, str(a.dtype)), t)  # noqa: E731
    assert shape(params) == shape(fresh)


@pytest.mark.parametrize("scan", [True, False])
def test_text_only_logits(untied, scan):
    """Two left-padded text rows: Qwen3 decoder (q/k norms, interleaved M-RoPE), untied head."""
    model, cfg, params = untied
    cfg = cfg.with_runtime(scan_layers=scan)
    ids, mask = pad_left([build_input_ids([("text", 13)], seed=1), build_input_ids([("text", 9)], seed=2)])
    pos = _hf_positions(model, ids, mask)
    ours = forward(cfg, params, ids, pos, mask)
    ref = _hf_logits(model, ids, pos, mask)
    diff = _max_diff(ours, ref, mask)
    print(f"text-only (scan={scan}) max|diff| = {diff:.2e}")
    assert diff < ATOL


def test_image_logits(untied):
    """One image in row 0 beside a text-only row 1: pos-embedding resampling, frame attention,
    both mergers and DeepStack at the right rows of the right batch row."""
    model, cfg, params = untied
    seg = [("text", 5), ("image", IMAGE_GRID), ("text", 4)]
    ids, mask = pad_left([build_input_ids(seg, seed=3), build_input_ids([("text", 7)], seed=4)])
    pix = _pixels(IMAGE_GRID, seed=5)
    pos = _hf_positions(model, ids, mask, image_grids=[IMAGE_GRID])
    ours = forward(cfg, params, ids, pos, mask, pixel_values=pix, image_grid_thw=[IMAGE_GRID])
    ref = _hf_logits(model, ids, pos, mask, pixel_values=pix, image_grid_thw=[IMAGE_GRID])
    diff = _max_diff(ours, ref, mask)
    print(f"image max|diff| = {diff:.2e}")
    assert diff < ATOL
    # DeepStack matters here: without it the visual rows' successors change well beyond ATOL
    no_ds = cfg.replace(vision=dataclasses.replace(cfg.vision, deepstack_visual_indexes=()))
    p_no = {**params, "vision": {k: v for k, v in params["vision"].items() if k != "deepstack"}}
    assert _max_diff(forward(no_ds, p_no, ids, pos, mask, pixel_values=pix, image_grid_thw=[IMAGE_GRID]),
                     ref, mask) > 100 * ATOL


def test_video_logits(untied):
    """One video of two temporal groups, rendered with textual timestamps between the groups."""
    model, cfg, params = untied
    ids = build_input_ids([("text", 4), ("video_ts", VIDEO_GRID), ("text", 3)], seed=6)[None]
    mask = np.ones_like(ids)
    pix = _pixels(VIDEO_GRID, seed=7)
    pos = _hf_positions(model, ids, mask, video_grids=[VIDEO_GRID])
    ours = forward(cfg, params, ids, pos, mask, pixel_values_videos=pix, video_grid_thw=[VIDEO_GRID])
    ref = _hf_logits(model, ids, pos, mask, pixel_values_videos=pix, video_grid_thw=[VIDEO_GRID])
    diff = _max_diff(ours, ref, mask)
    print(f"video max|diff| = {diff:.2e}")
    assert diff < ATOL


def test_vision_tower_and_deepstack(untied):
    """The tower alone on an image and a video together: merged features and every DeepStack
    feature, row for row (padded to a bucket on our side: padding must not leak into real rows)."""
    import jax

    model, cfg, params = untied
    grids = [IMAGE_GRID, VIDEO_GRID]
    pix = np.concatenate([_pixels(IMAGE_GRID, 8), _pixels(VIDEO_GRID, 9)])
    with torch.no_grad():
        out = model.model.visual(torch.as_tensor(pix), grid_thw=torch.tensor(grids, dtype=torch.long))
    ref_merged = out.pooler_output.float().numpy()
    ref_ds = [f.float().numpy() for f in out.deepstack_features]
    m = ref_merged.shape[0]
    vi = modeling.vision_arrays(cfg, pix, grids, pad_to=pix.shape[0] + 8)
    merged, ds = jax.jit(modeling.encode_vision, static_argnums=0)(cfg, params["vision"], vi)
    diffs = [float(np.max(np.abs(np.asarray(merged)[:m] - ref_merged)))]
    assert len(ref_ds) == ds.shape[0] == 2
    diffs += [float(np.max(np.abs(np.asarray(ds[g])[:m] - ref_ds[g]))) for g in range(len(ref_ds))]
    print("vision merged / deepstack max|diff| = " + ", ".join(f"{d:.2e}" for d in diffs))
    assert max(diffs) < ATOL


def test_tied_embeddings(tmp_path):
    """tie_word_embeddings=True: no lm_head in our tree, the embedding is the head; an image row."""
    model = _hf_model(tie=True, seed=11)
    model.save_pretrained(tmp_path)
    cfg, params = load_pretrained(tmp_path)
    assert cfg.text.tie_word_embeddings and "lm_head" not in params
    seg = [("text", 3), ("image", IMAGE_GRID), ("text", 2)]
    ids = build_input_ids(seg, seed=12)[None]
    mask = np.ones_like(ids)
    pix = _pixels(IMAGE_GRID, seed=13)
    pos = _hf_positions(model, ids, mask, image_grids=[IMAGE_GRID])
    ours = forward(cfg, params, ids, pos, mask, pixel_values=pix, image_grid_thw=[IMAGE_GRID])
    ref = _hf_logits(model, ids, pos, mask, pixel_values=pix, image_grid_thw=[IMAGE_GRID])
    diff = _max_diff(ours, ref, mask)
    print(f"tied image max|diff| = {diff:.2e}")
    assert diff < ATOL


def test_interleaved_axes():
    """The interleaving rule on the real 128-dim head (section 24/20/20): t takes 0, 3, ..., 57
    and 60..63; h 1, 4, ..., 58; w 2, 5, ..., 59."""
    axis = modeling.mrope_axis_of(128, (24, 20, 20))
    j = np.arange(64)
    assert np.array_equal(np.nonzero(axis == 1)[0], j[(j % 3 == 1) & (j < 60)])
    assert np.array_equal(np.nonzero(axis == 2)[0], j[(j % 3 == 2) & (j < 60)])
    assert (axis == 0).sum() == 24


def test_public_names():
    assert set(qwen3_vl.__all__) <= set(dir(qwen3_vl))


def test_config_refuses_what_it_does_not_implement(untied):
    """Keys that would change the forward pass without us following are errors, not ignored."""
    import json

    from vital_jax.models.qwen3_vl import ConfigError

    d = json.loads(json.dumps(Qwen3VLConfig(**TINY).to_dict()))
    assert ModelConfig.from_hf_dict(d, strict=False).text == ModelConfig.tiny().text
    for path, value in ((("text_config", "attention_bias"), True),
                        (("text_config", "rope_parameters", "mrope_interleaved"), False),
                        (("vision_config", "num_position_embeddings"), 35)):
        bad = copy.deepcopy(d)
        node = bad
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
        with pytest.raises(ConfigError):
            ModelConfig.from_hf_dict(bad, strict=False)


def test_rope_index_equals_transformers(untied):
    """Our rope index of this family (vital_jax.models.qwen3_vl.rope) gives transformers'
    get_rope_index positions on a padded batch: an image row, a timestamped-video row, a text row;
    a video written as one run (no timestamps) is refused, naming the rule."""
    from vital_jax.models.qwen3_vl.rope import PositionError, rope_index

    model, cfg, _ = untied
    rows = [build_input_ids([("text", 5), ("image", IMAGE_GRID), ("text", 4)], seed=3),
            build_input_ids([("text", 4), ("video_ts", VIDEO_GRID), ("text", 3)], seed=6),
            build_input_ids([("text", 7)], seed=4)]
    ids, mask = pad_left(rows)
    want = _hf_positions(model, ids, mask, image_grids=[IMAGE_GRID], video_grids=[VIDEO_GRID])
    got, deltas = rope_index(cfg, ids, [IMAGE_GRID], [VIDEO_GRID], mask)
    sel = mask.astype(bool)
    np.testing.assert_array_equal(got[:, sel], want[:, sel])
    assert deltas.tolist() == [int(got[:, b, sel[b]].max()) + 1 - int(sel[b].sum()) for b in range(3)]
    whole = build_input_ids([("text", 4), ("video", VIDEO_GRID), ("text", 3)], seed=6)[None]
    with pytest.raises(PositionError, match="one placeholder run per temporal group"):
        rope_index(cfg, whole, None, [VIDEO_GRID])


def test_stable_entry_points_serve_both_families(untied, tmp_path):
    """vital_jax.load_pretrained dispatches on config.json's model_type, and vital_jax.forward
    takes the transformers-named batch for this family too (positions by its own rope index)."""
    import vital_jax
    from vital_jax.models.families import FamilyError, load_pretrained as load_any_family

    model, _, _ = untied
    d = tmp_path / "q3"
    model.save_pretrained(d)
    cfg, params = vital_jax.load_pretrained(d)
    assert isinstance(cfg, ModelConfig)
    seg = [("text", 5), ("image", IMAGE_GRID), ("text", 4)]
    ids, mask = pad_left([build_input_ids(seg, seed=3), build_input_ids([("text", 7)], seed=4)])
    pix = _pixels(IMAGE_GRID, seed=5)
    ref = _hf_logits(model, ids, _hf_positions(model, ids, mask, image_grids=[IMAGE_GRID]), mask,
                     pixel_values=pix, image_grid_thw=[IMAGE_GRID])
    got = vital_jax.forward(cfg, params, {"input_ids": ids, "attention_mask": mask, "pixel_values": pix,
                                          "image_grid_thw": np.asarray([IMAGE_GRID])})
    assert _max_diff(got, ref, mask) < ATOL
    (d / "config.json").write_text((d / "config.json").read_text().replace('"qwen3_vl"', '"qwen9_vl"', 1))
    with pytest.raises(FamilyError, match="'qwen9_vl' is not implemented"):
        load_any_family(d)
