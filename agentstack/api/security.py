"""Who is calling and what they may do, as FastAPI security dependencies.

Every route but the public ones (health, readiness, metrics, the API's own docs) depends
on `caller`: the API key from `Authorization: Bearer` or `x-api-key` (both declared in
the OpenAPI document, so outside tools can test auth) becomes the request's `Principal`
— its roles, graphs, admin right and cache salt — or a 401. The admin routes add
`require_admin`; the generation routes check the model they name (`check_model`) and
hold a `generation_slot` while they run: per-key concurrency with a bounded queue, a full
queue answered 429 with `Retry-After`, and 503 while the server drains.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from agentstack.auth import ANONYMOUS, KeyRing, Principal, current_principal
from agentstack.errors import Forbidden, RateLimited, ServiceUnavailable, Unauthenticated

_bearer = HTTPBearer(auto_error=False, description="An API key, as `Authorization: Bearer <key>`.")
_api_key = APIKeyHeader(name="x-api-key", auto_error=False, description="An API key, as `x-api-key: <key>`.")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def caller(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    api_key: Annotated[str | None, Security(_api_key)],
) -> Principal:
    """The request's principal, also set as `current_principal` for the code it calls
    (cache salt, thread owner) and the tasks it starts (graph runs)."""
    keyring: KeyRing = request.app.state.keyring
    if not keyring.enabled:
        principal = ANONYMOUS
    else:
        key = (bearer.credentials.strip() if bearer else "") or (api_key or "").strip()
        if not key:
            raise Unauthenticated("Missing API key: send it as `Authorization: Bearer <key>` (or `x-api-key`).",
                                  headers=_CHALLENGE)
        found = keyring.authenticate(key)
        if found is None:
            raise Unauthenticated("Incorrect API key provided.", headers=_CHALLENGE)
        principal = found
    current_principal.set(principal)
    return principal


Caller = Annotated[Principal, Depends(caller)]


def require_admin(principal: Caller) -> Principal:
    if not principal.admin:
        raise Forbidden("this API key may not load or unload adapters")
    return principal


def check_model(principal: Principal, model: str) -> None:
    """A key limited to some roles may call only those (`auto` routes among them)."""
    if not principal.may_use_role(model):
        raise Forbidden(f"this API key may not use the model `{model}`", param="model")


@dataclass
class _Lane:
    """One key's share of the engine: a slot semaphore, its queue length and a duration estimate."""

    slots: asyncio.Semaphore
    waiting: int = 0
    mean_duration_s: float = 1.0


@dataclass
class Admission:
    """Per-key concurrency with a bounded queue. A full queue answers 429 at once, with a
    Retry-After from the key's recent request durations, rather than piling up work the
    engine cannot reach before the client's own timeout."""

    max_concurrency: int
    max_queue: int
    _lanes: dict[str, _Lane] = field(default_factory=dict)

    def _lane(self, key: str) -> _Lane:
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(asyncio.Semaphore(self.max_concurrency))
        return lane

    def retry_after_s(self, key: str) -> int:
        lane = self._lane(key)
        rounds = (lane.waiting + 1) / self.max_concurrency
        return max(1, math.ceil(lane.mean_duration_s * rounds))

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        lane = self._lane(key)
        if lane.slots.locked() and lane.waiting >= self.max_queue:
            raise RateLimited(f"too many concurrent requests for this API key (limit {self.max_concurrency}, "
                              f"queue {self.max_queue}); retry later",
                              headers={"Retry-After": str(self.retry_after_s(key))})
        lane.waiting += 1
        try:
            await lane.slots.acquire()
        finally:
            lane.waiting -= 1
        started = time.monotonic()
        try:
            yield
        finally:
            lane.slots.release()
            lane.mean_duration_s = 0.8 * lane.mean_duration_s + 0.2 * (time.monotonic() - started)

    def waiting(self) -> int:
        return sum(lane.waiting for lane in self._lanes.values())


async def generation_slot(request: Request, principal: Caller) -> AsyncIterator[None]:
    """Held until the response is sent (a stream's last byte included)."""
    service = request.app.state.service
    if service.draining:
        raise ServiceUnavailable("the server is shutting down; retry on another replica",
                                 headers={"Retry-After": "1"})
    admission: Admission = request.app.state.admission
    async with admission.slot(principal.name):
        yield


GenerationSlot = Depends(generation_slot)
