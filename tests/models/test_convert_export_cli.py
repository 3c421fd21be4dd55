"""`vital convert` / `vital export` round trip, and restore onto another mesh."""

import numpy as np
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
