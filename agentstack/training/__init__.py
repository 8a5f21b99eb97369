"""LoRA training for role adapters that keep the shared-cache shape."""

from typing import Any

from agentstack.training.lora import (
    CACHE_TARGET_MODULES,
    ChatExample,
    ChatMessage,
    CheckpointMismatchError,
    TrainResult,
    TrainSpec,
    build_labels,
    load_examples,
    train_lora,
)

__all__ = [
    "CACHE_TARGET_MODULES",
    "ChatExample",
    "ChatMessage",
    "CheckpointMismatchError",
    "TrainResult",
    "TrainSpec",
    "build_demo_adapters",
    "build_labels",
    "load_examples",
    "train_lora",
]


def __getattr__(name: str) -> Any:
    """Import the demo builder on first use, so `python -m agentstack.training.demo` loads once."""
    if name == "build_demo_adapters":
        from agentstack.training.demo import build_demo_adapters

        return build_demo_adapters
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
