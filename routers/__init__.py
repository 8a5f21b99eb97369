"""The learned gate (TWN + ReMix): picks role adapter(s) and the think or direct path per request.

Serving: `Gate` (routers.gate) reads the backbone's pooled hidden states (routers.features)
over the routed prompt (routers.prompt) and returns a `RouteDecision`; k > 1 roles are
served as one merged uniform mixture (routers.mixture); routers.serving plans the request.
Offline (routers.offline, never imported by serving): labels and rewards come from measured
engine runs (measure) on a generated task family (tasks); the gate is trained as one policy
over (role set, path) on their expected reward (train); `agentstack eval gate` compares it
with the baselines (evaluate).
"""

from routers.gate import Gate, GateFile, GateLoadError, RouteDecision, load_gate
from routers.mixture import MixtureCache, MixtureError, merge_adapters

__all__ = [
    "Gate",
    "GateFile",
    "GateLoadError",
    "MixtureCache",
    "MixtureError",
    "RouteDecision",
    "load_gate",
    "merge_adapters",
]
