"""MTVR records, the synthetic long-video task suite, and Grain input pipelines.

Import the submodules directly (``vital_jax.data.records``, ``.synthetic``, ``.pipeline``,
``.augment``); this file stays empty so ``vital`` subcommands load only what they use.
"""
