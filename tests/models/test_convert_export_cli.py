"""`vital convert` / `vital export` round trip, and restore onto another mesh."""

import numpy as np
import pytest
import jax

from tests.models import hf_reference as ref
from vital_jax.cli import main
from vital_jax.models.checkpoint import load_model
from vital_jax.models.qwen2_5_vl import load_pretrained


def test_convert_export_round_trip(tmp_path, mesh222, capsys):
    model = ref.build_hf_model(ref.tiny_hf_config(), seed=3)
    hf = ref.save_hf_checkpoint(model, tmp_path / "hf")
    assert main(["convert", "--hf", str(hf), "--out", str(tmp_path / "ckpt")]) == 0
    assert main(["export", "--ckpt", str(tmp_path / "ckpt"), "--out", str(tmp_path / "hf2")]) == 0
    _, a = load_pretrained(hf)
    _, b = load_pretrained(tmp_path / "hf2")
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # restore straight onto a (2, 2, 2) mesh
    _, c = load_model(tmp_path / "ckpt", mesh=mesh222)
    assert c["layers"]["gate_kernel"].sharding.spec[1:] == ("fsdp", "tensor")
    np.testing.assert_array_equal(np.asarray(c["layers"]["gate_kernel"]), np.asarray(a["layers"]["gate_kernel"]))


def test_convert_bad_input_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["convert", "--hf", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "vital convert: error:" in err and "config.json" in err
    assert main(["export", "--ckpt", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "not a vital_jax model checkpoint" in capsys.readouterr().err


def test_sharded_load_copies_only_each_shard(tmp_path, mesh222, monkeypatch):
    """load_pretrained onto a mesh: the HF -> ours transpose of a linear weight is a view of the
    memory-mapped tensor (no full transposed copy), so each device's callback copies just its
    shard's bytes."""
    from vital_jax.models.qwen2_5_vl import weights

    hf = ref.save_hf_checkpoint(ref.build_hf_model(ref.tiny_hf_config(), seed=3), tmp_path / "hf")
    real = weights.hf_to_ours
    views = []

    def watched(rule, w, shape):
        out = real(rule, w, shape)
        views.append((rule.kind, np.shares_memory(out, w)))
        return out

    copied, full = [], {}
    real_make = jax.make_array_from_callback

    def make(shape, sharding, cb):
        def counted(index):
            block = cb(index)
            copied.append((shape, block.nbytes, sharding.shard_shape(shape)))
            return block
        full[shape] = sharding
        return real_make(shape, sharding, counted)

    monkeypatch.setattr(weights, "hf_to_ours", watched)
    monkeypatch.setattr(weights.jax, "make_array_from_callback", make)
    _, params = load_pretrained(hf, mesh=mesh222)
    assert views and all(is_view for kind, is_view in views if kind == "linear")
    for shape, nbytes, shard in copied:
        assert nbytes == int(np.prod(shard)) * 4, (shape, shard)
    assert any(np.prod(shard) < np.prod(shape) for shape, _, shard in copied)   # something was sharded


def test_safetensors_written_by_the_library_and_read_as_views(tmp_path):
    """Export writes through ``safetensors.numpy.save_file`` (bfloat16 included); our reader maps
    the same bytes without copying, and the library reads back what we wrote."""
    import ml_dtypes
    from safetensors import safe_open

    from vital_jax.models.safetensors_io import SafetensorsError, SafetensorsFile, save_file

    rng = np.random.default_rng(0)
    tensors = {"w.bf16": rng.standard_normal((3, 5)).astype(ml_dtypes.bfloat16),
               "w.f32": rng.standard_normal((4,)).astype(np.float32), "ids": np.arange(6, dtype=np.int64)}
    path = tmp_path / "x.safetensors"
    save_file(tensors, path)
    ours = SafetensorsFile(path)
    assert ours.metadata["format"] == "pt" and sorted(ours.names()) == sorted(tensors)
    with safe_open(str(path), framework="numpy") as lib:
        for name, want in tensors.items():
            got = ours.get(name)
            assert isinstance(got.base, np.memmap) or isinstance(got, np.memmap)     # a view, not a copy
            assert got.dtype == want.dtype and np.array_equal(got, want)
            assert np.array_equal(lib.get_tensor(name), want)
    with pytest.raises(SafetensorsError, match="complex64"):
        save_file({"c": np.zeros(2, np.complex64)}, tmp_path / "bad.safetensors")
    (tmp_path / "short.safetensors").write_bytes(path.read_bytes()[:-4])
    with pytest.raises(SafetensorsError, match="runs past the end"):
        SafetensorsFile(tmp_path / "short.safetensors")
