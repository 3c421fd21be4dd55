"""Rollouts: the KV-cached sampler (pure jitted prefill/append/decode in ``sampler_core``, the
host-side :class:`Sampler`), the tool loop that appends clips into the live cache
(``tool_loop``, ``tools``), the rollout contract every caller uses (``contract``: params and
requests in, episodes out; it sizes the sampler), multi-turn chat, and ``vital infer``."""

from vital_jax.rollout.sampler_core import DecodeOut, SamplerState, SamplingParams
from vital_jax.rollout.sampler import (
    DecodeResult,
    Sampler,
    SamplerConfig,
    SamplerError,
    SamplingOptions,
    Segment,
    find_stop_string,
    stop_sequences,
)
from vital_jax.rollout.chat import ChatSession
from vital_jax.rollout.tools import TOOLS, SyncExecutor, ToolContext, ToolResult, get_tool, register_tool
from vital_jax.rollout.tool_loop import AgentConfig, Episode, EpisodeRequest, ToolOutcome, run_episodes
from vital_jax.rollout.contract import Budget, Rollout, RolloutResourceError, request_budget, size_sampler

__all__ = [
    "AgentConfig", "Budget", "ChatSession", "DecodeOut", "DecodeResult", "Episode", "EpisodeRequest", "Rollout", "RolloutResourceError", "Sampler", "SamplerConfig",
    "SamplerError", "SamplerState", "SamplingOptions", "SamplingParams", "Segment", "SyncExecutor", "TOOLS",
    "ToolContext", "ToolOutcome", "ToolResult", "find_stop_string", "get_tool", "register_tool", "request_budget", "run_episodes",
    "size_sampler", "stop_sequences",
]
