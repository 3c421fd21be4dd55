"""What both trainers share: devices and mesh, model + tokenizer setup, the run directory,
stop signals, batch placement, and the final export.

Run directory layout (``cfg.out_dir``)::

    config.yaml          the resolved config (what the run really used)
    metrics.jsonl        one line per logged step; events.out.tfevents.* for TensorBoard
    checkpoints/<step>/  Orbax: state, data iterator, host state (see checkpoint.py)
    final/               HF-format model (config.json + safetensors) + tokenizer.json +
                         vital_settings.json (data.vision: frames, pixels, timestamps)
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from pathlib import Path
from typing import Any

import jax
import numpy as np

from vital_jax.config.run_config import ConfigError, RunConfig, dump_config
from vital_jax.errors import VitalError


class TrainingError(VitalError, RuntimeError):
    """The run cannot go on (too many non-finite steps, a peer process died, bad data)."""


# --------------------------------------------------------------------------- stop signals


class StopFlag:
    """SIGTERM/SIGINT set a flag the loop checks after each step (then it checkpoints and
    returns) instead of killing the process mid-step. A second SIGINT raises KeyboardInterrupt."""

    def __init__(self):
        self.reason: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False

    def stop_requested(self) -> bool:
        """True when any process got a signal (all processes must agree to stop together)."""
        local = self.reason is not None
        if jax.process_count() == 1:
            return local
        from jax.experimental import multihost_utils

        return bool(np.any(multihost_utils.process_allgather(np.asarray([local]))))


# --------------------------------------------------------------------------- model + tokenizer


def synthetic_corpus() -> list[str]:
    """Text a small tokenizer for the synthetic suite is trained on (prompts, targets, tools)."""
    from vital_jax.data.synthetic import text_corpus
    from vital_jax.prompt import templates, timestamp_text

    sets = templates.PROMPTS.values()
    head = [p.system_text(u) for p in sets for u in (True, False)]
    texts = text_corpus(num=300, seed=1234)
    users = [p.user_text(t, duration=float(d), use_tool=u) + p.caption(d / 4, d / 2)
             for t, d in zip(texts[:200], range(30, 230)) for u in (True, False) for p in sets]
    errors = [f"Error: {m}" for m in ("invalid window", "the clip is outside the video")]
    # textual timestamps (data.vision.text_timestamps): "<12.5 seconds>" for many times, so
    # "<", " seconds" and ">" become tokens; the Qwen2 split pattern keeps each digit its own
    # token, so a time costs one token per character of the number
    stamps = [" ".join(timestamp_text(k / 4) for k in range(j, j + 8)) for j in range(0, 1600, 8)]
    return head * 20 + users + texts + errors + stamps


def build_tokenizer(cfg: RunConfig):
    from vital_jax.prompt import load_tokenizer, train_small_tokenizer

    for source in (cfg.model.tokenizer, cfg.model.init_from):
        if source and any((Path(source) / f).is_file() for f in ("tokenizer.json", "vocab.json")):
            return load_tokenizer(source)
    if cfg.model.tokenizer is not None:
        raise ConfigError(f"model.tokenizer: {cfg.model.tokenizer} has no tokenizer.json / vocab.json")
    from vital_jax.models.families import preset_family

    if preset_family(cfg.model.preset)[1] != "tiny":
        raise ConfigError(f"model.preset {cfg.model.preset!r} needs a tokenizer: set model.tokenizer "
                          "or model.init_from to a directory with tokenizer.json")
    return train_small_tokenizer(synthetic_corpus(), vocab_size=1024)


def tiny_config_for(tok, family: str = "qwen2_5_vl"):
    """The family's tiny test model sized to tokenizer ``tok`` (its vocabulary and special ids)."""
    from vital_jax.models.families import family_module

    sp = tok.special
    return family_module(family).ModelConfig.tiny(vocab_size=tok.vocab_size).replace(
        image_token_id=sp.image_pad, video_token_id=sp.video_pad, vision_start_token_id=sp.vision_start,
        vision_end_token_id=sp.vision_end, eos_token_id=sp.eos, pad_token_id=sp.pad)


def build_model(cfg: RunConfig, tok, mesh) -> tuple[Any, dict]:
    """(model config with the run's runtime options, params placed on ``mesh``)."""
    m = cfg.model
    runtime = dataclasses.asdict(m.runtime_options())
    if m.init_from is not None:
        from vital_jax.models.checkpoint import ModelCheckpointError, load_any

        try:
            mcfg, params = load_any(m.init_from, mesh=mesh)
        except ModelCheckpointError as e:
            raise ConfigError(f"model.init_from: {e}") from None
        mcfg = mcfg.with_runtime(**runtime)
        params = jax.tree.map(lambda x: x.astype(m.param_dtype), params)
    else:
        from vital_jax.models.families import family_module, preset_family

        family, size = preset_family(m.preset)
        pkg = family_module(family)
        mcfg = (tiny_config_for(tok, family) if size == "tiny" else pkg.ModelConfig.preset(size)).with_runtime(**runtime)
        _, params = pkg.init_params(mcfg, seed=m.seed)
    if tok.vocab_size > mcfg.text.vocab_size:
        raise ConfigError(f"tokenizer has {tok.vocab_size} tokens but the model's vocabulary is {mcfg.text.vocab_size}")
    return mcfg, params


# --------------------------------------------------------------------------- run directory


@dataclasses.dataclass
class Run:
    """The pieces of a run both trainers use."""

    cfg: RunConfig
    out: Path
    mesh: Any
    tok: Any
    model_cfg: Any          # the model config of its family (vital_jax.models.families)
    params: dict
    writer: Any

    @classmethod
    def create(cls, cfg: RunConfig, *, console: bool = True) -> "Run":
        from vital_jax.sharding import make_mesh
        from vital_jax.runs.metrics import MetricsWriter

        out = Path(cfg.out_dir).absolute()
        out.mkdir(parents=True, exist_ok=True)
        if jax.process_index() == 0:
            dump_config(cfg, out / "config.yaml")
        mesh = make_mesh(*cfg.mesh.resolve(jax.device_count()))
        tok = build_tokenizer(cfg)
        model_cfg, params = build_model(cfg, tok, mesh)
        # flush every line: a run killed by a dead peer or a pre-emption keeps all its metrics
        writer = MetricsWriter(out, console=False, flush_secs=0.0)
        return cls(cfg, out, mesh, tok, model_cfg, params, writer)

    def export_final(self, params: dict) -> Path:
        """HF-format model + tokenizer + the run's video/prompt settings in ``out/final`` (what
        ``vital eval``/``infer`` read)."""
        from vital_jax.models.families import export_pretrained
        from vital_jax.config.run_config import write_vision_settings

        final = self.out / "final"
        if jax.process_count() > 1:   # every process takes part in the gather
            from jax.experimental import multihost_utils

            host = multihost_utils.process_allgather(params, tiled=True)
        else:
            host = jax.device_get(params)
        if jax.process_index() == 0:
            export_pretrained(self.model_cfg, host, final)
            self.tok.save(final)
            write_vision_settings(self.cfg.data.vision, final)
        return final


def put_batch(batch: dict, shardings: dict) -> dict:
    """Host NumPy batch (this process's rows) -> global arrays with the batch shardings."""
    return jax.tree.map(lambda x, s: jax.make_array_from_process_local_data(s, x), batch, shardings)


def host_metrics(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}
