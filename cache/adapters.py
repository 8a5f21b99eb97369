"""Which role adapters can share a decomposed cache: those with the same v_proj lora_A.

x·A is cached once for all roles, so roles share a decomposed block only when their
v_proj lora_A are identical in every layer (training copies the reference role's A and
freezes it; see ``agentstack.offline.training.lora``). The fingerprint goes into the cache
namespace, so a block of x·A computed with one A is never read with another.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

# A PEFT adapter directory's files (peft's own names; importing peft for two constants
# costs seconds in every process that reads an adapter).
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
_V_A = re.compile(r"layers\.(\d+)\.self_attn\.v_proj\.lora_A\.weight$")


def shared_a_fingerprint(adapter_dir: Path) -> str:
    """Digest of the adapter's v_proj lora_A over all layers (and its rank).

    Raises:
        ValueError: the adapter has no v_proj LoRA, or adapts k_proj (keys then differ
            per role and cannot be shared at all).
    """
    config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())
    if "k_proj" in set(config.get("target_modules") or []):
        raise ValueError(f"{adapter_dir.name} adapts k_proj: its keys cannot be shared")
    digest = hashlib.sha256(f"r={config['r']}".encode())
    with safe_open(str(adapter_dir / ADAPTER_WEIGHTS), "pt") as f:
        layers = sorted(
            (int(m.group(1)), key) for key in f.keys() if (m := _V_A.search(key)) is not None
        )
        if not layers:
            raise ValueError(f"{adapter_dir.name} has no v_proj LoRA")
        for _, key in layers:
            tensor = f.get_tensor(key).contiguous()
            digest.update(str(tensor.dtype).encode() + tensor.float().numpy().tobytes())
    return digest.hexdigest()[:16]


def group_by_shared_a(adapter_dirs: Iterable[Path]) -> list[list[Path]]:
    """Adapters grouped by identical v_proj lora_A, largest group first."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for adapter in adapter_dirs:
        groups[shared_a_fingerprint(adapter)].append(adapter)
    ordered = [sorted(group, key=lambda p: p.name) for group in groups.values()]
    return sorted(ordered, key=lambda g: (-len(g), [p.name for p in g]))


@dataclass(frozen=True, slots=True)
class SharedA:
    """The v_proj lora_A a decomposed cache is computed with (x·A is cached once for all roles)."""

    adapter: Path
    """An adapter of the family: the model reads the shared A from it."""
    rank: int
    fingerprint: str
    """``shared_a_fingerprint``: part of the cache namespace."""

    @classmethod
    def of(cls, adapter_dir: Path) -> SharedA:
        config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())
        return cls(adapter_dir.resolve(), int(config["r"]), shared_a_fingerprint(adapter_dir))

    def is_member(self, adapter_dir: Path) -> bool:
        """Whether the adapter's cached blocks equal every family member's: no k_proj LoRA,
        and its v_proj lora_A is the shared A (or it has no v_proj LoRA: its B is zero)."""
        return in_family(adapter_dir, self.fingerprint)


def in_family(adapter_dir: Path, fingerprint: str) -> bool:
    """``SharedA.is_member`` by the family's fingerprint. The scheduler asks for every
    request: the answer is kept per adapter directory and weights file version."""
    weights = adapter_dir / ADAPTER_WEIGHTS
    return _in_family(adapter_dir, weights.stat().st_mtime_ns if weights.exists() else 0, fingerprint)


@functools.lru_cache(maxsize=256)
def _in_family(adapter_dir: Path, version: int, fingerprint: str) -> bool:
    try:
        return shared_a_fingerprint(adapter_dir) == fingerprint
    except ValueError as e:
        return "no v_proj LoRA" in str(e)
