"""Host-side tool loop over the KV-cached sampler (episodes for RL and for `vital infer`)."""

from vital_jax.agent.loop import AgentConfig, Episode, EpisodeRequest, ToolOutcome, run_episodes
from vital_jax.agent.tools import TOOLS, SyncExecutor, ToolContext, ToolResult, get_tool, register_tool

__all__ = [
    "AgentConfig", "Episode", "EpisodeRequest", "SyncExecutor", "TOOLS", "ToolContext", "ToolOutcome", "ToolResult",
    "get_tool", "register_tool", "run_episodes",
]
