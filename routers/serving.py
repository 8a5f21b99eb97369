"""`model: "auto"`: the gate's decision turned into one engine request.

`AutoRouter` owns the gate, the feature extractor and the roles it routes to. A decision
of one role serves that role; k roles serve their uniform mixture, merged once into one
LoRA adapter (`routers.mixture`) and loaded into the engine once. The chat core
(`agentstack.chat.dispatch`) turns the decision into a generation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentstack.auth import current_principal
from agentstack.errors import Forbidden
from agentstack.roles import Role, RoleSpec
from routers.features import FeatureExtractor
from routers.gate import GATE_FILE, Gate, GateLoadError, RouteDecision, load_gate
from routers.mixture import MixtureCache

if TYPE_CHECKING:
    from agentstack.service import Service

MIXTURE_PREFIX = "mix."


@dataclass(frozen=True, slots=True)
class MixtureRole(Role):
    """A served uniform mixture; `parts` are the roles it mixes."""

    parts: tuple[str, ...] = ()


@dataclass(slots=True)
class RoleResolver:
    """Role sets to servable roles: one role as is, several as their merged mixture."""

    cache: MixtureCache
    _mixtures: dict[tuple[str, ...], Role] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def role_for(self, service: Service, names: Sequence[str]) -> Role:
        subset = tuple(sorted(names))
        if len(subset) == 1:
            return service.resolve(subset[0])
        async with self._lock:
            if subset in self._mixtures:
                return self._mixtures[subset]
            assert service.engine is not None
            parts: dict[str, Path | None] = {}
            for name in subset:
                role = service.resolve(name)
                parts[name] = role.adapter.path if role.adapter is not None else None
            path = await asyncio.to_thread(self.cache.get, parts)
            name = MIXTURE_PREFIX + ".".join(subset)
            adapter = service.engine.new_adapter(name, path)
            await service.engine.load_adapter(adapter)
            role = MixtureRole(spec=RoleSpec(name=name, description=f"uniform mixture of {', '.join(subset)}"),
                               adapter=adapter, origin="runtime", parts=subset)
            self._mixtures[subset] = role
            return role


@dataclass(slots=True)
class AutoRouter:
    """The gate as the service runs it."""

    gate: Gate
    features: FeatureExtractor
    resolver: RoleResolver

    @classmethod
    def load(cls, gate_dir: Path, model_dir: Path, mixtures_dir: Path) -> AutoRouter:
        """Load and check the gate file, then its feature model.

        Raises:
            GateLoadError: the gate file is missing parts or malformed. Whether its roles
                are served is known only once they are installed (`missing_roles`).
        """
        gate = load_gate(gate_dir / GATE_FILE)
        extractor = FeatureExtractor(model_dir, layer=gate.spec.features.layer,
                                     pooling=gate.spec.features.pooling).load()
        if extractor.dim != gate.spec.features.dim:
            raise GateLoadError(f"{gate_dir / GATE_FILE}: features of dim {gate.spec.features.dim}, "
                                f"but the model's {gate.spec.features.pooling} features have {extractor.dim}")
        return cls(gate=gate, features=extractor, resolver=RoleResolver(MixtureCache(mixtures_dir)))

    def missing_roles(self, available: Sequence[str]) -> list[str]:
        """The gate's roles that `available` lacks: without them `auto` cannot be served."""
        return [r for r in self.gate.spec.roles if r not in available]

    def decide(self, messages: list[dict[str, str]], tools: list[dict[str, Any]] | None,
               allowed: Collection[str] | None = None) -> RouteDecision:
        """Features of the prompt, then the head; `gate_ms` is the whole cost."""
        started = time.perf_counter()
        vector = self.features.features(messages, tools)
        decision = self.gate.decide_features(vector, allowed=allowed)
        elapsed = (time.perf_counter() - started) * 1000
        return replace(decision, gate_ms=elapsed)


async def decide(router: AutoRouter, turns: list[dict[str, str]], tools: list[dict[str, Any]] | None) -> RouteDecision:
    """The gate's decision for a conversation (plain turns, as `plain_turns` writes them),
    among the roles the caller's key may use; the forward pass runs off the event loop.

    Raises:
        Forbidden: the key may use none of the gate's roles.
    """
    principal = current_principal.get()
    allowed = None if principal.roles is None else [r for r in router.gate.spec.roles if principal.may_use_role(r)]
    if allowed is not None and not allowed:
        raise Forbidden(f"this API key may use none of the roles the gate routes to "
                        f"({', '.join(router.gate.spec.roles)})", param="model")
    return await asyncio.to_thread(router.decide, turns, tools, allowed)
