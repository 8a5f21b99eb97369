"""The learned gate (TWN + ReMix): picks role adapter(s) and the think or direct path per request.

`Gate` (routers.gate) reads the backbone's pooled hidden states (routers.features) and
returns a `RouteDecision`; k > 1 roles are served as one merged uniform mixture
(routers.mixture). Labels and rewards come from measured engine runs (routers.measure)
on a generated task family (routers.tasks); training is supervised then RLOO
(routers.train); `agentstack eval gate` compares it with the baselines (routers.evaluate).
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
