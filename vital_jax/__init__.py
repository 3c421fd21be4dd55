"""vital_jax: VITAL and DeepVideo-R1 in JAX/Flax.

Stable entry points: :func:`load_pretrained`, :func:`rope_index`, :func:`forward`, and the
``vital_jax.rl`` package (rewards, advantages, KL, policy losses).
"""

from vital_jax.models.qwen2_5_vl import ModelConfig, export_pretrained, forward, load_pretrained, rope_index

__all__ = ["ModelConfig", "export_pretrained", "forward", "load_pretrained", "rope_index"]
__version__ = "0.1.0"
