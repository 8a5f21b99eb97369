"""vLLM general plugin: registers the decomposed-attention llama with vLLM's model registry.

vLLM runs every ``vllm.general_plugins`` entry point in each of its processes (API
frontend, engine core, workers), so the architecture is known wherever the model is
built. Registration alone changes nothing: an engine uses the model only when its
``hf_overrides`` name ``ARCHITECTURE`` (``cache.mode = decomposed``, see
``agentstack.engine``). The class is registered by its import path, so loading the
plugin imports no model code.
"""

from __future__ import annotations

ARCHITECTURE = "AgentstackDecomposedLlamaForCausalLM"
"""The architecture name an engine asks for in ``hf_overrides`` to serve decomposed."""

MODEL_CLASS = "cache.decomposed_model:DecomposedLlamaForCausalLM"

SHARED_A_KEY = "agentstack_shared_a"
"""``hf_config`` attribute (set through ``hf_overrides``): the adapter directory whose v_proj
lora_A every role shares; the model caches ``x·A`` with it."""


def register() -> None:
    """Entry point of ``vllm.general_plugins``; safe to run more than once per process."""
    from vllm import ModelRegistry

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, MODEL_CLASS)


def hf_overrides(shared_a_adapter: str) -> dict[str, str | list[str]]:
    """The engine's ``hf_overrides`` that select the decomposed model with this shared A."""
    return {"architectures": [ARCHITECTURE], SHARED_A_KEY: shared_a_adapter}
