"""Rollout fixtures: a tiny HF model with the same weights in ours (sampler parity), and a tiny
tokenizer + model + videos for the tool loop."""

import numpy as np
import pytest
import types
from tests.models import hf_reference as ref
from vital_jax.models.qwen2_5_vl import init_params
from vital_jax.models.qwen2_5_vl import load_pretrained
from vital_jax.prompt import ChatRenderer, train_small_tokenizer
from vital_jax.prompt import templates
from vital_jax.rollout import Sampler, SamplerConfig
from vital_jax.trainers.common import tiny_config_for
from vital_jax.video import write_video


# 56x56 frames -> 4x4 patches -> 4 merged tokens per temporal patch; <= 8 frames per video
VIDEO_KW = dict(min_pixels=56 * 56, max_pixels=56 * 56, max_frames=8)
CLIP_KW = dict(min_pixels=56 * 56, max_pixels=56 * 56)


@pytest.fixture(scope="session")
def tok():
    corpus = [templates.DEFAULT_SYSTEM + templates.tools_block([templates.CLIP_TOOL_SCHEMA]),
              templates.user_text("What colour is the ball?", duration=6.0, use_tool=True),
              templates.user_text("What colour is the ball?", duration=6.0, use_tool=False)]
    corpus += [f"<think>look at {d}</think> <tool_call>\n"
               f'{{"name": "get_video_clip_frame", "arguments": {{"start_time": {d}, "end_time": {d + 2}}}}}\n'
               f"</tool_call> <answer>{d}</answer> Error: Video clip from {d}.00 to {d + 5}.50 seconds."
               for d in range(60)]
    return train_small_tokenizer(corpus * 3, vocab_size=700)


@pytest.fixture(scope="session")
def model(tok):
    cfg = tiny_config_for(tok)
    _, params = init_params(cfg, seed=0)
    return cfg, params


@pytest.fixture(scope="session")
def renderer(tok):
    return ChatRenderer(tok)


def make_sampler(model, batch=4, cache_length=640, **kw):
    cfg, params = model
    c = dict(batch_size=batch, cache_length=cache_length, chunk_buckets=(32, 128, 512),
             vision_buckets=(64, 256), max_visual_tokens=64, decode_steps=16, max_forced_tokens=96)
    c.update(kw)
    return Sampler(cfg, params, SamplerConfig(**c))


@pytest.fixture(scope="session")
def sampler(model):
    return make_sampler(model)


@pytest.fixture(scope="session")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    out = {}
    for name, seconds in (("a", 6), ("b", 8)):
        frames = rng.integers(0, 255, size=(4 * seconds, 56, 56, 3), dtype=np.uint8)
        out[name] = write_video(d / f"{name}.mp4", frames, fps=4)
    bad = d / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    out["broken"] = str(bad)
    return out

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
