"""DeepVideo-R1 difficulty-aware augmentation: decide per prompt, from its group's rewards,
whether to add a reasoning hint (hard) or perturb the video (easy), and how strongly.

    Δ(x) = mean reward over a replay buffer of the last W samples − mean reward of x's group

Δ > 0: the prompt is harder than recent ones → hint with strength ``hint(Δ)``;
Δ < 0: easier → perturb the video with strength ``perturb(|Δ|)``.
The data side applies the decision (hint text length, noise σ or masked-frame share); this module
only decides. The paper gives no exact schedules, so both are config values.

Host-side and stateful on purpose (a few hundred floats); ``state_dict()``/``load_state_dict()``
are JSON-able so a trainer checkpoints it next to its data iterator.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np


@dataclass(frozen=True)
class Schedule:
    """strength(|Δ|) = 0 if |Δ| <= threshold, else clamp(scale · (|Δ| − threshold), 0, max_strength).

    ``steps``: optional ``((delta_0, s_0), (delta_1, s_1), …)`` sorted by delta — a step schedule
    that returns the s_k of the largest delta_k <= |Δ| (0 below the first) instead of the ramp.
    """

    scale: float = 1.0
    threshold: float = 0.0
    max_strength: float = 1.0
    steps: tuple[tuple[float, float], ...] | None = None

    def __call__(self, magnitude: float) -> float:
        if self.steps:
            out = 0.0
            for edge, value in self.steps:
                if magnitude >= edge:
                    out = value
            return float(out)
        if magnitude <= self.threshold:
            return 0.0
        return float(min(self.max_strength, max(0.0, self.scale * (magnitude - self.threshold))))

    @classmethod
    def from_dict(cls, d: dict) -> "Schedule":
        d = dict(d)
        if d.get("steps") is not None:
            d["steps"] = tuple((float(a), float(b)) for a, b in d["steps"])
        unknown = set(d) - {"scale", "threshold", "max_strength", "steps"}
        if unknown:
            raise ValueError(f"difficulty schedule: unknown keys {sorted(unknown)}")
        return cls(**d)


@dataclass(frozen=True)
class Decision:
    """What the data side should do for one prompt."""

    delta: float  # Δ(x)
    kind: str  # "hint" (hard), "perturb" (easy) or "none"
    strength: float  # in the schedule's units; 0 for "none"
    perturbation: str = "noise"  # "noise" (frame Gaussian noise σ) or "mask" (share of frames)


class DifficultyTracker:
    """Replay buffer of the last ``window`` rewards and the Δ(x) decision rule.

    >>> tracker = DifficultyTracker(window=100)
    >>> decisions = tracker.step(rewards)      # rewards [P, G]: decide, then add to the buffer
    >>> json.dump(tracker.state_dict(), f)

    With an empty buffer Δ = 0 (no augmentation until there is history).
    """

    def __init__(
        self,
        window: int = 100,
        *,
        hint: Schedule | dict | None = None,
        perturb: Schedule | dict | None = None,
        perturbation: str = "noise",
    ):
        if window < 1:
            raise ValueError(f"DifficultyTracker: window must be >= 1, got {window}")
        if perturbation not in ("noise", "mask"):
            raise ValueError(f"DifficultyTracker: perturbation must be 'noise' or 'mask', got {perturbation!r}")
        self.window = int(window)
        self.hint = _schedule(hint, Schedule(scale=1.0, max_strength=1.0))
        self.perturb = _schedule(perturb, Schedule(scale=0.1, max_strength=0.2))
        self.perturbation = perturbation
        self._buffer: deque[float] = deque(maxlen=self.window)

    # -- pure parts
    def buffer_mean(self) -> float | None:
        return float(np.mean(self._buffer)) if self._buffer else None

    def delta(self, group_rewards: Iterable[float]) -> float:
        """Δ(x) = buffer mean − group mean (0 with an empty buffer)."""
        group = np.asarray(list(group_rewards), np.float64)
        if group.size == 0:
            raise ValueError("DifficultyTracker.delta: empty group")
        ref = self.buffer_mean()
        return 0.0 if ref is None else float(ref - group.mean())

    def decide(self, group_rewards: Iterable[float]) -> Decision:
        d = self.delta(group_rewards)
        if d > 0:
            s = self.hint(d)
            return Decision(d, "hint" if s > 0 else "none", s, self.perturbation)
        if d < 0:
            s = self.perturb(-d)
            return Decision(d, "perturb" if s > 0 else "none", s, self.perturbation)
        return Decision(d, "none", 0.0, self.perturbation)

    # -- state
    def observe(self, rewards) -> None:
        """Append rewards (any shape, row-major) to the buffer, oldest dropped beyond W."""
        values = np.asarray(rewards, np.float64).reshape(-1)
        if not np.all(np.isfinite(values)):
            raise ValueError("DifficultyTracker.observe: rewards must be finite")
        self._buffer.extend(values.tolist())

    def step(self, rewards) -> list[Decision]:
        """Decide for every prompt of ``rewards[P, G]`` against the buffer *before* this batch,
        then add the batch to the buffer."""
        r = np.asarray(rewards, np.float64)
        if r.ndim != 2:
            raise ValueError(f"DifficultyTracker.step: rewards must be [P, G], got shape {r.shape}")
        decisions = [self.decide(row) for row in r]
        self.observe(r)
        return decisions

    def state_dict(self) -> dict:
        return {
            "window": self.window,
            "buffer": list(self._buffer),
            "hint": asdict(self.hint),
            "perturb": asdict(self.perturb),
            "perturbation": self.perturbation,
        }

    def load_state_dict(self, state: dict) -> None:
        if int(state["window"]) != self.window:
            raise ValueError(
                f"DifficultyTracker.load_state_dict: checkpoint window {state['window']} != {self.window}"
            )
        self.hint = Schedule.from_dict(state["hint"])
        self.perturb = Schedule.from_dict(state["perturb"])
        self.perturbation = state["perturbation"]
        self._buffer = deque((float(v) for v in state["buffer"]), maxlen=self.window)

    @classmethod
    def from_state_dict(cls, state: dict) -> "DifficultyTracker":
        t = cls(int(state["window"]))
        t.load_state_dict(state)
        return t


def _schedule(s, default: Schedule) -> Schedule:
    if s is None:
        return default
    return s if isinstance(s, Schedule) else Schedule.from_dict(s)
