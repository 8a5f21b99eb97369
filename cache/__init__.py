"""The decomposed KV cache shared across role adapters (LRAgent): K, V_base and x·A once, B per role.

Not built yet; the engine uses vLLM's own per-adapter prefix cache.
"""
