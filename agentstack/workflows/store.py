"""Thread and run records in Redis, beside the checkpoints LangGraph's Redis saver keeps.

Checkpoints hold a thread's state; these records hold what the LangGraph API shows
about threads and runs (metadata, status, timestamps). Keys, under the service prefix:

    <p>:lg:thread:<id>        JSON thread record
    <p>:lg:threads            zset of thread ids by creation time
    <p>:lg:run:<id>           JSON run record
    <p>:lg:thread_runs:<tid>  zset of a thread's run ids by creation time
    <p>:lg:active_runs        set of runs pending or running
    <p>:lg:events:<id>        a run's event stream (`run_log`)
    <p>:lg:result:<id>        what `wait` and `join` return for a finished run

Each record is one key written whole, so a reader never sees half an update. Which
replica runs an active run is `ownership`'s business; a run whose owner is gone is
settled through `settle_lost`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

import redis.asyncio as aioredis

from agentstack.workflows.serde import dumps

ThreadStatus = Literal["idle", "busy", "interrupted", "error"]
RunStatus = Literal["pending", "running", "error", "success", "timeout", "interrupted"]
FINISHED: frozenset[str] = frozenset({"error", "success", "timeout", "interrupted"})


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass(slots=True)
class ThreadRecord:
    thread_id: str
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    metadata: dict[str, Any] = field(default_factory=dict)
    status: ThreadStatus = "idle"
    values: Any = None
    interrupts: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def graph_id(self) -> str | None:
        value = self.metadata.get("graph_id")
        return str(value) if value is not None else None

    def as_api(self) -> dict[str, Any]:
        return {**asdict(self), "values": self.values if self.values is not None else {}}


@dataclass(slots=True)
class RunRecord:
    run_id: str
    thread_id: str
    assistant_id: str
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    status: RunStatus = "pending"
    metadata: dict[str, Any] = field(default_factory=dict)
    multitask_strategy: str = "reject"
    error: dict[str, str] | None = None

    def as_api(self) -> dict[str, Any]:
        return asdict(self)


class WorkflowStore:
    """Reads and writes the records; filtering happens here in Python, which suits the
    thread counts of one service (hundreds to a few thousands)."""

    def __init__(self, client: aioredis.Redis, *, prefix: str) -> None:
        self._client = client
        self._prefix = f"{prefix}:lg"

    def _thread_key(self, thread_id: str) -> str:
        return f"{self._prefix}:thread:{thread_id}"

    def _run_key(self, run_id: str) -> str:
        return f"{self._prefix}:run:{run_id}"

    def _thread_runs_key(self, thread_id: str) -> str:
        return f"{self._prefix}:thread_runs:{thread_id}"

    @property
    def _threads_key(self) -> str:
        return f"{self._prefix}:threads"

    def events_key(self, run_id: str) -> str:
        return f"{self._prefix}:events:{run_id}"

    def _result_key(self, run_id: str) -> str:
        return f"{self._prefix}:result:{run_id}"

    def _run_keys(self, run_id: str) -> list[str]:
        return [self._run_key(run_id), self.events_key(run_id), self._result_key(run_id)]

    @property
    def _active_key(self) -> str:
        return f"{self._prefix}:active_runs"

    # Threads

    async def put_thread(self, record: ThreadRecord, *, created: bool = False) -> None:
        record.updated_at = now_iso()
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(self._thread_key(record.thread_id), dumps(asdict(record)))
            if created:
                pipe.zadd(self._threads_key, {record.thread_id: time.time()})
            await pipe.execute()

    async def get_thread(self, thread_id: str) -> ThreadRecord | None:
        raw = await self._client.get(self._thread_key(thread_id))
        return ThreadRecord(**json.loads(raw)) if raw else None

    async def threads(self) -> list[ThreadRecord]:
        ids = [i.decode() for i in await self._client.zrange(self._threads_key, 0, -1)]
        if not ids:
            return []
        raws = await self._client.mget([self._thread_key(i) for i in ids])
        return [ThreadRecord(**json.loads(raw)) for raw in raws if raw]

    async def delete_thread(self, thread_id: str, *, runs_retention_s: float | None = None) -> None:
        """Delete a thread and its runs; with `runs_retention_s` its runs' records, logs and
        results expire after that instead (a stateless run's caller is still reading them)."""
        run_ids = [r.decode() for r in await self._client.zrange(self._thread_runs_key(thread_id), 0, -1)]
        run_keys = [key for r in run_ids for key in self._run_keys(r)]
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(self._thread_key(thread_id), self._thread_runs_key(thread_id))
            for key in run_keys:
                if runs_retention_s is None:
                    pipe.delete(key)
                else:
                    pipe.pexpire(key, int(runs_retention_s * 1000))
            pipe.zrem(self._threads_key, thread_id)
            if run_ids:
                pipe.srem(self._active_key, *run_ids)
            await pipe.execute()

    # Runs

    async def put_run(self, record: RunRecord, *, created: bool = False) -> None:
        record.updated_at = now_iso()
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(self._run_key(record.run_id), dumps(asdict(record)))
            if created:
                pipe.zadd(self._thread_runs_key(record.thread_id), {record.run_id: time.time()})
            if record.status in FINISHED:
                pipe.srem(self._active_key, record.run_id)
            else:
                pipe.sadd(self._active_key, record.run_id)
            await pipe.execute()

    async def get_run(self, run_id: str) -> RunRecord | None:
        raw = await self._client.get(self._run_key(run_id))
        return RunRecord(**json.loads(raw)) if raw else None

    async def thread_runs(self, thread_id: str) -> list[RunRecord]:
        ids = [i.decode() for i in await self._client.zrevrange(self._thread_runs_key(thread_id), 0, -1)]
        if not ids:
            return []
        raws = await self._client.mget([self._run_key(i) for i in ids])
        return [RunRecord(**json.loads(raw)) for raw in raws if raw]

    async def delete_run(self, record: RunRecord) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(*self._run_keys(record.run_id))
            pipe.zrem(self._thread_runs_key(record.thread_id), record.run_id)
            pipe.srem(self._active_key, record.run_id)
            await pipe.execute()

    async def active_run_ids(self) -> list[str]:
        return [i.decode() for i in await self._client.smembers(self._active_key)]  # type: ignore[misc]

    async def forget_active(self, run_id: str) -> None:
        await self._client.srem(self._active_key, run_id)  # type: ignore[misc]

    async def put_result(self, run_id: str, result: Any, *, retention_s: float) -> None:
        await self._client.set(self._result_key(run_id), dumps(result), px=int(retention_s * 1000))

    async def get_result(self, run_id: str) -> tuple[bool, Any]:
        """(found, value): a result expires with its run's event log."""
        raw = await self._client.get(self._result_key(run_id))
        return (True, json.loads(raw)) if raw is not None else (False, None)
