"""The one name → function registry, so configs pick pieces by name (as TRL's ``loss_type`` and
verl's ``adv_estimator`` do): RL losses, advantages, KL estimators, aggregations and accuracy
scorers (:mod:`vital_jax.rl`), and the model's attention implementations
(``runtime.attention``, :data:`vital_jax.models.qwen2_5_vl.modeling.ATTENTION`).

Each registered function carries its formula in its docstring; ``describe(name)`` returns it.
A registration may also declare facts about the function (``register("gspo", clip="sequence")``)
that callers read with ``info(name)`` instead of matching names (the RL trainer asks a policy loss
which clip range and which default aggregation it uses).
Lookups are case-insensitive, ``-`` and ``_`` are interchangeable, and a miss raises a ``KeyError``
that lists every known name.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

F = TypeVar("F", bound=Callable)


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_")


class Registry(Generic[F]):
    """Maps canonical names (and aliases) to functions.

    >>> LOSSES = Registry("policy loss")
    >>> @LOSSES.register("grpo", "ppo")
    ... def grpo(...): ...
    >>> LOSSES.get("PPO") is grpo
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._fns: dict[str, F] = {}
        self._aliases: dict[str, str] = {}
        self._info: dict[str, dict[str, Any]] = {}

    def register(self, name: str, *aliases: str, **info: Any) -> Callable[[F], F]:
        """Register under ``name`` and ``aliases``; ``info``: declared facts, see :meth:`info`."""
        canonical = _norm(name)

        def deco(fn: F) -> F:
            for key in dict.fromkeys((canonical, *map(_norm, aliases))):
                if key in self._aliases:
                    raise ValueError(f"{self.kind} name {key!r} registered twice")
                self._aliases[key] = canonical
            self._fns[canonical] = fn
            self._info[canonical] = dict(info)
            return fn

        return deco

    def canonical(self, name: str) -> str:
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a string, got {type(name).__name__}")
        key = _norm(name)
        if key not in self._aliases:
            raise KeyError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}"
                + (f" (aliases: {', '.join(self.aliases())})" if self.aliases() else "")
            )
        return self._aliases[key]

    def get(self, name: str) -> F:
        return self._fns[self.canonical(name)]

    def info(self, name: str) -> dict[str, Any]:
        """What the registration declared about ``name`` (a copy; empty when nothing was)."""
        return dict(self._info[self.canonical(name)])

    def names(self) -> list[str]:
        """Canonical names, sorted."""
        return sorted(self._fns)

    def aliases(self) -> list[str]:
        return sorted(k for k, v in self._aliases.items() if k != v)

    def describe(self, name: str) -> str:
        """The registered function's docstring (its formula)."""
        return (self.get(name).__doc__ or "").strip()

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _norm(name) in self._aliases

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
