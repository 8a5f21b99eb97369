"""API keys: who may call the service, which roles and graphs each key may use, and
the tenant identity (cache salt, thread owner) each request runs under.

Keys are kept only as SHA-256 digests: a key file may hold plain keys (one per line,
the shape the Helm chart mounts from a Kubernetes Secret) or digests (`sha256:<hex>`),
or be a YAML document giving each key a name and its allowed roles and graphs:

    keys:
      - name: team-a
        sha256: 9f86d08...        # or `key: sk-...`
        roles: [selector, arguments]
        graphs: [tool_agent]
        admin: false              # run-time adapter loading

The caller of the current request is a context variable, set once by the API's
authentication dependency (`agentstack.api.security`); outside a request it is `NOBODY`:
the engine call (cache salt) and the workflow layer (thread owner) read it without
every signature in between carrying it, and tasks a request starts inherit it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentstack.config import Settings

logger = logging.getLogger(__name__)

SHA256_PREFIX = "sha256:"


class AuthConfigError(ValueError):
    """The key configuration is unusable, or keys are required and none are configured."""


def digest_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def tenant_label(name: str) -> str:
    """A key name's label in the per-tenant metrics: `t-` and 12 hex digits of its digest."""
    return "t-" + digest_of("agentstack-tenant\x00" + name)[:12]


@dataclass(frozen=True, slots=True)
class Principal:
    """One caller: an API key, or the single anonymous tenant when auth is off."""

    name: str
    roles: frozenset[str] | None = None
    """Roles (served model names) the key may use; None allows all."""
    graphs: frozenset[str] | None = None
    """Graph ids the key may run; None allows all."""
    admin: bool = False
    cache_salt: str | None = None
    """Mixed into every prefix-cache block hash (vLLM's `cache_salt`): different keys never
    share cached KV, so the cache cannot leak one tenant's prompts to another by timing."""

    @property
    def metric_label(self) -> str:
        """The tenant as `/metrics` names it: an opaque digest of the key's name, since the
        metrics route is public (operators map it back with `tenant_label`)."""
        return tenant_label(self.name)

    def may_use_role(self, role: str) -> bool:
        return self.roles is None or role in self.roles

    def may_use_graph(self, graph_id: str) -> bool:
        return self.graphs is None or graph_id in self.graphs


ANONYMOUS = Principal(name="anonymous", admin=True)
"""The one tenant of a server without keys (loopback only): every right."""

NOBODY = Principal(name="nobody", roles=frozenset(), graphs=frozenset(), admin=False)
"""Whoever runs outside a request the API authenticated: no rights, so a code path that
forgets to authenticate fails closed."""

current_principal: ContextVar[Principal] = ContextVar("agentstack_principal", default=NOBODY)


class KeyEntry(BaseModel):
    """One key of a YAML key file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    key: str | None = Field(default=None, min_length=8)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    roles: list[str] | None = None
    graphs: list[str] | None = None
    admin: bool = False

    @model_validator(mode="after")
    def _one_secret(self) -> KeyEntry:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError("give exactly one of `key` and `sha256`")
        return self

    @property
    def digest(self) -> str:
        return self.sha256 if self.sha256 is not None else digest_of(self.key or "")


class KeyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[KeyEntry]


def _plain_entry(line: str) -> KeyEntry:
    """A full-access key from a plain line: the key itself, or `sha256:<hex>`."""
    digest = line[len(SHA256_PREFIX):].lower() if line.startswith(SHA256_PREFIX) else digest_of(line)
    return KeyEntry(name=f"key-{digest[:8]}", sha256=digest, admin=True)


def parse_key_file(text: str) -> list[KeyEntry]:
    """YAML with a `keys:` list, or else plain lines (blank lines and `#` comments skipped)."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        document = None
    if isinstance(document, dict) and "keys" in document:
        try:
            return KeyFile.model_validate(document).keys
        except ValidationError as e:
            raise AuthConfigError(f"invalid API key file: {e.errors()[0]['msg']}") from None
    lines = (line.strip() for line in text.splitlines())
    return [_plain_entry(line) for line in lines if line and not line.startswith("#")]


def _salt(digest: str) -> str:
    return hashlib.sha256(b"agentstack-cache-salt\x00" + bytes.fromhex(digest)).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The configured keys by digest; `enabled` is False only when auth is off."""

    by_digest: dict[str, Principal]
    enabled: bool

    @classmethod
    def from_entries(cls, entries: Iterable[KeyEntry], *, enabled: bool) -> KeyRing:
        by_digest: dict[str, Principal] = {}
        names: set[str] = set()
        for entry in entries:
            if entry.name in names:
                raise AuthConfigError(f"API key name {entry.name!r} is used twice")
            names.add(entry.name)
            by_digest[entry.digest] = Principal(
                name=entry.name,
                roles=frozenset(entry.roles) if entry.roles is not None else None,
                graphs=frozenset(entry.graphs) if entry.graphs is not None else None,
                admin=entry.admin,
                cache_salt=_salt(entry.digest),
            )
        return cls(by_digest=by_digest, enabled=enabled)

    def authenticate(self, key: str) -> Principal | None:
        return self.by_digest.get(digest_of(key))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_keyring(settings: Settings) -> KeyRing:
    """Keys from `api_keys` and `api_keys_file`. Auth is on whenever keys exist; with none,
    it is off only on a loopback bind (or when `auth_required` is set false explicitly)."""
    plain = (k.get_secret_value().strip() for k in settings.api_keys)
    entries = [_plain_entry(k) for k in plain if k]
    if settings.api_keys_file is not None:
        try:
            text = settings.api_keys_file.read_text()
        except OSError as e:
            raise AuthConfigError(f"cannot read API key file {settings.api_keys_file}: {e.strerror}") from None
        entries += parse_key_file(text)
    if settings.auth_required is False:
        logger.warning("API keys are OFF (auth_required=false): every caller has full access")
        return KeyRing.from_entries([], enabled=False)
    if entries:
        logger.info("API keys are on: %d key(s): %s", len(entries), ", ".join(e.name for e in entries))
        return KeyRing.from_entries(entries, enabled=True)
    if settings.auth_required is None and _is_loopback(settings.host):
        logger.warning("API keys are OFF: no keys configured and the server listens on loopback (%s) only",
                       settings.host)
        return KeyRing.from_entries([], enabled=False)
    raise AuthConfigError(
        f"no API keys configured while serving on {settings.host}: set AGENTSTACK_API_KEYS_FILE or "
        "AGENTSTACK_API_KEYS, or AGENTSTACK_AUTH_REQUIRED=false to serve without keys"
    )
