"""vLLM general plugin: grouped LoRA ops for the CPU engine (``grouped_lora``), and an
end to vLLM's child processes when their parent dies (``orphan_guard``).

vLLM runs every ``vllm.general_plugins`` entry point in each of its processes, before a
model is built, so the worker that runs the model gets the ops whichever way the engine
was started (agentstack, ``vllm serve``, ``vllm.LLM``). The patch replaces the six op
names that ``vllm.lora.punica_wrapper.punica_cpu`` imports and its wrapper's
``add_lora_linear`` (which skips slices without weights); it is written against one
vLLM release and leaves any other release untouched, with one warning.

``AGENTSTACK_GROUPED_LORA=0`` turns it off (for comparison with stock vLLM).
"""

from __future__ import annotations

import os

from cache.vllm_plugin import SUPPORTED_VLLM_VERSION, patch_applies  # noqa: F401  (the release, re-exported)

ENABLE_ENV = "AGENTSTACK_GROUPED_LORA"


def grouped_lora_enabled() -> bool:
    return os.environ.get(ENABLE_ENV, "1").strip().lower() not in {"0", "false", "no", "off"}


def install_grouped_lora(vllm_version: str | None = None) -> bool:
    """Point vLLM's CPU punica wrapper at the grouped ops. Returns whether they are in use.

    Idempotent; does nothing when turned off or on another vLLM release."""
    if not grouped_lora_enabled():
        return False
    if not patch_applies("grouped LoRA ops are", "its own LoRA ops stay in use (LoRA prefill on CPU "
                         "will be much slower)", vllm_version):
        return False
    use_grouped_lora(True)
    return True


_stock_add_lora_linear: dict[str, object] = {}


def use_grouped_lora(enabled: bool) -> bool:
    """Switch the CPU punica wrapper between the grouped ops and vLLM's own, in this process.

    Benchmarks and tests reach it in the engine's worker through ``GroupedLoRAControl``
    to compare both on one engine; it returns whether the grouped ops are now in use."""
    from vllm.lora.ops import torch_ops
    from vllm.lora.punica_wrapper import punica_cpu

    from agentstack.vllm_ext import grouped_lora, projection_lora

    wrapper = punica_cpu.PunicaWrapperCPU
    current = wrapper.__dict__["add_lora_linear"]
    if current is not projection_lora.add_lora_linear:
        _stock_add_lora_linear.setdefault("add_lora_linear", current)
    for name, op in grouped_lora.GROUPED_OPS.items():
        setattr(punica_cpu, name, op if enabled else getattr(torch_ops, name))
    wrapper.add_lora_linear = (  # type: ignore[method-assign]
        projection_lora.add_lora_linear if enabled else _stock_add_lora_linear["add_lora_linear"])
    return enabled


def grouped_lora_in_use() -> bool:
    """Whether this process's CPU punica wrapper runs the grouped ops."""
    from vllm.lora.punica_wrapper import punica_cpu

    from agentstack.vllm_ext import grouped_lora, projection_lora

    return (punica_cpu.PunicaWrapperCPU.__dict__["add_lora_linear"] is projection_lora.add_lora_linear
            and all(getattr(punica_cpu, name) is op for name, op in grouped_lora.GROUPED_OPS.items()))


def register() -> None:
    """Entry point of ``vllm.general_plugins``: in vLLM's child processes, the orphan
    guard (on any vLLM release); then the grouped ops."""
    from agentstack.vllm_ext.orphan_guard import watch_parent

    watch_parent()
    install_grouped_lora()


class GroupedLoRAControl:
    """vLLM worker extension (``worker_extension_cls``): lets the engine's owner switch the
    ops in the worker process, through ``collective_rpc("grouped_lora", args=(enabled,))``."""

    def grouped_lora(self, enabled: bool | None = None) -> bool:
        """Switch the grouped ops on or off (``None``: leave as is); returns whether in use."""
        if enabled is not None:
            use_grouped_lora(enabled)
        return grouped_lora_in_use()


WORKER_EXTENSION = f"{__name__}.{GroupedLoRAControl.__name__}"
