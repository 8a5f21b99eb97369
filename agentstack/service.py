"""The running service: Redis, the engine and the roles, started and stopped together.

The HTTP layer only talks to `Service`; so do the benchmarks that bypass HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from agentstack.auth import current_principal
from agentstack.config import PACKAGE_DATA, Settings
from agentstack.engine import Adapter, AdapterLoadError, Engine
from agentstack.errors import Conflict, InvalidRequest, NotFound
from agentstack.metrics import Metrics
from agentstack.model_prep import prepare
from agentstack.redis_server import EmbeddedRedis
from agentstack.roles import AdapterChange, AdapterStore, Role, RoleSpec, load_roles_file
from cache.adapters import ADAPTER_CONFIG

if TYPE_CHECKING:
    from vllm import SamplingParams
    from vllm.outputs import RequestOutput

    from routers.serving import AutoRouter

logger = logging.getLogger(__name__)

AUTO_MODEL = "auto"
ADAPTER_RESYNC_S = 30.0
"""How often a replica re-reads every stored adapter change, in case it missed an announcement."""
DEFAULT_GATE_DIR = PACKAGE_DATA / "gate"


class UnknownRole(NotFound):
    default_param = "model"

    def __init__(self, name: str, available: list[str]) -> None:
        super().__init__(f"The model `{name}` does not exist. Available: {', '.join(available)}")
        self.name = name
        self.available = available


class PromptTooLong(InvalidRequest):
    """The prompt leaves no room to generate within the engine's context length."""

    default_param = "messages"


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    prompt_tokens: int
    generated_tokens: int


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    checks: dict[str, str]
    degraded: list[str]
    """Features unavailable while a non-essential dependency is down."""


class AdapterRequestError(InvalidRequest):
    """A run-time adapter load the service refuses (bad name or path, already loaded)."""

    default_param = "lora_path"


class RoleInUse(Conflict):
    """Unloading this role would break a part of the service that routes to it."""

    default_param = "lora_name"


@dataclass
class Service:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    engine: Engine | None = None
    roles: dict[str, Role] = field(default_factory=dict)
    redis: aioredis.Redis | None = None
    _embedded_redis: EmbeddedRedis | None = None
    _store: AdapterStore | None = None
    _adapter_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    draining: bool = False
    """Set on SIGTERM: readiness fails and new generation requests are refused while the
    requests in flight finish."""
    on_engine_death: Callable[[], None] | None = None
    """Called once when the engine dies; the server uses it to exit non-zero."""
    engine_died: bool = False
    _watchdog: asyncio.Task[None] | None = None
    _adapter_follower: asyncio.Task[None] | None = None
    gate_dir: Path | None = DEFAULT_GATE_DIR
    """The learned gate behind `model: auto`; no gate file there leaves `auto` off, a bad
    one stops the start with `GateLoadError`."""
    router: AutoRouter | None = None

    @property
    def base_name(self) -> str:
        return self.settings.served_model_name

    def model_dir(self) -> Path:
        if self.settings.model is not None:
            return self.settings.model
        return prepare(self.settings.models_dir).path

    async def start(self) -> None:
        await self._load_router()
        settings = self.settings
        redis_url = settings.redis_url
        if redis_url is None:
            self._embedded_redis = EmbeddedRedis(settings.redis_dir).start()
            redis_url = self._embedded_redis.url
        # Pooled connections go stale when Redis restarts: retry once on a fresh one, so
        # the first request after an outage does not fail on a dead socket.
        self.redis = aioredis.Redis.from_url(redis_url, retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2))
        await self.redis.ping()
        self._store = AdapterStore(self.redis, prefix=settings.redis_prefix)

        self.engine = Engine(settings, self.model_dir(), on_scheduler_stats=self.metrics.observe_scheduler)
        await asyncio.to_thread(self.engine.start)
        for spec in load_roles_file(settings.roles_file):
            await self._install(spec, origin="file")
        for change in await self._store.changes():
            await self._replay(change)
        if self.router is not None and (missing := self.router.missing_roles(list(self.roles))):
            # A roles file of the user's own may leave out the packaged gate's roles: serve
            # without `auto` and say so, rather than refuse to start.
            logger.warning("model `auto` is off: the gate routes to roles this server does not serve: %s",
                           ", ".join(missing))
            self.router = None
        logger.info("serving roles: %s", ", ".join(self.roles))
        self._watchdog = asyncio.create_task(self._watch_engine(), name="engine-watchdog")
        self._adapter_follower = asyncio.create_task(self._follow_adapter_changes(), name="adapter-follower")

    async def _load_router(self) -> None:
        """Load the gate before anything starts, so a bad gate file fails fast; its top-k
        mixtures need the engine's max LoRA rank to hold k role ranks."""
        if self.gate_dir is None or not (self.gate_dir / "gate.json").exists():
            return
        from routers.serving import AutoRouter

        self.router = await asyncio.to_thread(
            AutoRouter.load, self.gate_dir, self.model_dir(), self.settings.cache_dir / "mixtures")
        needed = self.router.gate.required_lora_rank
        if needed > self.settings.max_lora_rank:
            logger.info("max_lora_rank raised to %d for the gate's top-%d mixtures", needed,
                        self.router.gate.spec.top_k)
            self.settings = self.settings.model_copy(update={"max_lora_rank": needed})

    async def _watch_engine(self, interval_s: float = 0.5) -> None:
        """Poll for engine death, which vLLM reports only to requests that happen to be
        running: readiness must fail and the process must exit even when idle."""
        while self.engine is not None and not self.engine.dead:
            await asyncio.sleep(interval_s)
        if self.engine is None:
            return
        self.engine_died = True
        self.metrics.dependency_up.labels("engine").set(0)
        logger.critical("the engine died; the service cannot serve and exits")
        if self.on_engine_death is not None:
            self.on_engine_death()

    async def stop(self) -> None:
        for task in (self._watchdog, self._adapter_follower):
            if task is not None:
                task.cancel()
        self._watchdog = self._adapter_follower = None
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None
        if self._embedded_redis is not None:
            self._embedded_redis.stop()
            self._embedded_redis = None

    # Roles

    def model_names(self) -> list[str]:
        return [self.base_name, *self.roles]

    def resolve(self, name: str) -> Role:
        """The role serving `name`; the base model is a role with no adapter and no prompt."""
        if name in self.roles:
            return self.roles[name]
        if name == self.base_name:
            return Role(spec=RoleSpec(name=name), adapter=None, origin="file")
        raise UnknownRole(name, self.model_names())

    async def _install(self, spec: RoleSpec, *, origin: str) -> Role:
        """Load the role's adapter first, so a broken one fails before anything changes,
        then replace any role of the same name."""
        assert self.engine is not None
        adapter: Adapter | None = None
        if spec.adapter is not None:
            adapter = self.engine.new_adapter(spec.name, spec.adapter)
            await self.engine.load_adapter(adapter)
        if spec.name in self.roles:
            await self._remove(spec.name)
        if adapter is not None:
            self.metrics.adapter_loaded.labels(spec.name).set(1)
        role = Role(spec=spec, adapter=adapter, origin=origin)  # type: ignore[arg-type]
        self.roles[spec.name] = role
        return role

    def _runtime_spec(self, name: str, path: Path) -> RoleSpec:
        """A run-time load keeps the prompt and sampling of a role it replaces."""
        previous = self.roles.get(name)
        if previous is None:
            return RoleSpec(name=name, adapter=path)
        return previous.spec.model_copy(update={"adapter": path})

    async def _remove(self, name: str) -> None:
        assert self.engine is not None
        role = self.roles.pop(name)
        if role.adapter is not None:
            await self.engine.unload_adapter(role.adapter)
            self.metrics.adapter_loaded.remove(name)

    async def _replay(self, change: AdapterChange) -> None:
        try:
            if change.action == "unload":
                if change.name in self.roles:
                    await self._remove(change.name)
            elif change.path is not None:
                path = self.checked_adapter_path(change.path)
                await self._install(self._runtime_spec(change.name, path), origin="runtime")
        except (AdapterRequestError, AdapterLoadError) as e:
            logger.warning("skipping stored adapter %s: %s", change.name, e)

    def _applied(self, change: AdapterChange) -> bool:
        """Whether this replica already serves the state a stored change describes."""
        role = self.roles.get(change.name)
        if change.action == "unload":
            return role is None or role.adapter is None
        return role is not None and role.adapter is not None and change.path is not None and (
            role.adapter.path == Path(change.path))

    async def _converge(self, names: list[str] | None = None) -> None:
        """Apply the stored changes (of `names`, or all) this replica does not serve yet."""
        assert self._store is not None
        async with self._adapter_lock:
            if names is None:
                changes = await self._store.changes()
            else:
                changes = [c for n in names if (c := await self._store.get(n)) is not None]
            for change in changes:
                if not self._applied(change):
                    logger.info("adapter %s: applying a change made on another replica (%s)",
                                change.name, change.action)
                    await self._replay(change)

    async def _follow_adapter_changes(self, resync_s: float = ADAPTER_RESYNC_S) -> None:
        """Apply other replicas' adapter loads and unloads as they are announced; after a
        Redis outage, and every `resync_s`, catch up from the stored state."""
        assert self.redis is not None and self._store is not None
        paused = False
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._store.channel)
                    await self._converge()
                    if paused:
                        logger.info("following adapter changes again")
                        paused = False
                    loop = asyncio.get_running_loop()
                    resync_at = loop.time() + resync_s
                    while True:
                        message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                           timeout=max(0.0, resync_at - loop.time()))
                        if message is not None:
                            await self._converge([message["data"].decode()])
                        elif loop.time() >= resync_at:
                            await self._converge()
                            resync_at = loop.time() + resync_s
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis away: chat goes on; retry, then resync
                if not paused:
                    logger.warning("following adapter changes paused: %s: %s", type(e).__name__, e)
                    paused = True
                await asyncio.sleep(1.0)

    def checked_adapter_path(self, raw: str) -> Path:
        """Resolve an adapter path and refuse anything outside the adapters root."""
        root = self.settings.resolved_adapters_root
        candidate = Path(raw)
        if not candidate.is_absolute():
            candidate = root / candidate
        resolved = candidate.resolve()
        if not resolved.is_relative_to(root):
            raise AdapterRequestError(f"lora_path must be inside the adapters root ({root})")
        if not (resolved / ADAPTER_CONFIG).is_file():
            raise AdapterRequestError(f"no adapter found at lora_path {raw!r}")
        return resolved

    async def load_adapter(self, name: str, raw_path: str, *, inplace: bool = False) -> Role:
        if name in (self.base_name, AUTO_MODEL):
            raise AdapterRequestError(f"the name {name!r} is reserved")
        path = self.checked_adapter_path(raw_path)
        async with self._adapter_lock:
            if name in self.roles and not inplace:
                raise AdapterRequestError(
                    f"The lora adapter '{name}' has already been loaded. "
                    "Pass load_inplace to replace it."
                )
            assert self._store is not None
            role = await self._install(self._runtime_spec(name, path), origin="runtime")
            await self._store.record(AdapterChange(name=name, action="load", path=str(path)))
            return role

    async def unload_adapter(self, name: str) -> None:
        async with self._adapter_lock:
            role = self.roles.get(name)
            if role is None or role.adapter is None:
                loaded = ", ".join(n for n, r in self.roles.items() if r.adapter)
                raise NotFound(f"The lora adapter '{name}' cannot be found. Loaded: {loaded}", param="lora_name")
            if self.router is not None and name in self.router.gate.spec.roles:
                raise RoleInUse(f"the learned gate (`auto`) routes to `{name}`; it cannot be unloaded "
                                "while the gate is served (it may be replaced with load_inplace)")
            assert self._store is not None
            await self._remove(name)
            await self._store.record(AdapterChange(name=name, action="unload"))

    # Health

    async def readiness(self) -> Readiness:
        """The engine decides readiness; Redis only degrades it: chat needs no Redis, while
        graph runs and run-time adapter changes wait for it (see `degraded`)."""
        checks: dict[str, str] = {}
        try:
            assert self.engine is not None
            await asyncio.wait_for(self.engine.check_health(), timeout=5)
            checks["engine"] = "ok"
        except Exception as e:  # readiness reports, it does not raise
            checks["engine"] = f"error: {type(e).__name__}"
        try:
            assert self.redis is not None
            await asyncio.wait_for(self.redis.ping(), timeout=2)
            checks["redis"] = "ok"
        except Exception as e:
            checks["redis"] = f"error: {type(e).__name__}"
        for name, state in checks.items():
            self.metrics.dependency_up.labels(name).set(1 if state == "ok" else 0)
        if self.draining:
            checks["server"] = "draining"
        ready = checks["engine"] == "ok" and not self.draining
        degraded = ["graph runs", "run-time adapter changes"] if checks["redis"] != "ok" else []
        return Readiness(ready=ready, checks=checks, degraded=degraded)

    # Generation

    async def stream(
        self, role: Role, prompt_ids: list[int], sampling: SamplingParams, *, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        """Run one engine request under the caller's cache salt, recording latency, token and
        prefix-cache metrics by role (and cache use by tenant)."""
        assert self.engine is not None
        principal = current_principal.get()
        started = time.perf_counter()
        first = True
        last: RequestOutput | None = None
        finished = False
        try:
            async for output in self.engine.generate(
                prompt_ids, sampling, request_id=request_id, adapter=role.adapter,
                cache_salt=principal.cache_salt,
            ):
                if first and output.outputs and output.outputs[0].token_ids:
                    self.metrics.time_to_first_token.labels(role.name).observe(time.perf_counter() - started)
                    first = False
                last = output
                yield output
            finished = True
        finally:
            if last is not None:
                self.metrics.prompt_tokens.labels(role.name).inc(len(prompt_ids))
                self.metrics.generation_tokens.labels(role.name).inc(len(last.outputs[0].token_ids))
                self.metrics.prefix_cache_queries.labels(role.name).inc(len(prompt_ids))
                self.metrics.prefix_cache_hits.labels(role.name).inc(last.num_cached_tokens or 0)
                self.metrics.tenant_prefix_cache_queries.labels(principal.metric_label).inc(len(prompt_ids))
                self.metrics.tenant_prefix_cache_hits.labels(principal.metric_label).inc(last.num_cached_tokens or 0)
            if finished:
                self.metrics.e2e_latency.labels(role.name).observe(time.perf_counter() - started)
            else:
                self.metrics.requests_aborted.labels(role.name).inc()

    async def complete(self, role: str, messages: list[dict[str, str]], max_tokens: int,
                       *, json_schema: dict[str, Any] | None = None, grammar: str | None = None) -> Completion:
        """Greedy completion of exactly these messages by a role (no role system prompt added),
        for in-process workflows and evaluations; `json_schema` or `grammar` (xgrammar EBNF)
        constrains the reply."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        assert self.engine is not None
        resolved = self.resolve(role)
        prompt_ids = self.engine.chat_prompt(messages)
        room = self.settings.max_model_len - len(prompt_ids)
        if room <= 0:
            raise PromptTooLong(f"{len(prompt_ids)} prompt tokens, context is {self.settings.max_model_len}")
        constraint = (StructuredOutputsParams(json=json_schema) if json_schema
                      else StructuredOutputsParams(grammar=grammar) if grammar else None)
        params = SamplingParams(temperature=0.0, max_tokens=min(max_tokens, room), structured_outputs=constraint)
        final: RequestOutput | None = None
        async for output in self.stream(resolved, prompt_ids, params, request_id=f"{role}-{uuid.uuid4().hex}"):
            final = output
        assert final is not None
        return Completion(final.outputs[0].text, len(prompt_ids), len(final.outputs[0].token_ids))
