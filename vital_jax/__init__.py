"""vital_jax: VITAL and DeepVideo-R1 in JAX/Flax.

Stable entry points: :func:`load_pretrained`, :func:`rope_index`, :func:`forward`,
:func:`export_pretrained` (each serves Qwen2.5-VL and Qwen3-VL, chosen by the checkpoint's
``model_type`` or the config's family: :mod:`vital_jax.models.families`), and the
``vital_jax.rl`` package (rewards, advantages, KL, policy losses).
"""

from vital_jax.models.families import export_pretrained, forward, load_pretrained, rope_index
from vital_jax.models.qwen2_5_vl import ModelConfig

__all__ = ["ModelConfig", "export_pretrained", "forward", "load_pretrained", "rope_index"]
__version__ = "0.1.0"
