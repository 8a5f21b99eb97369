"""Offline tools (the `tools` extra): benchmarks, BFCL evaluation and adapter training.

The server never imports this package; only `agentstack bench|eval|adapters|gate` do."""
