"""A run's events in a Redis stream, so that every replica can replay and follow them.

The replica running a run appends; the request that started it, `join`, `join_stream`
with `Last-Event-ID` and `wait` read it, on any replica. Event `n` is stream entry
`0-(n+1)`: Redis numbers entries appended as `0-*` one by one, which keeps the LangGraph
API's integer event ids without a counter in the writer, so the replica that settles a
dead replica's run can append its `error` and `end` after whatever was there.

Every run's log ends with `end`. Readers stop there; an ended log expires after the
retention, and a reader of a finished run whose log expired gets `end` alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agentstack.workflows.serde import dumps

END = "end"
READ_BATCH = 256


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    name: str
    data: str


def _event(entry_id: bytes, fields: dict[bytes, bytes]) -> Event:
    return Event(int(entry_id.split(b"-")[1]) - 1, fields[b"event"].decode(), fields[b"data"].decode())


class RunLog:
    """One run's stream: append, end, replay and follow."""

    def __init__(self, client: aioredis.Redis, key: str, *, retention_s: float, poll_s: float = 1.0) -> None:
        self._client = client
        self.key = key
        self._retention_ms = int(retention_s * 1000)
        self._poll_ms = int(poll_s * 1000)

    async def emit(self, name: str, data: Any) -> None:
        await self._client.xadd(self.key, {"event": name, "data": dumps(data)}, id="0-*")

    async def end(self, data: Any, *, before: Sequence[tuple[str, Any]] = ()) -> None:
        """Append `before` and `end` in one step, then start the retention."""
        async with self._client.pipeline(transaction=True) as pipe:
            for name, part in [*before, (END, data)]:
                pipe.xadd(self.key, {"event": name, "data": dumps(part)}, id="0-*")
            pipe.pexpire(self.key, self._retention_ms)
            await pipe.execute()

    async def wait_end(self, *, ended: Callable[[], Awaitable[dict[str, Any] | None]]) -> None:
        """Return once the run ended, reading only what comes after the latest event."""
        latest = await self._client.xrevrange(self.key, count=1)
        after = -1
        if latest:
            event = _event(*latest[0])
            if event.name == END:
                return
            after = event.id
        async for _ in self.follow(after, ended=ended):
            pass

    async def follow(self, after: int = -1, *,
                     ended: Callable[[], Awaitable[dict[str, Any] | None]]) -> AsyncIterator[Event]:
        """Every event after id `after`, then the live ones, through `end`.

        `ended` is asked when no event came for a poll: it returns the `end` data of a
        run that finished (its log expired, or was never ended) or None for a run still
        going or to come (queued, not yet started)."""
        last = f"0-{after + 1}"
        idle_and_finished = 0
        while True:
            try:
                reply = await self._client.xread({self.key: last}, count=READ_BATCH, block=self._poll_ms)
            except (RedisConnectionError, RedisTimeoutError):
                await asyncio.sleep(self._poll_ms / 1000)  # Redis away: the run's readers wait, not fail
                continue
            if not reply:
                data = await ended()
                idle_and_finished = idle_and_finished + 1 if data is not None else 0
                # A finished run whose log lacks `end` (its writer died between recording the
                # outcome and ending the log) ends after a second quiet poll.
                if data is not None and (idle_and_finished > 1 or not await self._client.exists(self.key)):
                    yield Event(after + 1, END, dumps(data))
                    return
                continue
            for entry_id, fields in reply[0][1]:
                event = _event(entry_id, fields)
                yield event
                if event.name == END:
                    return
                last = entry_id.decode()
                after = event.id
