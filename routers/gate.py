"""The gate: a small MLP on backbone features that picks the role set and the path.

Two head formats, both served:

- `agentstack-gate/1` (TWN + ReMix, the shipped gate): a role head (softmax over role
  adapters; the top-k roles are served as their uniform mixture) and a think head (the
  probability that reasoning changes the outcome, think when p >= threshold);
- `agentstack-gate/2` (one policy): one logit per action, an action being a role set of
  size 1..top_k (served as its uniform mixture) and a path; the served action is the
  most probable one. Role sets and paths are chosen jointly, so "think helps the roles
  chosen" is learned rather than assumed.

At inference the decision is deterministic: no dropout, ties go to the earlier role or
action in the file. A gate is two files: `gate.json` (validated with pydantic) and the
weights it names (safetensors, checked by digest and shape).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors.torch import load_file, save_file

from routers.features import Pooling

GATE_FORMAT = "agentstack-gate/1"
POLICY_FORMAT = "agentstack-gate/2"
GATE_FILE = "gate.json"
SUPERVISED_GATE_FILE = "gate-supervised.json"
LORA_RANK = 16

PathName = Literal["think", "direct"]


class GateLoadError(ValueError):
    """A gate file is missing, malformed or does not match its weights."""


def action_key(roles: Sequence[str], path: str) -> str:
    """An action's name in gate files, outcome tables and decisions: `a+b|think`."""
    return f"{'+'.join(sorted(roles))}|{path}"


class FeatureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    layer: int = Field(ge=1, description="Decoder layers run; their output is pooled.")
    pooling: Pooling = "mean"
    dim: int = Field(ge=1)

    @model_validator(mode="after")
    def _dim_fits_pooling(self) -> FeatureSpec:
        if self.pooling == "mean+last" and self.dim % 2:
            raise ValueError(f"mean+last features have an even dim, not {self.dim}")
        return self


class ActionSpec(BaseModel):
    """One action of a policy gate: a role set (served as its uniform mixture) and a path."""

    model_config = ConfigDict(extra="forbid")

    roles: list[str] = Field(min_length=1)
    path: PathName

    @property
    def key(self) -> str:
        return action_key(self.roles, self.path)


class GateFile(BaseModel):
    """`gate.json`: everything needed to rebuild the head and check its weights."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["agentstack-gate/1", "agentstack-gate/2"]
    base_model: str
    features: FeatureSpec
    roles: list[str] = Field(min_length=1)
    top_k: int = Field(ge=1, description="Role sets served have at most this many roles.")
    hidden: int = Field(ge=1)
    think_threshold: float | None = Field(default=None, gt=0.0, lt=1.0,
                                          description="Format 1 only: think when p >= this.")
    actions: list[ActionSpec] | None = Field(default=None, description="Format 2 only: the head's outputs.")
    weights: str = Field(pattern=r"^[A-Za-z0-9_.\-]+\.safetensors$")
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    training: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> GateFile:
        if self.top_k > len(self.roles):
            raise ValueError(f"top_k={self.top_k} exceeds the {len(self.roles)} roles")
        if len(set(self.roles)) != len(self.roles):
            raise ValueError("roles must be distinct")
        if self.format == GATE_FORMAT:
            if self.think_threshold is None or self.actions is not None:
                raise ValueError(f"{GATE_FORMAT} needs think_threshold and no actions")
            return self
        if self.actions is None or self.think_threshold is not None:
            raise ValueError(f"{POLICY_FORMAT} needs actions and no think_threshold")
        self._check_actions(self.actions)
        return self

    def _check_actions(self, actions: list[ActionSpec]) -> None:
        if not actions:
            raise ValueError("actions must not be empty")
        keys = [a.key for a in actions]
        if len(set(keys)) != len(keys):
            raise ValueError("actions must be distinct")
        for action in actions:
            if action.roles != sorted(set(action.roles)):
                raise ValueError(f"action {action.key}: roles must be distinct and sorted")
            unknown = [r for r in action.roles if r not in self.roles]
            if unknown:
                raise ValueError(f"action {action.key} names roles not in roles: {', '.join(unknown)}")
        largest = max(len(a.roles) for a in actions)
        if largest != self.top_k:
            raise ValueError(f"top_k={self.top_k} but the largest action has {largest} roles")

    @property
    def is_policy(self) -> bool:
        return self.actions is not None


class _Standardized(torch.nn.Module):
    """Standardize the features (statistics of the training prompts), then one hidden layer."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.body = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.GELU(), torch.nn.Dropout(dropout))

    def hidden_state(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std)


class GateHead(_Standardized):
    """Format 1: role logits and a think logit."""

    def __init__(self, dim: int, hidden: int, n_roles: int, dropout: float = 0.0) -> None:
        super().__init__(dim, hidden, dropout)
        self.roles = torch.nn.Linear(hidden, n_roles)
        self.think = torch.nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Role logits (..., n_roles) and think logit (...)."""
        h = self.hidden_state(x)
        return self.roles(h), self.think(h).squeeze(-1)


class PolicyHead(_Standardized):
    """Format 2: one logit per action; softmax over them is the policy."""

    def __init__(self, dim: int, hidden: int, n_actions: int, dropout: float = 0.0) -> None:
        super().__init__(dim, hidden, dropout)
        self.actions = torch.nn.Linear(hidden, n_actions)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Action logits (..., n_actions)."""
        return self.actions(self.hidden_state(x))


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """What the gate chose for one request, and why.

    `role_probs` and `think_prob` are the role head's and think head's outputs (format 1),
    or the policy's marginals (format 2: the probability that an action with that role, or
    on the think path, is chosen); `action_probs` is the policy itself (format 2 only)."""

    roles: tuple[str, ...]
    weights: tuple[float, ...]
    path: PathName
    role_probs: dict[str, float]
    think_prob: float
    reason: str
    gate_ms: float = 0.0
    action_probs: dict[str, float] = field(default_factory=dict)

    def header(self) -> str:
        """Compact JSON for the `x-agentstack-route` response header."""
        return json.dumps(self.as_dict(), separators=(",", ":"))

    def as_dict(self) -> dict[str, Any]:
        out = {"roles": list(self.roles), "weights": [round(w, 4) for w in self.weights], "path": self.path,
               "role_probs": {k: round(v, 4) for k, v in self.role_probs.items()},
               "think_prob": round(self.think_prob, 4), "reason": self.reason, "gate_ms": round(self.gate_ms, 2)}
        if self.action_probs:
            out["action_probs"] = {k: round(v, 4) for k, v in self.action_probs.items()}
        return out


@dataclass(slots=True)
class Gate:
    """A loaded gate: its file and its head, in eval mode."""

    spec: GateFile
    head: GateHead | PolicyHead
    source: Path | None = field(default=None)

    @property
    def required_lora_rank(self) -> int:
        """The engine's max LoRA rank a top-k mixture of rank-16 roles needs."""
        return LORA_RANK * self.spec.top_k

    def decide_features(self, features: torch.Tensor, *, top_k: int | None = None,
                        allowed: Collection[str] | None = None) -> RouteDecision:
        """Deterministic decision for one feature vector; with `allowed`, only among those
        roles (an API key restricted to some roles). `top_k` caps the role set's size.

        Raises:
            ValueError: `allowed` names none of the gate's roles.
        """
        if not any(allowed is None or role in allowed for role in self.spec.roles):
            raise ValueError(f"none of the gate's roles ({', '.join(self.spec.roles)}) is allowed")
        if isinstance(self.head, PolicyHead):
            return self._decide_action(self.head, features, top_k, allowed)
        return self._decide_roles(self.head, features, top_k, allowed)

    def _decide_roles(self, head: GateHead, features: torch.Tensor, top_k: int | None,
                      allowed: Collection[str] | None) -> RouteDecision:
        """Format 1: top-k roles by probability, think when p >= threshold."""
        assert self.spec.think_threshold is not None
        candidates = [i for i, role in enumerate(self.spec.roles) if allowed is None or role in allowed]
        k = min(top_k or self.spec.top_k, len(candidates))
        with torch.inference_mode():
            role_logits, think_logit = head(features.float().unsqueeze(0))
            probs = torch.softmax(role_logits[0], dim=-1).tolist()
            think_prob = float(torch.sigmoid(think_logit[0]))
        order = sorted(candidates, key=lambda i: (-probs[i], i))[:k]
        roles = tuple(self.spec.roles[i] for i in order)
        path: PathName = "think" if think_prob >= self.spec.think_threshold else "direct"
        chosen = ", ".join(f"{self.spec.roles[i]} p={probs[i]:.2f}" for i in order)
        cmp = ">=" if path == "think" else "<"
        among = (f"{len(probs)} roles" if len(candidates) == len(probs)
                 else f"the {len(candidates)} roles this key may use")
        reason = f"top-{k} of {among}: {chosen}; think p={think_prob:.2f} {cmp} {self.spec.think_threshold:.2f}"
        return RouteDecision(roles=roles, weights=tuple(1.0 / k for _ in roles), path=path,
                             role_probs={r: p for r, p in zip(self.spec.roles, probs)},
                             think_prob=think_prob, reason=reason)

    def _decide_action(self, head: PolicyHead, features: torch.Tensor, top_k: int | None,
                       allowed: Collection[str] | None) -> RouteDecision:
        """Format 2: the most probable action among those allowed; the probabilities
        reported are the unrestricted policy's."""
        assert self.spec.actions is not None
        actions = self.spec.actions
        limit = top_k or self.spec.top_k
        candidates = [i for i, a in enumerate(actions)
                      if len(a.roles) <= limit and (allowed is None or all(r in allowed for r in a.roles))]
        if not candidates:
            raise ValueError(f"no action of the gate fits the allowed roles within {limit} roles")
        with torch.inference_mode():
            probs = torch.softmax(head(features.float().unsqueeze(0))[0], dim=-1).tolist()
        best = min(candidates, key=lambda i: (-probs[i], i))
        action = actions[best]
        role_probs = {r: sum(p for a, p in zip(actions, probs) if r in a.roles) for r in self.spec.roles}
        think_prob = sum(p for a, p in zip(actions, probs) if a.path == "think")
        among = (f"{len(actions)} actions" if len(candidates) == len(actions)
                 else f"the {len(candidates)} actions this request may use")
        runner = min((i for i in candidates if i != best), key=lambda i: (-probs[i], i), default=None)
        next_best = f"; next {actions[runner].key} p={probs[runner]:.2f}" if runner is not None else ""
        reason = f"best of {among}: {action.key} p={probs[best]:.2f}{next_best}; think p={think_prob:.2f}"
        return RouteDecision(roles=tuple(action.roles), weights=tuple(1.0 / len(action.roles) for _ in action.roles),
                             path=action.path, role_probs=role_probs, think_prob=think_prob, reason=reason,
                             action_probs={a.key: p for a, p in zip(actions, probs)})


def save_gate(directory: Path, head: GateHead | PolicyHead, spec: dict[str, Any], *, name: str = GATE_FILE) -> Path:
    """Write the head's weights and its validated `gate.json` beside them; the format
    follows the head (`PolicyHead`: format 2)."""
    directory.mkdir(parents=True, exist_ok=True)
    weights_name = Path(name).with_suffix(".safetensors").name
    tensors = {k: v.detach().contiguous() for k, v in head.state_dict().items()}
    save_file(tensors, str(directory / weights_name))
    digest = hashlib.sha256((directory / weights_name).read_bytes()).hexdigest()
    gate_format = POLICY_FORMAT if isinstance(head, PolicyHead) else GATE_FORMAT
    gate_file = GateFile.model_validate({**spec, "format": gate_format, "weights": weights_name,
                                         "weights_sha256": digest})
    (directory / name).write_text(gate_file.model_dump_json(indent=2, exclude_none=True) + "\n", encoding="utf-8")
    return directory / name


def _build_head(spec: GateFile) -> GateHead | PolicyHead:
    if spec.actions is not None:
        return PolicyHead(spec.features.dim, spec.hidden, len(spec.actions))
    return GateHead(spec.features.dim, spec.hidden, len(spec.roles))


def load_gate(path: Path) -> Gate:
    """Read, validate and build a gate (either format).

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
    head = _build_head(spec)
    outputs = f"{len(spec.actions)} actions" if spec.actions is not None else f"{len(spec.roles)} roles"
    try:
        head.load_state_dict(load_file(str(weights_path)))
    except (RuntimeError, KeyError) as e:
        raise GateLoadError(f"gate weights {weights_path} do not fit {path} "
                            f"(dim {spec.features.dim}, hidden {spec.hidden}, {outputs}): {e}") from e
    head.eval()
    return Gate(spec=spec, head=head, source=path)
