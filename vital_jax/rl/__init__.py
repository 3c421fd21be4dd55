"""RL core: rewards, group advantages, KL estimators, policy losses, difficulty augmentation.

Stable interface (documented in the README; other code relies on it):

- ``reward(data_source, response, solution, *, num_tool_calls=0, **options) -> dict[str, float]``
- ``advantages(name, rewards[P, G], **options) -> array[P, G]``      (grpo, drgrpo, rloo, dgrpo)
- ``kl(name, logp, ref_logp) -> array[N, T]``                          (k1, k2, k3)
- ``policy_loss(name, *, logp, old_logp, advantages, mask, group_size, ref_logp=None, **options)
  -> (scalar, metrics)``   (grpo/dgrpo, dapo, bnpo, drgrpo, gspo, reg_grpo)

Registries (``ADVANTAGES``, ``KL_ESTIMATORS``, ``POLICY_LOSSES``, ``AGGREGATIONS``, ``ACCURACY``)
list the names; ``REGISTRY.describe(name)`` prints a function's formula.
"""

from vital_jax.rl.advantages import ADVANTAGES, advantages, zero_variance_groups
from vital_jax.rl.difficulty import Decision, DifficultyTracker, Schedule
from vital_jax.rl.kl import KL_ESTIMATORS, kl
from vital_jax.rl.losses import AGGREGATIONS, POLICY_LOSSES, aggregate, policy_loss
from vital_jax.registry import Registry
from vital_jax.rl.rewards import ACCURACY, SOURCES, format_reward, reward, source_spec

__all__ = [
    "ACCURACY",
    "ADVANTAGES",
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "POLICY_LOSSES",
    "SOURCES",
    "Decision",
    "DifficultyTracker",
    "Registry",
    "Schedule",
    "advantages",
    "aggregate",
    "format_reward",
    "kl",
    "policy_loss",
    "reward",
    "source_spec",
    "zero_variance_groups",
]
