"""Replicas on one Redis, without an engine: run logs any replica can follow, thread locks
and queues, leases, and the settling of a dead replica's runs."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from agentstack.redis_server import EmbeddedRedis
from agentstack.workflows.ownership import Ownership
from agentstack.workflows.recovery import settle_lost_runs
from agentstack.workflows.run_log import RunLog
from agentstack.workflows.store import RunRecord, ThreadRecord, WorkflowStore

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def client(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_server.url)
    yield redis
    await redis.aclose()


@pytest.fixture
def prefix() -> str:
    return f"coordination-{uuid.uuid4().hex[:8]}"


async def never_ended() -> None:
    return None


async def test_a_run_log_replays_then_follows_and_resumes_after_an_event_id(client: aioredis.Redis) -> None:
    writer = RunLog(client, f"log-{uuid.uuid4()}", retention_s=60, poll_s=0.1)
    reader = RunLog(client, writer.key, retention_s=60, poll_s=0.1)  # another replica's view
    await writer.emit("metadata", {"run_id": "r"})

    async def read(after: int) -> list[tuple[int, str]]:
        return [(e.id, e.name) async for e in reader.follow(after, ended=never_ended)]

    from_start = asyncio.ensure_future(read(-1))
    resumed = asyncio.ensure_future(read(1))
    await asyncio.sleep(0.2)
    await writer.emit("values", {"a": 1})
    await writer.emit("values", {"a": 2})
    await writer.end({"run_id": "r", "status": "success"})
    assert await from_start == [(0, "metadata"), (1, "values"), (2, "values"), (3, "end")]
    assert await resumed == [(2, "values"), (3, "end")]
    await reader.wait_end(ended=never_ended)  # returns at once: the log ended
    assert 0 < await client.pttl(writer.key) <= 60_000


async def test_a_finished_run_whose_log_expired_still_ends_its_readers(client: aioredis.Redis) -> None:
    log = RunLog(client, f"log-{uuid.uuid4()}", retention_s=0.2, poll_s=0.1)
    await log.emit("metadata", {})
    await log.end({"status": "success"})
    await asyncio.sleep(0.4)
    assert not await client.exists(log.key)

    async def ended() -> dict[str, str]:
        return {"status": "success"}

    events = [e async for e in log.follow(-1, ended=ended)]
    assert [(e.name, json.loads(e.data)) for e in events] == [("end", {"status": "success"})]


async def test_a_log_its_writer_never_ended_still_ends_once_the_run_is_recorded_finished(
        client: aioredis.Redis) -> None:
    log = RunLog(client, f"log-{uuid.uuid4()}", retention_s=60, poll_s=0.1)
    await log.emit("metadata", {})
    finished: dict[str, str] | None = None

    async def ended() -> dict[str, str] | None:
        return finished

    reader = asyncio.ensure_future(log.wait_end(ended=ended))
    await asyncio.sleep(0.5)
    assert not reader.done(), "a run still going must keep its readers"
    finished = {"status": "error"}
    await asyncio.wait_for(reader, 2)


async def test_a_thread_runs_one_run_at_a_time_and_queued_runs_in_order(client: aioredis.Redis, prefix: str) -> None:
    one = Ownership(client, prefix=prefix, replica="one", lease_s=30)
    two = Ownership(client, prefix=prefix, replica="two", lease_s=30)
    for owner, run_id in ((one, "r1"), (two, "r2"), (one, "r3")):
        await owner.lease(run_id)
    assert await one.acquire("t", "r1")
    assert not await two.acquire("t", "r2")
    await two.enqueue("t", "r2")
    await one.enqueue("t", "r3")
    assert await two.thread_runs("t") == ["r1", "r2", "r3"]
    await one.release("r1", "t")
    assert not await one.acquire("t", "r3"), "a later run jumped the queue"
    assert not await one.acquire("t", "r-new"), "a new run took a thread with runs waiting"
    assert await two.acquire("t", "r2")
    await two.release("r2", "t")
    assert await one.acquire("t", "r3")
    await one.release("r3", "t")
    assert await one.thread_runs("t") == []


async def test_a_queued_run_whose_replica_died_unrecorded_does_not_block_the_thread(
        client: aioredis.Redis, prefix: str) -> None:
    one = Ownership(client, prefix=prefix, replica="one", lease_s=30)
    await one.enqueue("t", "never-leased")
    await one.lease("next")
    await one.enqueue("t", "next")
    assert await one.acquire("t", "next")
    assert await one.thread_runs("t") == ["next"]


async def test_a_lease_another_replica_took_is_reported_lost(client: aioredis.Redis, prefix: str) -> None:
    one = Ownership(client, prefix=prefix, replica="one", lease_s=0.3)
    other = Ownership(client, prefix=prefix, replica="other", lease_s=30)
    await one.lease("kept")
    await one.lease("lapsed")
    assert await one.acquire("t", "kept")
    assert await one.renew({"kept": "t", "lapsed": None}) == set()
    await asyncio.sleep(0.5)
    assert await one.leased(["kept", "lapsed"]) == [False, False]
    await one.lease("kept")
    assert await one.acquire("t", "kept")
    assert await other.claim_lost("lapsed")
    assert await one.renew({"kept": "t", "lapsed": None}) == {"lapsed"}
    assert await one.leased(["kept"]) == [True]


async def test_a_dead_replicas_runs_are_settled_once_their_lease_lapses(client: aioredis.Redis, prefix: str) -> None:
    store = WorkflowStore(client, prefix=prefix)
    dead = Ownership(client, prefix=prefix, replica="dead", lease_s=0.5)
    alive = Ownership(client, prefix=prefix, replica="alive", lease_s=30)

    def log_of(run_id: str) -> RunLog:
        return RunLog(client, store.events_key(run_id), retention_s=60, poll_s=0.1)

    await store.put_thread(ThreadRecord(thread_id="t", status="busy"), created=True)
    for run_id, queued in (("r1", False), ("r2", True)):
        await dead.lease(run_id)
        if queued:
            await dead.enqueue("t", run_id)
        else:
            assert await dead.acquire("t", run_id)
        await store.put_run(RunRecord(run_id=run_id, thread_id="t", assistant_id="a",
                                      status="pending" if queued else "running"), created=True)
    await log_of("r1").emit("metadata", {"run_id": "r1"})
    await alive.lease("live")
    await store.put_run(RunRecord(run_id="live", thread_id="other", assistant_id="a", status="running"), created=True)

    assert await settle_lost_runs(store, alive, log_of) == [], "settled runs whose replica is alive"
    await asyncio.sleep(0.7)
    assert sorted(await settle_lost_runs(store, alive, log_of)) == ["r1", "r2"]
    for run_id in ("r1", "r2"):
        run = await store.get_run(run_id)
        assert run is not None and run.status == "error" and run.error is not None
        assert run.error["error"] == "RunLost"
    names = [e.name async for e in log_of("r1").follow(-1, ended=never_ended)]
    assert names == ["metadata", "error", "end"]
    assert (await store.get_thread("t")).status == "idle"  # type: ignore[union-attr]
    assert await alive.thread_runs("t") == [] and await alive.acquire("t", "next")
    assert await settle_lost_runs(store, alive, log_of) == []
    live = await store.get_run("live")
    assert live is not None and live.status == "running"
