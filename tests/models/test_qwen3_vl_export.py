"""Qwen3-VL out to Hugging Face, and the model sharded over a (2, 2, 2) mesh == unsharded.

The export is checked against transformers, not against our own loader alone: parameters drawn
on our side (not loaded from a transformers checkpoint, so a load/export pair of mistakes that
cancel cannot pass) are written by ``vital_jax.export_pretrained``, read by
``Qwen3VLForConditionalGeneration.from_pretrained``, and both models' logits compared on a batch
with images and timestamped videos; the files hold exactly the tensors, names and shapes that
transformers' own ``save_pretrained`` writes for the model it read.
"""

from __future__ import annotations

import functools
import json

import jax
import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import Qwen3VLForConditionalGeneration

import vital_jax
from tests.models.hf_reference import build_input_ids, pad_left
from tests.models.test_qwen3_vl_parity import IMAGE_GRID, VIDEO_GRID, _hf_logits, _hf_positions, _pixels
from vital_jax.models import qwen3_vl
from vital_jax.models.qwen2_5_vl.weights import CheckpointError
from vital_jax.models.qwen3_vl import ModelConfig, load_pretrained

# float32 on both sides: |diff| <= TOL * max|logit| (the rounding of a logit grows with the
# logits' scale, not its own size: the tied head's logits reach ~20, the untied one's ~4)
TOL = 1e-5

# four left-padded rows: an image, a timestamped video, text only, and an image and a video
ROWS = [[("text", 5), ("image", IMAGE_GRID), ("text", 4)],
        [("text", 4), ("video_ts", VIDEO_GRID), ("text", 3)],
        [("text", 7)],
        [("text", 2), ("image", IMAGE_GRID), ("text", 2), ("video_ts", VIDEO_GRID), ("text", 1)]]


@functools.cache
def _batch() -> dict:
    ids, mask = pad_left([build_input_ids(r, seed=20 + i) for i, r in enumerate(ROWS)])
    return {"input_ids": ids, "attention_mask": mask,
            "pixel_values": np.concatenate([_pixels(IMAGE_GRID, 30), _pixels(IMAGE_GRID, 31)]),
            "image_grid_thw": np.asarray([IMAGE_GRID, IMAGE_GRID]),
            "pixel_values_videos": np.concatenate([_pixels(VIDEO_GRID, 32), _pixels(VIDEO_GRID, 33)]),
            "video_grid_thw": np.asarray([VIDEO_GRID, VIDEO_GRID])}


@functools.cache
def _ours(tie: bool) -> tuple[ModelConfig, dict]:
    """The tiny model with every parameter drawn here (init would leave norms at 1 and biases at
    0, hiding a swapped scale/bias, and its 0.02-wide kernels give logits too small for the
    tolerance to mean much): norms 1 + 0.1 N, biases 0.1 N, embeddings 0.5 N, kernels
    N / sqrt(fan_in) over their leading input dims (after a stacked axis)."""
    cfg = ModelConfig.tiny(tie_word_embeddings=tie)
    shapes = qwen3_vl.abstract_params(cfg)
    rng = np.random.default_rng(7 + tie)

    def draw(path, a):
        keys = [k.key for k in path]
        name, n = keys[-1], rng.standard_normal(a.shape).astype(np.float32)
        if name.endswith("bias"):
            return 0.1 * n
        if name.endswith(("norm", "scale")):
            return 1.0 + 0.1 * n
        if name in ("embed", "pos_embed"):
            return 0.5 * n
        stacked = keys[0] == "layers" or keys[:2] in (["vision", "blocks"], ["vision", "deepstack"])
        n_in = 2 if name in ("o_kernel", "proj_kernel") else 1   # [heads, head_dim, out]
        return n / np.sqrt(np.prod(a.shape[int(stacked):int(stacked) + n_in]))

    return cfg, jax.device_put(jax.tree_util.tree_map_with_path(draw, shapes))


def _tensors(directory) -> dict[str, np.ndarray]:
    """Every tensor of every safetensors file in ``directory``, by name (transformers' reader)."""
    out = {}
    for f in sorted(directory.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as sf:   # "pt": numpy has no bfloat16
            for k in sf.keys():
                assert k not in out, f"{k} in two files"
                out[k] = sf.get_tensor(k)
    return out


def _check_close(got, want, mask, what: str) -> None:
    """``got`` == ``want`` at the real (unpadded) positions within TOL * max|want|."""
    sel = np.asarray(mask).astype(bool)
    got, want = np.asarray(got)[sel], np.asarray(want)[sel]
    diff, scale = float(np.abs(got - want).max()), float(np.abs(want).max())
    print(f"{what}: max|logits diff| = {diff:.2e}, max|logit| = {scale:.1f}")
    assert scale > 1.0, what   # logits of a size where the tolerance is a real bound
    assert diff <= TOL * scale, f"{what}: max|logits diff| {diff:.2e} > {TOL} * {scale:.1f}"


@pytest.fixture(scope="module")
def untied_dir(tmp_path_factory):
    cfg, params = _ours(tie=False)
    return qwen3_vl.export_pretrained(cfg, params, tmp_path_factory.mktemp("q3_export"))


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def exported(request, tmp_path_factory):
    """(config, params, export dir, transformers model read from it, its loading info)."""
    cfg, params = _ours(tie=request.param)
    d = vital_jax.export_pretrained(cfg, params, tmp_path_factory.mktemp("q3_export_hf"))   # the family seam
    model, info = Qwen3VLForConditionalGeneration.from_pretrained(
        d, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    return cfg, params, d, model.eval(), info


def test_transformers_reads_the_export_with_our_logits(exported):
    """transformers loads every tensor (nothing missing, unexpected or re-initialised) and gives
    our logits on images + timestamped videos, with the lm head tied or not."""
    cfg, params, _, model, info = exported
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert model.config.tie_word_embeddings == cfg.text.tie_word_embeddings
    b = _batch()
    pos = _hf_positions(model, b["input_ids"], b["attention_mask"], image_grids=[IMAGE_GRID] * 2,
                        video_grids=[VIDEO_GRID] * 2)
    ref = _hf_logits(model, b["input_ids"], pos, b["attention_mask"], **{k: v for k, v in b.items()
                                                                          if k not in ("input_ids", "attention_mask")})
    ours = vital_jax.forward(cfg, params, {**b, "position_ids": pos})
    _check_close(ours, ref, b["attention_mask"], f"export -> transformers (tied={cfg.text.tie_word_embeddings})")


def test_files_are_what_transformers_save_pretrained_writes(exported, tmp_path):
    """Same tensor names (``model.language_model.*``, ``model.visual.*``, ``lm_head.weight`` only
    when untied), shapes, dtypes and values as transformers' ``save_pretrained`` of the model it
    read; its config.json reads back to our config."""
    cfg, _, d, model, _ = exported
    model.save_pretrained(tmp_path)
    ours, theirs = _tensors(d), _tensors(tmp_path)
    assert sorted(ours) == sorted(theirs)
    assert ("lm_head.weight" in ours) == (not cfg.text.tie_word_embeddings)
    assert all(k.startswith(("model.language_model.", "model.visual.", "lm_head.")) for k in ours)
    for k, t in theirs.items():
        assert ours[k].shape == t.shape and ours[k].dtype == t.dtype, k
        assert torch.equal(ours[k], t), k
    for path in (d, tmp_path):
        back = ModelConfig.from_hf_file(path / "config.json")
        assert (back.text, back.vision) == (cfg.text, cfg.vision)
        assert back.replace(text=cfg.text, vision=cfg.vision) == cfg   # token ids too


def test_config_round_trip():
    """``to_hf_dict`` -> ``from_hf_dict`` (strict: nothing we write is unknown to the reader) is
    the identity, and the dict is transformers' layout (its config class keeps every number)."""
    from transformers import Qwen3VLConfig

    for cfg in (ModelConfig.tiny(), ModelConfig.tiny(tie_word_embeddings=True, rope_theta=1e6)):
        d = cfg.to_hf_dict()
        assert d["model_type"] == "qwen3_vl"
        assert ModelConfig.from_hf_dict(d, strict=True) == cfg
        assert ModelConfig.from_hf_dict(Qwen3VLConfig(**d).to_dict(), strict=False) == cfg


def test_sharded_files_and_bf16(untied_dir, tmp_path):
    """A small ``max_shard_bytes`` gives several files with an index that covers them all and the
    same tensors as one file; bfloat16 export writes bfloat16 tensors and says so in config.json;
    our loader reads both back (bit-exact, and as the bf16 rounding of the params)."""
    cfg, params = _ours(tie=False)
    one = _tensors(untied_dir)
    d = qwen3_vl.export_pretrained(cfg, params, tmp_path / "sharded", max_shard_bytes=60_000)
    index = json.loads((d / "model.safetensors.index.json").read_text())
    files = sorted(p.name for p in d.glob("*.safetensors"))
    assert len(files) > 2 and sorted(set(index["weight_map"].values())) == files
    assert sorted(index["weight_map"]) == sorted(one)
    many = _tensors(d)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in many.values())
    assert all(torch.equal(many[k], one[k]) for k in one)
    _, back = load_pretrained(d)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(back)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))

    d16 = qwen3_vl.export_pretrained(cfg, params, tmp_path / "bf16", dtype="bfloat16")
    assert json.loads((d16 / "config.json").read_text())["dtype"] == "bfloat16"
    t16 = _tensors(d16)
    assert sorted(t16) == sorted(one) and {t.dtype for t in t16.values()} == {torch.bfloat16}
    _, back16 = load_pretrained(d16, dtype="bfloat16")
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back16)):
        assert b.dtype == jax.numpy.bfloat16
        np.testing.assert_array_equal(np.asarray(a.astype(jax.numpy.bfloat16)), np.asarray(b))


def test_sharded_equals_unsharded(untied_dir, mesh222):
    """Loaded onto a (data, fsdp, tensor) = (2, 2, 2) mesh (each device reads only its shard), the
    forward on four rows with images and timestamped videos equals the single-device one."""
    cfg, params = _ours(tie=False)
    _, sharded = load_pretrained(untied_dir, mesh=mesh222)
    q = sharded["layers"]["q_kernel"]   # [layers, embed, heads, head_dim]
    assert q.sharding.spec[1:3] == ("fsdp", "tensor"), q.sharding.spec
    assert len(q.addressable_shards) == 8 and q.addressable_shards[0].data.shape == (3, 32, 2, 32)
    assert sharded["vision"]["blocks"]["fc1_kernel"].sharding.spec[1:] == ("fsdp", "tensor")
    b = _batch()
    want = vital_jax.forward(cfg, params, b)
    with jax.set_mesh(mesh222):
        got = vital_jax.forward(cfg, sharded, b)
    _check_close(got, want, b["attention_mask"], "(2, 2, 2) mesh vs one device")


def test_cli_convert_then_export_round_trip(untied_dir, tmp_path):
    """``vital convert`` of a Qwen3-VL HF directory gives a vital checkpoint of this family, and
    ``vital export`` of that writes the same tensors and config back."""
    from vital_jax.cli import main
    from vital_jax.models.checkpoint import load_any, load_model

    ckpt, out = tmp_path / "ckpt", tmp_path / "hf"
    assert main(["convert", "--hf", str(untied_dir), "--out", str(ckpt)]) == 0
    cfg, params = load_model(ckpt)
    assert isinstance(cfg, ModelConfig) and "deepstack" in params["vision"]
    assert isinstance(load_any(untied_dir)[0], ModelConfig)
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out), "--max-shard-gb", "0.00005"]) == 0
    assert (out / "model.safetensors.index.json").is_file()
    a, b = _tensors(untied_dir), _tensors(out)
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((out / "config.json").read_text()) == json.loads((untied_dir / "config.json").read_text())


def test_export_errors_name_the_tensor(tmp_path):
    cfg, params = _ours(tie=False)
    bad = {**params, "layers": {**params["layers"], "q_kernel": params["layers"]["q_kernel"][:, :8]}}
    with pytest.raises(CheckpointError, match=r"'layers/q_kernel' \(HF tensor 'model.layers.0.self_attn.q_proj"):
        qwen3_vl.export_pretrained(cfg, bad, tmp_path / "a")
    with pytest.raises(CheckpointError, match=r"no 'lm_head' \(HF tensor 'lm_head.weight'\)"):
        qwen3_vl.export_pretrained(cfg, {k: v for k, v in params.items() if k != "lm_head"}, tmp_path / "b")
