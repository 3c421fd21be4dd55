"""The trainers' shared step tail (``vital_jax.trainers.loop.StepLoop``): skipped updates are counted,
the stage's own ``max_bad_steps`` stops the run with a checkpoint, and the count survives a resume."""

import types

import pytest

from vital_jax.config.run_config import RLConfig, RunConfig, SFTConfig
from vital_jax.trainers.loop import StepLoop, TrainingError

from vital_jax.testing import LogLines


class _Writer:
    def __init__(self):
        self.lines, self.dropped = [], []

    def write(self, step, metrics, prefix=""):
        self.lines.append((step, prefix))

    def drop_after(self, step):
        self.dropped.append(step)


class _Ckpts:
    directory = "ckpt"

    def __init__(self):
        self.saved = []

    def save(self, step, state, *, data_iterator=None, host=None, wait=False):
        self.saved.append((step, dict(host or {})))


def _loop(kind, cfg):
    run = types.SimpleNamespace(writer=_Writer())
    loop = StepLoop(cfg, run, _Ckpts(), kind=kind, total=100, keys={"loss": "loss"},
                    line=lambda s, m: f"step {s}")
    return loop


@pytest.mark.parametrize("kind", ["sft", "rl"])
def test_stage_limit_stops_with_a_checkpoint(kind):
    # the other stage's limit is far away: the stage's own one must be the one that counts
    cfg = RunConfig(stage=kind, sft=SFTConfig(max_bad_steps=2 if kind == "sft" else 50),
                    rl=RLConfig(max_bad_steps=2 if kind == "rl" else 50))
    loop = _loop(kind, cfg)
    bad = {"loss": float("nan"), "grad_norm": float("nan"), "skipped": 1.0}
    with LogLines() as log, loop:
        assert loop.after_step(1, None, bad, None, dict) is False
        assert loop.after_step(2, None, {"loss": 1.0, "skipped": 0.0}, None, dict) is False
        assert loop.after_step(3, None, bad, None, dict) is False
        with pytest.raises(TrainingError, match=rf"3 {kind} steps .*{kind}\.max_bad_steps = 2"):
            loop.after_step(4, None, bad, None, lambda: {"curve": [1]})
    assert loop.ckpts.saved == [(4, {"curve": [1], "bad_steps": 3})]
    assert sum("update skipped" in m for m in log.lines) == 3


def test_resume_carries_the_count():
    loop = _loop("sft", RunConfig(sft=SFTConfig(max_bad_steps=1)))
    loop.resumed(7, {"bad_steps": 1})
    assert loop.run.writer.dropped == [7]
    with loop, pytest.raises(TrainingError):
        loop.after_step(8, None, {"loss": float("inf"), "skipped": 1.0}, None, dict)


def test_cli_logging_prints_each_line_once_on_stdout(capsys):
    """The CLI's console: vital_jax records as plain lines on the current stdout, once, even when
    a library has put a handler on the root logger (absl does)."""
    import logging

    from vital_jax.cli import setup_logging

    root = logging.getLogger()
    extra = logging.StreamHandler()          # stderr, default format
    root.addHandler(extra)
    try:
        setup_logging()
        setup_logging()                      # idempotent: still one handler
        logging.getLogger("vital_jax.trainers.loop").info("sft step 3/9 | loss 1.0")
        logging.getLogger("vital_jax.trainers.loop").debug("not shown")
    finally:
        root.removeHandler(extra)
    out, err = capsys.readouterr()
    assert out == "sft step 3/9 | loss 1.0\n" and "sft step" not in err
