"""Trainers: SFT and RL (GRPO family with the tool loop), sharded, checkpointed, multi-host.

Entry points: :func:`vital_jax.train.sft.run_sft`, :func:`vital_jax.train.rl.run_rl`, the
``vital train`` and ``vital demo`` commands. Configs: :mod:`vital_jax.train.config`.
"""
