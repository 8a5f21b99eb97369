"""Roles: what each agent role is (adapter, system prompt, sampling, reasoning path).

The roles file is the static part; adapters loaded or unloaded at run time are the
dynamic part, kept in Redis by `AdapterStore` and replayed over the file at start, so
a restart serves the same set of roles it served before.
"""

from __future__ import annotations

import enum
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import redis.asyncio as aioredis
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentstack.engine import Adapter

logger = logging.getLogger(__name__)

ROLE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"


class ReasoningPath(str, enum.Enum):
    """`think` reasons before answering, `direct` answers at once. (Per request, `model: auto`
    lets the learned gate choose; a role's own path is fixed.)"""

    THINK = "think"
    DIRECT = "direct"


class SamplingDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)


class RoleSpec(BaseModel):
    """One entry of the roles file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=ROLE_NAME_PATTERN)
    description: str = ""
    adapter: Path | None = None
    system_prompt: str | None = None
    sampling: SamplingDefaults = Field(default_factory=SamplingDefaults)
    reasoning: ReasoningPath = ReasoningPath.DIRECT


class RolesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: list[RoleSpec]

    @field_validator("roles")
    @classmethod
    def _unique_names(cls, roles: list[RoleSpec]) -> list[RoleSpec]:
        names = [r.name for r in roles]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate role names: {duplicates}")
        return roles


class RolesFileError(ValueError):
    """The roles file is missing or invalid."""


def load_roles_file(path: Path) -> list[RoleSpec]:
    """Parse and validate the roles file; adapter paths are resolved against its directory."""
    try:
        raw = yaml.safe_load(path.read_text())
        parsed = RolesFile.model_validate(raw)
    except (OSError, yaml.YAMLError, ValidationError) as e:
        raise RolesFileError(f"invalid roles file {path}: {e}") from e
    resolved = []
    for spec in parsed.roles:
        if spec.adapter is not None and not spec.adapter.is_absolute():
            spec = spec.model_copy(update={"adapter": (path.parent / spec.adapter).resolve()})
        resolved.append(spec)
    return resolved


@dataclass(frozen=True, slots=True)
class Role:
    """A servable role: its spec and, unless it is the base model, its loaded adapter."""

    spec: RoleSpec
    adapter: Adapter | None
    origin: Literal["file", "runtime"]

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, slots=True)
class AdapterChange:
    """A run-time load or unload, as persisted in Redis."""

    name: str
    action: Literal["load", "unload"]
    path: str | None = None

    def to_json(self) -> str:
        return json.dumps({"action": self.action, "path": self.path})

    @classmethod
    def from_json(cls, name: str, raw: str | bytes) -> AdapterChange:
        data = json.loads(raw)
        return cls(name=name, action=data["action"], path=data.get("path"))


class AdapterStore:
    """Run-time adapter changes in one Redis hash: name -> last change (load or unload).

    Every replica on the Redis reads the same hash; a change is also announced on a
    pub/sub channel (the name only: the hash stays the one source of truth), so the
    other replicas apply it within moments instead of at their next start."""

    def __init__(self, client: aioredis.Redis, *, prefix: str) -> None:
        self._client = client
        self._key = f"{prefix}:adapters"
        self.channel = f"{prefix}:adapters:changed"

    async def record(self, change: AdapterChange) -> None:
        await self._client.hset(self._key, change.name, change.to_json())
        await self._client.publish(self.channel, change.name)

    async def get(self, name: str) -> AdapterChange | None:
        raw = await self._client.hget(self._key, name)  # type: ignore[misc]
        return AdapterChange.from_json(name, raw) if raw is not None else None

    async def changes(self) -> list[AdapterChange]:
        raw: dict[bytes, bytes] = await self._client.hgetall(self._key)  # type: ignore[misc]
        changes = []
        for name, value in sorted(raw.items()):
            try:
                changes.append(AdapterChange.from_json(name.decode(), value))
            except (ValueError, KeyError):
                logger.warning("ignoring unreadable adapter record %r", name)
        return changes
