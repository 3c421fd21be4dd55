"""vital_jax: VITAL and DeepVideo-R1 in JAX/Flax.

Stable entry points: :func:`load_pretrained`, :func:`rope_index`, :func:`forward` (each serves
Qwen2.5-VL and Qwen3-VL, chosen by the checkpoint's ``model_type`` or the config's family:
:mod:`vital_jax.models.families`), :func:`export_pretrained` (Qwen2.5-VL), and the
``vital_jax.rl`` package (rewards, advantages, KL, policy losses).
"""

from vital_jax.models.families import forward, load_pretrained, rope_index
from vital_jax.models.qwen2_5_vl import ModelConfig, export_pretrained

__all__ = ["ModelConfig", "export_pretrained", "forward", "load_pretrained", "rope_index"]
__version__ = "0.1.0"
