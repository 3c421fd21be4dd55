"""Difficulty tracker (DeepVideo-R1 Δ(x)) and the name registries."""

import json

import numpy as np
import pytest

from vital_jax import rl
from vital_jax.rl import DifficultyTracker, Registry, Schedule


def test_delta_is_buffer_mean_minus_group_mean_and_window_evicts():
    t = DifficultyTracker(window=4)
    assert t.delta([1.0, 2.0]) == 0.0  # empty buffer: no history, no augmentation
    t.observe([[0.0, 0.0], [1.0, 1.0]])
    assert t.buffer_mean() == 0.5
    assert t.delta([0.0, 0.5]) == pytest.approx(0.25)
    t.observe([3.0, 3.0])  # evicts the two zeros (W = 4)
    assert t.buffer_mean() == pytest.approx(2.0)
    t.observe(np.arange(10.0))
    assert t.state_dict()["buffer"] == [6.0, 7.0, 8.0, 9.0]


def test_decisions_follow_the_schedules():
    t = DifficultyTracker(
        window=100,
        hint=Schedule(scale=0.5, threshold=0.2, max_strength=0.8),
        perturb={"steps": [[0.1, 0.05], [1.0, 0.2]]},
        perturbation="mask",
    )
    t.observe([1.0] * 10)
    hard = t.decide([0.0, 0.0])  # Δ = 1
    assert (hard.kind, hard.delta, hard.strength) == ("hint", 1.0, pytest.approx(0.4))
    assert t.decide([0.0, 0.0, -10.0]).strength == 0.8  # capped at max_strength
    assert t.decide([0.9, 0.9]).kind == "none"  # Δ = 0.1 below the hint threshold
    easy = t.decide([1.5, 1.5])  # Δ = -0.5 → step 0.1 applies
    assert (easy.kind, easy.strength, easy.perturbation) == ("perturb", 0.05, "mask")
    assert t.decide([2.0, 3.0]).strength == 0.2  # |Δ| = 1.5 → step 1.0
    assert t.decide([1.0, 1.0]).kind == "none"


def test_step_decides_against_the_buffer_before_the_batch():
    t = DifficultyTracker(window=8)
    t.observe([1.0] * 8)
    decisions = t.step(np.array([[0.0, 0.0], [2.0, 2.0]]))
    assert [d.kind for d in decisions] == ["hint", "perturb"]
    assert [d.delta for d in decisions] == [1.0, -1.0]
    assert t.buffer_mean() == pytest.approx((4 * 1.0 + 0 + 0 + 2 + 2) / 8)
    with pytest.raises(ValueError, match=r"\[P, G\]"):
        t.step(np.zeros(3))


def test_state_dict_round_trips_through_json():
    t = DifficultyTracker(window=5, hint={"scale": 2.0}, perturb=Schedule(steps=((0.5, 0.1),)))
    t.observe([0.1, 0.2, 0.3])
    state = json.loads(json.dumps(t.state_dict()))
    u = DifficultyTracker.from_state_dict(state)
    assert u.state_dict() == t.state_dict()
    for group in ([0.0], [0.2, 0.4], [5.0]):
        assert u.decide(group) == t.decide(group)
    with pytest.raises(ValueError, match="window"):
        DifficultyTracker(window=6).load_state_dict(state)
    with pytest.raises(ValueError, match="unknown keys"):
        Schedule.from_dict({"scale": 1.0, "sigma": 2})
    with pytest.raises(ValueError, match="finite"):
        t.observe([float("nan")])


def test_registry_lookup_aliases_and_errors():
    reg = Registry("widget")

    @reg.register("Alpha-One", "a1")
    def alpha():
        """alpha = 1"""

    assert reg.get("alpha_one") is alpha and reg.get("A1") is alpha and "alpha-one" in reg
    assert reg.describe("a1") == "alpha = 1"
    with pytest.raises(KeyError, match=r"unknown widget 'beta'; known: alpha_one \(aliases: a1\)"):
        reg.get("beta")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a1")(lambda: None)
    with pytest.raises(TypeError, match="must be a string"):
        reg.get(3)


def test_every_registered_function_states_its_formula():
    for registry in (rl.ADVANTAGES, rl.KL_ESTIMATORS, rl.POLICY_LOSSES, rl.AGGREGATIONS, rl.ACCURACY):
        for name in registry.names():
            assert len(registry.describe(name)) > 20, (registry, name)
    assert rl.POLICY_LOSSES.names() == ["bnpo", "dapo", "drgrpo", "grpo", "gspo", "reg_grpo"]
    assert rl.ADVANTAGES.names() == ["dgrpo", "drgrpo", "grpo", "rloo"]
    assert rl.KL_ESTIMATORS.names() == ["k1", "k2", "k3"]


def test_docs_example_runs():
    """The README section (docs/rl.md) carries a runnable example: run it."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).parents[2] / "docs" / "rl.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert len(blocks) == 1
    namespace: dict = {}
    exec(compile(blocks[0], "docs/rl.md", "exec"), namespace)  # noqa: S102
    assert np.isfinite(float(namespace["loss"])) and np.isfinite(float(namespace["reg_loss"]))
    assert namespace["scores"][0][3]["hack"] == 1.0
    assert len(namespace["decisions"]) == 2


def test_policy_losses_declare_what_the_trainer_passes():
    """The trainer reads each loss's declared clip / aggregation / TIS instead of matching names."""
    from vital_jax.config.run_config import ConfigError, RLConfig, from_dict

    info = {name: rl.POLICY_LOSSES.info(name) for name in rl.POLICY_LOSSES.names()}
    assert {n: i["clip"] for n, i in info.items()} == {
        "bnpo": "token", "dapo": "token", "drgrpo": "token", "grpo": "token", "gspo": "sequence", "reg_grpo": None}
    assert rl.POLICY_LOSSES.info("dgrpo")["aggregation"] == "token_mean"           # aliases share it
    assert rl.POLICY_LOSSES.info("dr-grpo")["aggregation"] == "seq_mean_token_sum_norm"
    for name, i in info.items():
        assert i["aggregation"] is None or i["aggregation"] in rl.AGGREGATIONS, name
    with pytest.raises(ConfigError, match="rl.tis_cap: .*reg_grpo"):
        from_dict(RLConfig, {"loss": "reg_grpo", "tis_cap": 2.0}, prefix="rl.")
    with pytest.raises(ConfigError, match="rl.aggregation: the reg_grpo loss fixes its own"):
        from_dict(RLConfig, {"loss": "reg_grpo", "aggregation": "token_mean"}, prefix="rl.")
    RLConfig(loss="gspo", tis_cap=2.0, aggregation="token_mean")     # allowed
