import types

import numpy as np
import pytest

from tests.models import hf_reference as ref
from vital_jax.models.qwen2_5_vl import load_pretrained


@pytest.fixture(scope="session")
def hf_tiny(tmp_path_factory):
    """The tiny random transformers model and the same weights loaded into ours."""
    model = ref.build_hf_model(ref.tiny_hf_config(), seed=0)
    d = ref.save_hf_checkpoint(model, tmp_path_factory.mktemp("hf_tiny"))
    cfg, params = load_pretrained(d)
    return model, cfg, params


def visual(grid, seed=0, spg=1.0, kind="video"):
    """A visual item as the sampler wants it (duck-typed like vital_jax.video.VisualInput)."""
    return types.SimpleNamespace(pixel_values=ref.make_visual([grid], seed=seed), grid_thw=np.asarray(grid),
                                 second_per_grid_t=spg, kind=kind)
