"""LoRA training for role adapters that keep the shared-cache shape."""

from agentstack.offline.training.lora import (
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
    "build_labels",
    "load_examples",
    "train_lora",
]

