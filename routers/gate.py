"""The gate: a small MLP on backbone features with two heads (TWN + ReMix).

- role head: a distribution over role adapters; the top-k roles are served as their
  uniform mixture (ReMix: weights are 1/k, not learned);
- think head: the probability that reasoning changes the outcome (TWN).

At inference the decision is deterministic: no dropout, top-k by probability (ties by
role order), think when p >= threshold. A gate is two files: `gate.json` (validated
with pydantic) and the weights it names (safetensors, checked by digest and shape).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors.torch import load_file, save_file

GATE_FORMAT = "agentstack-gate/1"
GATE_FILE = "gate.json"
SUPERVISED_GATE_FILE = "gate-supervised.json"
LORA_RANK = 16


class GateLoadError(ValueError):
    """A gate file is missing, malformed or does not match its weights."""


class FeatureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    layer: int = Field(ge=1, description="Decoder layers run; their output is pooled.")
    pooling: Literal["mean"] = "mean"
    dim: int = Field(ge=1)


class GateFile(BaseModel):
    """`gate.json`: everything needed to rebuild the head and check its weights."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["agentstack-gate/1"]
    base_model: str
    features: FeatureSpec
    roles: list[str] = Field(min_length=1)
    top_k: int = Field(ge=1)
    hidden: int = Field(ge=1)
    think_threshold: float = Field(gt=0.0, lt=1.0)
    weights: str = Field(pattern=r"^[A-Za-z0-9_.\-]+\.safetensors$")
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    training: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _k_within_roles(self) -> GateFile:
        if self.top_k > len(self.roles):
            raise ValueError(f"top_k={self.top_k} exceeds the {len(self.roles)} roles")
        if len(set(self.roles)) != len(self.roles):
            raise ValueError("roles must be distinct")
        return self


class GateHead(torch.nn.Module):
    """Standardize, one hidden layer, two heads."""

    def __init__(self, dim: int, hidden: int, n_roles: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.body = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.GELU(), torch.nn.Dropout(dropout))
        self.roles = torch.nn.Linear(hidden, n_roles)
        self.think = torch.nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Role logits (..., n_roles) and think logit (...)."""
        h = self.body((x - self.mean) / self.std)
        return self.roles(h), self.think(h).squeeze(-1)


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """What the gate chose for one request, and why."""

    roles: tuple[str, ...]
    weights: tuple[float, ...]
    path: Literal["think", "direct"]
    role_probs: dict[str, float]
    think_prob: float
    reason: str
    gate_ms: float = 0.0

    def header(self) -> str:
        """Compact JSON for the `x-agentstack-route` response header."""
        return json.dumps(self.as_dict(), separators=(",", ":"))

    def as_dict(self) -> dict[str, Any]:
        return {"roles": list(self.roles), "weights": [round(w, 4) for w in self.weights], "path": self.path,
                "role_probs": {k: round(v, 4) for k, v in self.role_probs.items()},
                "think_prob": round(self.think_prob, 4), "reason": self.reason, "gate_ms": round(self.gate_ms, 2)}


@dataclass(slots=True)
class Gate:
    """A loaded gate: its file and its head, in eval mode."""

    spec: GateFile
    head: GateHead
    source: Path | None = field(default=None)

    @property
    def required_lora_rank(self) -> int:
        """The engine's max LoRA rank a top-k mixture of rank-16 roles needs."""
        return LORA_RANK * self.spec.top_k

    def decide_features(self, features: torch.Tensor, *, top_k: int | None = None,
                        allowed: Collection[str] | None = None) -> RouteDecision:
        """Deterministic decision for one feature vector; with `allowed`, the top-k is taken
        among those roles only (an API key restricted to some roles).

        Raises:
            ValueError: `allowed` names none of the gate's roles.
        """
        candidates = [i for i, role in enumerate(self.spec.roles) if allowed is None or role in allowed]
        if not candidates:
            raise ValueError(f"none of the gate's roles ({', '.join(self.spec.roles)}) is allowed")
        k = min(top_k or self.spec.top_k, len(candidates))
        with torch.inference_mode():
            role_logits, think_logit = self.head(features.float().unsqueeze(0))
            probs = torch.softmax(role_logits[0], dim=-1).tolist()
            think_prob = float(torch.sigmoid(think_logit[0]))
        order = sorted(candidates, key=lambda i: (-probs[i], i))[:k]
        roles = tuple(self.spec.roles[i] for i in order)
        path: Literal["think", "direct"] = "think" if think_prob >= self.spec.think_threshold else "direct"
        chosen = ", ".join(f"{self.spec.roles[i]} p={probs[i]:.2f}" for i in order)
        cmp = ">=" if path == "think" else "<"
        among = f"{len(probs)} roles" if len(candidates) == len(probs) else f"the {len(candidates)} roles this key may use"
        reason = f"top-{k} of {among}: {chosen}; think p={think_prob:.2f} {cmp} {self.spec.think_threshold:.2f}"
        return RouteDecision(roles=roles, weights=tuple(1.0 / k for _ in roles), path=path,
                             role_probs={r: p for r, p in zip(self.spec.roles, probs)},
                             think_prob=think_prob, reason=reason)


def save_gate(directory: Path, head: GateHead, spec: dict[str, Any], *, name: str = GATE_FILE) -> Path:
    """Write the head's weights and its validated `gate.json` beside them."""
    directory.mkdir(parents=True, exist_ok=True)
    weights_name = Path(name).with_suffix(".safetensors").name
    tensors = {k: v.detach().contiguous() for k, v in head.state_dict().items()}
    save_file(tensors, str(directory / weights_name))
    digest = hashlib.sha256((directory / weights_name).read_bytes()).hexdigest()
    gate_file = GateFile.model_validate({**spec, "format": GATE_FORMAT, "weights": weights_name,
                                         "weights_sha256": digest})
    (directory / name).write_text(gate_file.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return directory / name


def load_gate(path: Path) -> Gate:
    """Read, validate and build a gate.

    Raises:
        GateLoadError: with the file and what is wrong with it.
    """
    try:
        spec = GateFile.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise GateLoadError(f"cannot read gate file {path}: {e}") from e
    except ValidationError as e:
        raise GateLoadError(f"invalid gate file {path}: {e}") from e
    weights_path = path.parent / spec.weights
    try:
        raw = weights_path.read_bytes()
    except OSError as e:
        raise GateLoadError(f"gate file {path} names weights {spec.weights} that cannot be read: {e}") from e
    if hashlib.sha256(raw).hexdigest() != spec.weights_sha256:
        raise GateLoadError(f"gate weights {weights_path} do not match the digest in {path}")
    head = GateHead(spec.features.dim, spec.hidden, len(spec.roles))
    try:
        head.load_state_dict(load_file(str(weights_path)))
    except (RuntimeError, KeyError) as e:
        raise GateLoadError(f"gate weights {weights_path} do not fit {path} "
                            f"(dim {spec.features.dim}, hidden {spec.hidden}, {len(spec.roles)} roles): {e}") from e
    head.eval()
    return Gate(spec=spec, head=head, source=path)
