"""`agentstack bench replicas`: two server processes on one Redis under mixed chat and
graph load; one is SIGKILLed mid-run and restarted, as a node failure does to a pod.

A client-side balancer spreads requests over the replicas that are up (a Kubernetes
Service does the same once the readiness probe fails). Graph runs are created on one
replica and joined through the other, so every run crosses replicas. Measured:

- `failed`, and how many of those were in flight on the killed replica (the only
  requests allowed to fail);
- `runs_lost`: runs that vanished or never ended (each must end, as `error` if its
  replica died); `checkpoints_lost`: checkpoints recorded after a run that are gone;
- `orphans_settled_s`: from the kill until the surviving replica ended every run the
  killed one was running;
- `adapter_converge_s`: from an adapter load on one replica until the other serves it;
- `cross_replica_cache_hit_tokens`: prompt tokens one replica read from the Redis tier
  that the other replica computed; `cross_tenant_hit_tokens`: the same for another
  tenant's key (must be 0).
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agentstack.config import PACKAGE_DATA
from agentstack.offline.bench.reliability import LOAD_QUESTIONS
from agentstack.offline.bench.server import ADMIN_KEY, TENANT_KEYS, ServerProcess, bearer
from agentstack.offline.bench.report import markdown_table
from agentstack.redis_server import EmbeddedRedis
from agentstack.workflows.store import FINISHED

SHARED_PROMPT_WORDS = 360


@dataclass
class ReplicasResult:
    duration_s: float
    lease_s: float
    requests: int = 0
    failed: int = 0
    failed_in_flight_on_killed: int = 0
    runs: int = 0
    runs_lost: int = 0
    checkpoints: int = 0
    checkpoints_lost: int = 0
    orphans: int = 0
    orphans_settled_s: float | None = None
    restart_s: float | None = None
    adapter_converge_s: float | None = None
    cross_replica_cache_hit_tokens: int = 0
    cross_tenant_hit_tokens: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "failed": self.failed,
            "failed_in_flight_on_killed": self.failed_in_flight_on_killed,
            "runs": self.runs, "runs_lost": self.runs_lost,
            "checkpoints": self.checkpoints, "checkpoints_lost": self.checkpoints_lost,
            "orphans": self.orphans,
            "orphans_settled_s": round(self.orphans_settled_s, 2) if self.orphans_settled_s is not None else None,
            "adapter_converge_s": round(self.adapter_converge_s, 2) if self.adapter_converge_s is not None else None,
            "cross_replica_cache_hit_tokens": self.cross_replica_cache_hit_tokens,
            "cross_tenant_hit_tokens": self.cross_tenant_hit_tokens,
            "restart_s": round(self.restart_s, 1) if self.restart_s is not None else None,
            "duration_s": self.duration_s, "lease_s": self.lease_s,
        }


@dataclass
class TrackedRun:
    thread_id: str
    run_id: str
    replica: int
    ended: bool = False


@dataclass
class Balancer:
    """Round robin over the replicas that are up; remembers which requests each one holds."""

    urls: list[str]
    up: list[bool]
    in_flight: dict[int, int] = field(default_factory=dict)
    doomed: set[int] = field(default_factory=set)
    request_ids: itertools.count[int] = field(default_factory=itertools.count)
    turns: itertools.count[int] = field(default_factory=itertools.count)

    def pick(self, avoid: int | None = None) -> int:
        live = [i for i, up in enumerate(self.up) if up and i != avoid] or [i for i, up in enumerate(self.up) if up]
        return live[next(self.turns) % len(live)]

    def kill(self, replica: int) -> None:
        """Take a replica out of rotation; what it holds now is doomed."""
        self.up[replica] = False
        self.doomed |= {rid for rid, r in self.in_flight.items() if r == replica}


def shared_prompt() -> str:
    """A long prompt no replica has seen (a nonce in front), so every cached token of it
    was computed in this run."""
    words = " ".join(LOAD_QUESTIONS[i % len(LOAD_QUESTIONS)] for i in range(SHARED_PROMPT_WORDS // 5))
    return f"[{uuid.uuid4().hex}] Read these questions, then answer the last one. {words}"


def cached_tokens(reply: httpx.Response) -> int:
    reply.raise_for_status()
    details = reply.json()["usage"].get("prompt_tokens_details") or {}
    return int(details.get("cached_tokens") or 0)


async def cache_across_replicas(first: str, second: str) -> tuple[int, int]:
    """(tokens the second replica read that the first computed, the same for another tenant)."""
    prompt = shared_prompt()
    body = {"model": "selector", "max_tokens": 1, "temperature": 0, "messages": [{"role": "user", "content": prompt}]}
    async with httpx.AsyncClient(timeout=600) as client:
        cached_tokens(await client.post(f"{first}/v1/chat/completions", json=body,
                                        headers=bearer(TENANT_KEYS["tenant-a"])))
        crossed = cached_tokens(await client.post(f"{second}/v1/chat/completions", json=body,
                                                  headers=bearer(TENANT_KEYS["tenant-a"])))
        other = cached_tokens(await client.post(f"{second}/v1/chat/completions", json=body,
                                                headers=bearer(TENANT_KEYS["tenant-b"])))
    return crossed, other


async def adapter_convergence(first: str, second: str, *, limit_s: float = 60) -> float | None:
    """Seconds from a load answered by one replica until the other lists the adapter."""
    name = f"replica-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(timeout=120) as client:
        loaded = await client.post(f"{first}/v1/load_lora_adapter", headers=bearer(ADMIN_KEY),
                                   json={"lora_name": name, "lora_path": "selector-copy"})
        loaded.raise_for_status()
        started = time.monotonic()
        try:
            while time.monotonic() - started < limit_s:
                models = (await client.get(f"{second}/v1/models", headers=bearer(ADMIN_KEY))).json()["data"]
                if any(m["id"] == name for m in models):
                    return time.monotonic() - started
                await asyncio.sleep(0.05)
            return None
        finally:
            await client.post(f"{first}/v1/unload_lora_adapter", headers=bearer(ADMIN_KEY), json={"lora_name": name})


class Load:
    """Chat and graph clients over the balancer, counting what fails and where."""

    def __init__(self, balancer: Balancer, result: ReplicasResult, until: float) -> None:
        self.balancer = balancer
        self.result = result
        self.until = until
        self.runs: list[TrackedRun] = []
        self.checkpoints: list[tuple[str, str]] = []
        self.headers = bearer(TENANT_KEYS["tenant-a"])

    async def send(self, client: httpx.AsyncClient, method: str, path: str, *, avoid: int | None = None,
                   replica: int | None = None, **kwargs: Any) -> tuple[int, httpx.Response | None]:
        """One request to `replica`, or to the balancer's pick; None for a failed one."""
        if replica is None:
            replica = self.balancer.pick(avoid)
        request_id = next(self.balancer.request_ids)
        self.balancer.in_flight[request_id] = replica
        self.result.requests += 1
        try:
            response: httpx.Response | None = await client.request(
                method, f"{self.balancer.urls[replica]}{path}", headers=self.headers, **kwargs)
            ok = response.status_code < 400
            error = "" if ok else f"{response.status_code}: {response.text[:160]}"
        except httpx.HTTPError as e:
            response, ok, error = None, False, type(e).__name__
        finally:
            del self.balancer.in_flight[request_id]
        if not ok:
            if request_id in self.balancer.doomed:
                self.result.failed_in_flight_on_killed += 1
            elif len(self.result.errors) < 20:
                self.result.errors.append(f"{method} {path} on replica {replica}: {error}")
            self.result.failed += 1
            return replica, None
        return replica, response

    async def chat(self, client: httpx.AsyncClient, worker: int) -> None:
        for n in itertools.count():
            if time.monotonic() >= self.until:
                return
            await self.send(client, "POST", "/v1/chat/completions", json={
                "model": ("assistant", "selector", "reasoner")[(worker + n) % 3], "max_tokens": 12,
                "temperature": 0, "messages": [{"role": "user", "content": LOAD_QUESTIONS[(worker * 7 + n) % 6]}]})

    async def graphs(self, client: httpx.AsyncClient, worker: int) -> None:
        """Create a thread and a background run on one replica, join it through the other,
        then record the checkpoint the run left."""
        for n in itertools.count():
            if time.monotonic() >= self.until:
                return
            replica, created = await self.send(client, "POST", "/threads", json={})
            if created is None:
                continue
            thread_id = created.json()["thread_id"]
            await self.run_on(client, thread_id, worker + n)

    async def run_on(self, client: httpx.AsyncClient, thread_id: str, n: int, *, replica: int | None = None) -> None:
        replica, response = await self.send(client, "POST", f"/threads/{thread_id}/runs", replica=replica,
                                            json=self.graph_input(n))
        if response is None:
            return
        run = TrackedRun(thread_id, response.json()["run_id"], replica)
        self.runs.append(run)
        while True:
            _, joined = await self.send(client, "GET", f"/threads/{thread_id}/runs/{run.run_id}/join", avoid=replica)
            if joined is not None:
                break
            if time.monotonic() >= self.until + 600:
                return
            await asyncio.sleep(0.5)
        run.ended = True
        if isinstance(joined.json(), dict) and "__error__" not in joined.json():
            _, state = await self.send(client, "GET", f"/threads/{thread_id}/state")
            if state is not None and (checkpoint := state.json()["checkpoint"]["checkpoint_id"]):
                self.checkpoints.append((thread_id, checkpoint))

    @staticmethod
    def graph_input(n: int) -> dict[str, Any]:
        return {"assistant_id": "plan_act_reflect",
                "input": {"task": LOAD_QUESTIONS[n % len(LOAD_QUESTIONS)], "max_rounds": 1}}


async def settled_s(urls: str, runs: list[TrackedRun], since: float, *, limit_s: float) -> float | None:
    """Seconds from `since` until every run in `runs` is recorded as finished."""
    headers = bearer(TENANT_KEYS["tenant-a"])
    async with httpx.AsyncClient(timeout=30, headers=headers) as client:
        while time.monotonic() - since < limit_s:
            statuses = [(await client.get(f"{urls}/threads/{r.thread_id}/runs/{r.run_id}")).json().get("status")
                        for r in runs]
            if all(s in FINISHED for s in statuses):
                return time.monotonic() - since
            await asyncio.sleep(0.25)
    return None


async def audit(url: str, load: Load, result: ReplicasResult, *, wait_s: float) -> None:
    """Every run exists and ended; every recorded checkpoint is still there."""
    headers = bearer(TENANT_KEYS["tenant-a"])
    deadline = time.monotonic() + wait_s
    async with httpx.AsyncClient(timeout=60, headers=headers) as client:
        for run in load.runs:
            while True:
                reply = await client.get(f"{url}/threads/{run.thread_id}/runs/{run.run_id}")
                status = reply.json().get("status") if reply.status_code == 200 else None
                if status in FINISHED or status is None or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.5)
            if status not in FINISHED:
                result.runs_lost += 1
                result.errors.append(f"run {run.run_id}: {reply.status_code} {status}")
        for thread_id, checkpoint in load.checkpoints:
            reply = await client.get(f"{url}/threads/{thread_id}/state/{checkpoint}")
            if reply.status_code != 200 or reply.json()["checkpoint"]["checkpoint_id"] != checkpoint:
                result.checkpoints_lost += 1
                result.errors.append(f"checkpoint {checkpoint} of {thread_id}: {reply.status_code}")
    result.runs, result.checkpoints = len(load.runs), len(load.checkpoints)


def start_replicas(work_dir: Path, *, lease_s: float) -> tuple[EmbeddedRedis, list[ServerProcess]]:
    """One Redis, one adapters directory, two servers in full-shared cache mode, each
    engine on its own core (two engines on shared cores spin against each other)."""
    redis = EmbeddedRedis(work_dir / "redis").start()
    adapters = work_dir / "adapters"
    if not (adapters / "selector-copy").exists():
        shutil.copytree(PACKAGE_DATA / "adapters" / "selector", adapters / "selector-copy")
    env = {"AGENTSTACK_CACHE": '{"mode": "full-shared"}', "AGENTSTACK_REDIS_PREFIX": "replicas",
           "AGENTSTACK_ADAPTERS_ROOT": str(adapters), "AGENTSTACK_RUN_LEASE_S": str(lease_s)}
    servers = [ServerProcess(work_dir / f"replica-{i}", redis_url=redis.url,
                             env={**env, "VLLM_CPU_OMP_THREADS_BIND": str(i)}) for i in range(2)]
    try:
        for server in servers:
            server.start()
    except BaseException:
        for server in servers:
            server.stop()
        redis.stop()
        raise
    return redis, servers


async def run_replicas(work_dir: Path, *, duration_s: float, kill_at_s: float, lease_s: float,
                       chat_clients: int = 2, graph_clients: int = 2,
                       on_progress: Callable[[str], None] | None = None) -> ReplicasResult:
    say = on_progress or (lambda _: None)
    result = ReplicasResult(duration_s=duration_s, lease_s=lease_s)
    say("starting two replicas on one Redis")
    redis, servers = start_replicas(work_dir, lease_s=lease_s)
    urls = [s.base_url for s in servers]
    try:
        say("adapter convergence")
        result.adapter_converge_s = await adapter_convergence(urls[0], urls[1])
        say("prefix cache across replicas")
        result.cross_replica_cache_hit_tokens, result.cross_tenant_hit_tokens = await cache_across_replicas(*urls)

        balancer = Balancer(urls=urls, up=[True, True])
        started = time.monotonic()
        load = Load(balancer, result, until=started + duration_s)
        async with httpx.AsyncClient(timeout=httpx.Timeout(600, connect=5)) as client:
            workers = [asyncio.create_task(load.chat(client, w)) for w in range(chat_clients)]
            workers += [asyncio.create_task(load.graphs(client, w)) for w in range(graph_clients)]
            say(f"load for {duration_s:g} s; replica 1 is killed at {kill_at_s:g} s")
            await asyncio.sleep(max(0.0, kill_at_s - 2))
            orphan_thread = (await client.post(f"{urls[1]}/threads", json={}, headers=load.headers)).json()["thread_id"]
            orphan = asyncio.create_task(load.run_on(client, orphan_thread, 0, replica=1))
            await asyncio.sleep(2)
            doomed_runs = [r for r in load.runs if r.replica == 1 and not r.ended]
            balancer.kill(1)
            servers[1].kill()
            killed = time.monotonic()
            say(f"replica 1 killed with {len(doomed_runs)} run(s) on it; restarting it")

            def restart_replica(killed: float = killed) -> None:
                servers[1].start()
                result.restart_s = time.monotonic() - killed

            restart = threading.Thread(target=restart_replica, daemon=True)
            restart.start()
            result.orphans = len(doomed_runs)
            result.orphans_settled_s = await settled_s(urls[0], doomed_runs, killed, limit_s=10 * lease_s + 30)
            say(f"orphans settled after {result.orphans_settled_s} s")
            await asyncio.gather(*workers, orphan)
        await asyncio.to_thread(restart.join, 900)
        if servers[1].ready():
            balancer.up[1] = True
        say("auditing runs and checkpoints")
        await audit(urls[0], load, result, wait_s=4 * lease_s + 30)
    finally:
        for server in servers:
            server.stop()
        redis.stop()
    return result


def replicas_table(result: ReplicasResult) -> str:
    s = result.summary()
    rows = [
        ("requests", s["requests"], "-"),
        ("failed", s["failed"], f"= in flight on the killed replica ({s['failed_in_flight_on_killed']})"),
        ("runs (ended)", s["runs"], "-"),
        ("runs lost", s["runs_lost"], "0"),
        ("checkpoints kept", s["checkpoints"], "-"),
        ("checkpoints lost", s["checkpoints_lost"], "0"),
        ("orphaned runs", s["orphans"], "-"),
        ("orphans settled after (s)", s["orphans_settled_s"], f"lease {s['lease_s']:g} s"),
        ("adapter converged after (s)", s["adapter_converge_s"], "<= 2"),
        ("cross-replica cache hit tokens", s["cross_replica_cache_hit_tokens"], "> 0"),
        ("cross-tenant cache hit tokens", s["cross_tenant_hit_tokens"], "0"),
        ("killed replica ready again after (s)", s["restart_s"], "-"),
    ]
    return markdown_table(["measure", "value", "target"], rows)
