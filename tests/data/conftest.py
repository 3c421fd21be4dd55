"""Fixtures for the data tests: one tiny synthetic suite generated once per session."""

import pytest

from vital_jax.data.synthetic import SynthConfig, generate

TINY = SynthConfig(num=12, seed=7, min_seconds=20, max_seconds=26, size=64, fps=2.0, eval_fraction=0.25)


@pytest.fixture(scope="session")
def tiny_suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    manifest = generate(out, TINY)
    return out, manifest
