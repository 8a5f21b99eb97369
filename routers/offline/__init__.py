"""The gate's offline part: its task family, measured outcomes, training and evaluation.

Serving code (routers.gate, routers.features, routers.mixture, routers.serving) never
imports this package; `agentstack gate train` and `agentstack eval gate` do."""
