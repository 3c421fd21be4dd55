"""KV-cached sampling: pure jitted prefill/append/decode (core) and the host-side Sampler."""

from vital_jax.sampling.chat import ChatSession
from vital_jax.sampling.core import DecodeOut, SamplerState, SamplingParams
from vital_jax.sampling.sampler import (
    DecodeResult,
    Sampler,
    SamplerConfig,
    SamplerError,
    SamplingOptions,
    Segment,
    find_stop_string,
    stop_sequences,
)

__all__ = [
    "ChatSession", "DecodeOut", "DecodeResult", "Sampler", "SamplerConfig", "SamplerError", "SamplerState", "SamplingOptions",
    "SamplingParams", "Segment", "find_stop_string", "stop_sequences",
]
