"""Which replica runs what, and which run a thread is busy with, kept in Redis so that
replicas on one Redis never run one thread twice and never lose a dead replica's runs.

    <p>:lg:lease:<run_id>     the replica running (or about to run) the run; expires
    <p>:lg:lock:<thread_id>   the run the thread is busy with; expires
    <p>:lg:queue:<thread_id>  runs enqueued on the thread, first in line first
    <p>:lg:cancel             channel: run ids to cancel, for whichever replica runs them

Leases and locks expire unless their replica renews them, so a replica that died (or
lost Redis for longer than a lease) leaves keys that vanish on their own; its runs
are then settled by whichever replica notices first (`claim_lost`).
"""

from __future__ import annotations

from collections.abc import Iterable

import redis.asyncio as aioredis

# Take the lock if the thread's queue is empty or names this run first. Queued runs
# without a lease (their replica died before recording them) are dropped from the head.
_ACQUIRE = """
local head = redis.call('LINDEX', KEYS[2], 0)
while head and head ~= ARGV[1] and redis.call('EXISTS', ARGV[3] .. head) == 0 do
  redis.call('LPOP', KEYS[2])
  head = redis.call('LINDEX', KEYS[2], 0)
end
if head and head ~= ARGV[1] then return 0 end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
if head then redis.call('LPOP', KEYS[2]) end
return 1
"""

# Extend each key still holding its expected value; return the positions of the others.
_RENEW = """
local lost = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i] then
    redis.call('PEXPIRE', key, ARGV[#KEYS + 1])
  else
    table.insert(lost, i - 1)
  end
end
return lost
"""

# Delete each key still holding its expected value.
_RELEASE = """
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i] then redis.call('DEL', key) end
end
return 0
"""


class Ownership:
    def __init__(self, client: aioredis.Redis, *, prefix: str, replica: str, lease_s: float) -> None:
        self._client = client
        self._prefix = f"{prefix}:lg"
        self.replica = replica
        self.lease_ms = max(1, int(lease_s * 1000))
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def _lease_key(self, run_id: str) -> str:
        return f"{self._prefix}:lease:{run_id}"

    def _lock_key(self, thread_id: str) -> str:
        return f"{self._prefix}:lock:{thread_id}"

    def _queue_key(self, thread_id: str) -> str:
        return f"{self._prefix}:queue:{thread_id}"

    @property
    def cancel_channel(self) -> str:
        return f"{self._prefix}:cancel"

    # Runs

    async def lease(self, run_id: str) -> None:
        """Own a run; done before the run is recorded as active, so no sweep finds it unowned."""
        await self._client.set(self._lease_key(run_id), self.replica, px=self.lease_ms)

    async def claim_lost(self, run_id: str) -> bool:
        """Take over an active run whose lease expired, to settle it; one replica wins."""
        return bool(await self._client.set(self._lease_key(run_id), f"settling:{self.replica}",
                                           nx=True, px=self.lease_ms))

    async def drop_claim(self, run_id: str) -> None:
        await self._release(keys=[self._lease_key(run_id)], args=[f"settling:{self.replica}"])

    async def renew(self, runs: dict[str, str | None]) -> set[str]:
        """Extend the leases of `runs` (run id -> the thread it holds locked, if any);
        return the runs whose lease or lock another replica took or let lapse."""
        keys, expected, owners = [], [], []
        for run_id, thread_id in runs.items():
            keys.append(self._lease_key(run_id))
            expected.append(self.replica)
            owners.append(run_id)
            if thread_id is not None:
                keys.append(self._lock_key(thread_id))
                expected.append(run_id)
                owners.append(run_id)
        if not keys:
            return set()
        lost = await self._renew(keys=keys, args=[*expected, self.lease_ms])
        return {owners[int(i)] for i in lost}

    async def release(self, run_id: str, thread_id: str | None) -> None:
        """Give up a run's lease and, if it holds it, its thread's lock; leave its queue place."""
        keys, expected = [self._lease_key(run_id)], [self.replica]
        if thread_id is not None:
            keys.append(self._lock_key(thread_id))
            expected.append(run_id)
        await self._release(keys=keys, args=expected)
        if thread_id is not None:
            await self._client.lrem(self._queue_key(thread_id), 0, run_id)  # type: ignore[misc]

    async def release_lost(self, run_id: str, thread_id: str) -> None:
        """What a settled run held on its thread: the lock if it still has it, its queue place."""
        await self._release(keys=[self._lock_key(thread_id)], args=[run_id])
        await self._client.lrem(self._queue_key(thread_id), 0, run_id)  # type: ignore[misc]

    async def leased(self, run_ids: Iterable[str]) -> list[bool]:
        ids = list(run_ids)
        if not ids:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for run_id in ids:
                pipe.exists(self._lease_key(run_id))
            return [bool(n) for n in await pipe.execute()]

    # Threads

    async def acquire(self, thread_id: str, run_id: str) -> bool:
        """Make `run_id` the thread's run, if the thread is free and no queued run comes first."""
        taken = await self._acquire(keys=[self._lock_key(thread_id), self._queue_key(thread_id)],
                                    args=[run_id, self.lease_ms, self._lease_key("")])
        return bool(taken)

    async def enqueue(self, thread_id: str, run_id: str) -> None:
        await self._client.rpush(self._queue_key(thread_id), run_id)  # type: ignore[misc]

    async def thread_runs(self, thread_id: str) -> list[str]:
        """The run the thread is busy with (if any), then the runs queued behind it."""
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.get(self._lock_key(thread_id))
            pipe.lrange(self._queue_key(thread_id), 0, -1)
            holder, queued = await pipe.execute()
        ids = [holder.decode()] if holder else []
        return ids + [r.decode() for r in queued if r.decode() not in ids]

    async def forget_thread(self, thread_id: str) -> None:
        await self._client.delete(self._lock_key(thread_id), self._queue_key(thread_id))

    async def request_cancel(self, run_id: str) -> None:
        await self._client.publish(self.cancel_channel, run_id)
