"""Serve a uniform mixture of k role adapters as one ordinary LoRA adapter (ReMix).

A LoRA layer adds s_i * B_i A_i x (s_i = alpha_i / r_i). The uniform mixture of k roles
adds (1/k) sum_i s_i B_i A_i x, which is one LoRA of rank sum_i r_i:

    Semantics:
        A = concat_rows(A_1, ..., A_k)                  # (sum r_i) x in
        B = concat_cols(B_1 s_1/k, ..., B_k s_k/k)      # out x (sum r_i)
        alpha = r = sum r_i                             # scaling 1, the s_i live in B
        B A x = (1/k) sum_i s_i B_i A_i x               # exact, no approximation

The base model (a role without an adapter) is a zero delta: it counts in k and adds no
rank. vLLM then serves the mixture as any other adapter; it is merged once per role set
and kept on disk, keyed by the roles and the digests of their weights, so a retrained
role never reuses a stale mixture.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from cache.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS

logger = logging.getLogger(__name__)

UNSUPPORTED_FLAGS = ("use_rslora", "use_dora")


class MixtureError(ValueError):
    """The adapters cannot be merged into one (different modules, unsupported LoRA variant)."""


def _read_config(path: Path) -> dict[str, object]:
    config: dict[str, object] = json.loads((path / ADAPTER_CONFIG).read_text())
    for flag in UNSUPPORTED_FLAGS:
        if config.get(flag):
            raise MixtureError(f"{path.name}: {flag} adapters are not merged here")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise MixtureError(f"{path.name}: per-module rank or alpha patterns are not merged here")
    return config


def merge_adapters(parts: Sequence[Path | None], out_dir: Path) -> Path:
    """Write the uniform mixture of `parts` (None = the base model) to `out_dir`.

    Raises:
        MixtureError: no adapter among the parts, or their LoRA modules differ.
    """
    adapters = [p for p in parts if p is not None]
    if not adapters:
        raise MixtureError("a mixture needs at least one adapter")
    k = len(parts)
    configs = [_read_config(p) for p in adapters]
    weights = [load_file(str(p / ADAPTER_WEIGHTS)) for p in adapters]
    keys = set(weights[0])
    for path, w in zip(adapters[1:], weights[1:]):
        if set(w) != keys:
            raise MixtureError(f"{path.name} adapts other modules than {adapters[0].name}")
    scales = [float(c["lora_alpha"]) / float(c["r"]) / k for c in configs]  # type: ignore[arg-type]
    total_rank = sum(int(c["r"]) for c in configs)  # type: ignore[call-overload]

    merged: dict[str, torch.Tensor] = {}
    for key in sorted(keys):
        if ".lora_A." in key:
            merged[key] = torch.cat([w[key].float() for w in weights], dim=0).contiguous()
        elif ".lora_B." in key:
            merged[key] = torch.cat([w[key].float() * s for w, s in zip(weights, scales)], dim=1).contiguous()
        else:
            raise MixtureError(f"unexpected tensor {key} in {adapters[0].name}")

    config = dict(configs[0])
    config.update(r=total_rank, lora_alpha=total_rank)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(merged, str(out_dir / ADAPTER_WEIGHTS))
    (out_dir / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    return out_dir


def _digest(path: Path | None) -> str:
    if path is None:
        return "base"
    return hashlib.sha256((path / ADAPTER_WEIGHTS).read_bytes()).hexdigest()[:16]


class MixtureCache:
    """Merged mixtures on disk under `root`, one directory per role set and weights."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def key(self, parts: Mapping[str, Path | None]) -> str:
        """Directory name: the sorted role names plus a digest of their weights."""
        names = sorted(parts)
        digest = hashlib.sha256("|".join(f"{n}={_digest(parts[n])}" for n in names).encode()).hexdigest()
        return f"mix-{'+'.join(names)}-{digest[:12]}"

    def get(self, parts: Mapping[str, Path | None]) -> Path:
        """The merged adapter for these roles: merged on first use, then read from disk.

        The merge goes to a temporary directory renamed into place, so a concurrent or
        interrupted merge never leaves a half-written adapter under the final name."""
        final = self.root / self.key(parts)
        if (final / ADAPTER_WEIGHTS).is_file():
            return final
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".merge-", dir=self.root))
        try:
            merge_adapters([parts[n] for n in sorted(parts)], staging)
            staging.chmod(0o755)  # mkdtemp makes it private; adapters are read by any worker
            try:
                os.rename(staging, final)
            except OSError:
                if not (final / ADAPTER_WEIGHTS).is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logger.info("merged mixture %s", final.name)
        return final
