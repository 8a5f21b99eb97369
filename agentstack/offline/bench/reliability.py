"""`agentstack bench load|security|faults`: the service under load, other tenants' keys and
injected faults. Every figure in docs/RELIABILITY.md comes from here (the fuzzer's, from `fuzz.py`).

Each function takes the base URL of a running server (loopback only), so tests reuse
one server; the CLI starts a fresh `agentstack serve` per command (see `server.py`).
All traffic is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
from rich.progress import Progress

from agentstack.auth import tenant_label
from agentstack.chat.dispatch import TOOL_CALLING_MODEL
from agentstack.offline.bench.report import bar_chart, markdown_table
from agentstack.offline.bench.server import ADMIN_KEY, RESTRICTED_ROLES, TENANT_KEYS, ServerProcess, bearer
from cache.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS

LOAD_QUESTIONS = ["Name a primary color.", "What is 2 plus 3?", "Give a synonym for fast.",
                  "Name a planet.", "Say hello in French.", "Name a fruit that is yellow."]


def require_loopback(base_url: str) -> None:
    host = urlparse(base_url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"benchmarks send traffic to loopback only, not {host!r}")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of a series in Prometheus text whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in series for k, v in (labels or {}).items()):
            total += float(value)
    return total


# Load


@dataclass
class LoadResult:
    duration_s: float
    concurrency: int
    latencies: list[float] = field(default_factory=list)
    failed: int = 0
    graph_runs: int = 0
    rss_start: int = 0
    rss_end: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def rss_growth(self) -> float:
        return (self.rss_end - self.rss_start) / self.rss_start if self.rss_start else 0.0

    def summary(self) -> dict[str, Any]:
        return {"requests": len(self.latencies) + self.failed, "failed": self.failed,
                "p50_s": round(percentile(self.latencies, 0.5), 3),
                "p99_s": round(percentile(self.latencies, 0.99), 3),
                "rss_growth": round(self.rss_growth, 4), "graph_runs": self.graph_runs}


async def _chat_roles(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> list[str]:
    """Served models that answer a plain chat request (`tool-calling` needs `tools`)."""
    models = (await client.get("/v1/models", headers=headers)).json()["data"]
    return [m["id"] for m in models if m["id"] != TOOL_CALLING_MODEL]


async def load_worker(client: httpx.AsyncClient, worker: int, roles: list[str], until: float,
                      result: LoadResult, *, graph_every: int = 8,
                      on_request: Callable[[], None] | None = None) -> None:
    """Requests back to back until `until`: every `graph_every`-th worker runs graphs
    (plan_act_reflect, one round), the others send mixed-role chat requests."""
    n = 0
    while time.monotonic() < until:
        n += 1
        started = time.perf_counter()
        try:
            if graph_every and worker % graph_every == 0:
                response = await client.post("/runs/wait", json={
                    "assistant_id": "plan_act_reflect",
                    "input": {"task": LOAD_QUESTIONS[n % len(LOAD_QUESTIONS)], "max_rounds": 1}})
                ok = response.status_code == 200 and "__error__" not in response.json()
                result.graph_runs += 1
            else:
                role = roles[(worker + n) % len(roles)]
                response = await client.post("/v1/chat/completions", json={
                    "model": role, "max_tokens": 16, "temperature": 0,
                    "messages": [{"role": "user", "content": LOAD_QUESTIONS[(worker * 7 + n) % len(LOAD_QUESTIONS)]}]})
                ok = response.status_code == 200
        except httpx.HTTPError as e:
            ok, response = False, None
            result.errors.append(f"{type(e).__name__}")
        if ok:
            result.latencies.append(time.perf_counter() - started)
        else:
            result.failed += 1
            if response is not None and len(result.errors) < 20:
                result.errors.append(f"{response.status_code}: {response.text[:160]}")
        if on_request is not None:
            on_request()


async def run_load(base_url: str, *, duration_s: float, concurrency: int, key: str,
                   rss: Callable[[], int], quiet: bool = True) -> LoadResult:
    require_loopback(base_url)
    result = LoadResult(duration_s=duration_s, concurrency=concurrency)
    async with httpx.AsyncClient(base_url=base_url, headers=bearer(key), timeout=600,
                                 limits=httpx.Limits(max_connections=concurrency + 4)) as client:
        roles = await _chat_roles(client)
        # Warm-up, so RSS growth measures the steady state, not first-use allocations.
        warm = LoadResult(duration_s=0, concurrency=concurrency)
        await asyncio.gather(*(load_worker(client, w, roles, time.monotonic() + min(20.0, duration_s / 4), warm)
                               for w in range(concurrency)))
        result.rss_start = rss()
        with Progress(disable=quiet, transient=True) as progress:
            task = progress.add_task(f"load x{concurrency}", total=None)
            until = time.monotonic() + duration_s
            await asyncio.gather(*(load_worker(client, w, roles, until, result,
                                               on_request=lambda: progress.advance(task))
                                   for w in range(concurrency)))
        result.rss_end = rss()
    return result


# Security


@dataclass
class SecurityResult:
    attempts: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    owner_cache_hit_tokens: int = 0
    cross_tenant_cache_hit_tokens: int = 0

    def summary(self) -> dict[str, Any]:
        return {"attempts": sum(self.attempts.values()), "refused": sum(self.refused.values()),
                "by_kind": {k: f"{self.refused.get(k, 0)}/{n}" for k, n in self.attempts.items()},
                "owner_cache_hit_tokens": self.owner_cache_hit_tokens,
                "cross_tenant_cache_hit_tokens": self.cross_tenant_cache_hit_tokens}


SHARED_CONTEXT = " ".join(f"Fact {i}: the code word for item {i} is w{i * 37 % 101}." for i in range(40))


async def run_security(base_url: str) -> SecurityResult:
    """Missing, wrong and other tenants' keys against every kind of resource; then the
    same long prompt from two tenants, and the second tenant's prefix-cache hits."""
    require_loopback(base_url)
    result = SecurityResult()
    a, b = bearer(TENANT_KEYS["tenant-a"]), bearer(TENANT_KEYS["tenant-b"])
    chat = {"model": "assistant", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        thread = (await client.post("/threads", headers=a, json={})).json()["thread_id"]
        forbidden_role = next(r for r in await _chat_roles(client, a) if r not in RESTRICTED_ROLES)
        probes: list[tuple[str, str, str, dict[str, str], Any]] = []
        for kind, headers in (("missing key", {}), ("wrong key", bearer("sk-not-a-key")),
                              ("wrong key (x-api-key)", {"x-api-key": "sk-not-a-key"})):
            probes += [(kind, "POST", "/v1/chat/completions", headers, chat),
                       (kind, "GET", "/v1/models", headers, None),
                       (kind, "POST", "/threads", headers, {}),
                       (kind, "POST", "/runs/wait", headers, {"assistant_id": "tool_agent", "input": None})]
        probes += [
            ("other tenant's thread", "GET", f"/threads/{thread}", b, None),
            ("other tenant's thread", "GET", f"/threads/{thread}/state", b, None),
            ("other tenant's thread", "PATCH", f"/threads/{thread}", b, {"metadata": {"x": 1}}),
            ("other tenant's thread", "POST", f"/threads/{thread}/runs/wait", b,
             {"assistant_id": "tool_agent", "input": None}),
            ("other tenant's thread", "DELETE", f"/threads/{thread}", b, None),
            ("role not allowed", "POST", "/v1/chat/completions", b, {**chat, "model": forbidden_role}),
            ("graph not allowed", "POST", "/runs/wait", b, {"assistant_id": "plan_act_reflect", "input": {"task": "x"}}),
            ("admin route", "POST", "/v1/load_lora_adapter", b, {"lora_name": "x", "lora_path": "x"}),
        ]
        for kind, method, path, headers, body in probes:
            response = await client.request(method, path, headers=headers, json=body)
            result.attempts[kind] = result.attempts.get(kind, 0) + 1
            if response.status_code in (401, 403, 404):
                result.refused[kind] = result.refused.get(kind, 0) + 1
        searched = (await client.post("/threads/search", headers=b, json={"limit": 1000})).json()
        result.attempts["other tenant's thread in search"] = 1
        if all(t["thread_id"] != thread for t in searched):
            result.refused["other tenant's thread in search"] = 1

        shared = {"model": "assistant", "max_tokens": 1, "temperature": 0,
                  "messages": [{"role": "system", "content": SHARED_CONTEXT},
                               {"role": "user", "content": f"Which code word has item 7? ({uuid.uuid4().hex[:6]})"}]}
        for _ in range(2):
            owner = (await client.post("/v1/chat/completions", headers=a, json=shared)).json()
        result.owner_cache_hit_tokens = owner["usage"]["prompt_tokens_details"]["cached_tokens"]
        before = metric_value((await client.get("/metrics")).text, "agentstack:tenant_prefix_cache_hits_total",
                              {"tenant": tenant_label("tenant-b")})
        await client.post("/v1/chat/completions", headers=b, json=shared)
        after = metric_value((await client.get("/metrics")).text, "agentstack:tenant_prefix_cache_hits_total",
                             {"tenant": tenant_label("tenant-b")})
        result.cross_tenant_cache_hit_tokens = int(after - before)
    return result


# Faults


@dataclass
class FaultRow:
    fault: str
    requests: int
    failed: int
    lost_checkpoints: int | None
    recovery_s: float | None
    detail: str


@dataclass
class FaultsResult:
    rows: list[FaultRow] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"faults": [row.__dict__ for row in self.rows]}


async def _checkpoints(client: httpx.AsyncClient, thread_id: str) -> set[str]:
    history = (await client.post(f"/threads/{thread_id}/history", json={"limit": 1000})).json()
    return {h["checkpoint"]["checkpoint_id"] for h in history}


async def redis_outage(server: ServerProcess, *, load_s: float, outage_s: float, concurrency: int) -> FaultRow:
    """Chat load while Redis is stopped and restarted; graph runs before, during and after.
    Checkpoints written before the outage must all be there after it."""
    assert server.redis is not None
    async with httpx.AsyncClient(base_url=server.base_url, headers=bearer(TENANT_KEYS["tenant-a"]),
                                 timeout=600) as client:
        roles = [r for r in await _chat_roles(client)]
        threads = []
        for i in range(2):
            thread = (await client.post("/threads", json={})).json()["thread_id"]
            run = await client.post(f"/threads/{thread}/runs/wait", json={
                "assistant_id": "plan_act_reflect", "input": {"task": LOAD_QUESTIONS[i], "max_rounds": 1}})
            run.raise_for_status()
            threads.append(thread)
        before = {t: await _checkpoints(client, t) for t in threads}

        chat = LoadResult(duration_s=load_s, concurrency=concurrency)
        until = time.monotonic() + load_s
        load = asyncio.gather(*(load_worker(client, w, roles, until, chat, graph_every=0) for w in range(concurrency)))
        await asyncio.sleep(min(5.0, load_s / 4))
        server.redis.stop()
        ready = (await client.get("/readyz")).json()
        during = await client.post("/runs/wait", json={"assistant_id": "plan_act_reflect",
                                                      "input": {"task": "x", "max_rounds": 1}})
        await asyncio.sleep(outage_s)
        server.redis.start()
        restarted = time.monotonic()
        recovery = None
        while time.monotonic() - restarted < 120:
            if (await client.get("/readyz")).json().get("status") == "ready":
                recovery = time.monotonic() - restarted
                break
            await asyncio.sleep(0.25)
        probe = await client.post("/runs/wait", json={"assistant_id": "plan_act_reflect",
                                                     "input": {"task": "Name a color.", "max_rounds": 1}})
        after = "ok" if probe.status_code == 200 and "__error__" not in probe.json() else str(probe.status_code)
        await load
        lost = 0
        for thread in threads:
            lost += len(before[thread] - await _checkpoints(client, thread))
    graph_during = f"graph run during outage: {during.status_code}, after: {after}"
    detail = (f"/readyz during outage: {ready['status']} (degraded: {', '.join(ready.get('degraded', []))}); "
              f"{graph_during}; checkpoints checked: {sum(len(v) for v in before.values())}")
    return FaultRow("Redis stopped for %gs under chat load" % outage_s, len(chat.latencies) + chat.failed,
                    chat.failed, lost, round(recovery, 2) if recovery is not None else None, detail)


async def client_disconnects(server: ServerProcess, *, streams: int = 4) -> FaultRow:
    """Clients that leave mid-stream: each engine request is aborted, the rest keep working."""
    async with httpx.AsyncClient(base_url=server.base_url, headers=bearer(TENANT_KEYS["tenant-a"]),
                                 timeout=600) as client:
        metrics = (await client.get("/metrics")).text
        before = metric_value(metrics, "agentstack:requests_aborted_total")
        for _ in range(streams):
            async with client.stream("POST", "/v1/chat/completions", json={
                    "model": "assistant", "stream": True, "max_tokens": 400, "ignore_eos": True,
                    "messages": [{"role": "user", "content": "Tell a long story."}]}) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data:") and '"content"' in line and '"content":""' not in line:
                        break
        started = time.monotonic()
        aborted = 0.0
        while time.monotonic() - started < 30:
            aborted = metric_value((await client.get("/metrics")).text, "agentstack:requests_aborted_total") - before
            if aborted >= streams:
                break
            await asyncio.sleep(0.2)
        after = await client.post("/v1/chat/completions", json={
            "model": "assistant", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
    return FaultRow("client disconnects mid-stream", streams + 1, int(after.status_code != 200), None,
                    round(time.monotonic() - started, 2), f"engine requests aborted: {int(aborted)}/{streams}")


async def bad_adapters(server: ServerProcess) -> FaultRow:
    """A corrupt and a missing adapter: 4xx on load, other roles unaffected."""
    corrupt = server.adapters_root / "corrupt"
    corrupt.mkdir(parents=True, exist_ok=True)
    (corrupt / ADAPTER_CONFIG).write_text(json.dumps({
        "peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": "x", "task_type": "CAUSAL_LM"}))
    (corrupt / ADAPTER_WEIGHTS).write_bytes(b"\x00not a safetensors file" * 64)
    statuses = []
    async with httpx.AsyncClient(base_url=server.base_url, headers=bearer(ADMIN_KEY), timeout=600) as client:
        for path in (str(corrupt), str(server.adapters_root / "missing")):
            response = await client.post("/v1/load_lora_adapter", json={"lora_name": "broken", "lora_path": path})
            statuses.append(response.status_code)
        roles = await _chat_roles(client)
        failed = 0
        for role in roles:
            response = await client.post("/v1/chat/completions", json={
                "model": role, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
            failed += response.status_code != 200
    return FaultRow("corrupt and missing adapter loaded", len(roles) + 2,
                    failed + sum(s >= 500 or s < 400 for s in statuses), None, None,
                    f"load answers: {statuses}; {len(roles)} roles served after")


async def graceful_drain(server: ServerProcess) -> FaultRow:
    """SIGTERM with streams in flight: they finish, readiness fails at once, exit code 0."""
    async with httpx.AsyncClient(base_url=server.base_url, headers=bearer(TENANT_KEYS["tenant-a"]),
                                 timeout=600) as client:
        async def stream() -> bool:
            async with client.stream("POST", "/v1/chat/completions", json={
                    "model": "assistant", "stream": True, "max_tokens": 96, "ignore_eos": True,
                    "messages": [{"role": "user", "content": "Count to fifty."}]}) as response:
                lines = [line async for line in response.aiter_lines()]
            return response.status_code == 200 and "data: [DONE]" in lines

        streams = [asyncio.create_task(stream()) for _ in range(3)]
        await asyncio.sleep(2)
        server.terminate()
        signalled = time.monotonic()
        outcomes = await asyncio.gather(*streams, return_exceptions=True)
    code = await asyncio.to_thread(server.wait, 120)
    failed = sum(o is not True for o in outcomes)
    return FaultRow("SIGTERM with requests in flight", len(outcomes), failed, None,
                    round(time.monotonic() - signalled, 2), f"exit code {code}")


async def engine_death(server: ServerProcess) -> FaultRow:
    """The engine core process is killed: /readyz fails at once, the server exits non-zero."""
    core = server.engine_core()
    core.kill()
    killed = time.monotonic()
    unready = None
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as client:
        while time.monotonic() - killed < 60 and unready is None:
            try:
                if (await client.get("/readyz")).status_code == 503:
                    unready = time.monotonic() - killed
            except httpx.HTTPError:
                unready = time.monotonic() - killed
            await asyncio.sleep(0.1)
    code = await asyncio.to_thread(server.wait, 120)
    exited = time.monotonic() - killed
    return FaultRow("engine core process killed", 0, 0, None, round(exited, 2),
                    f"/readyz failed after {unready:.2f} s; exit code {code}" if unready is not None
                    else f"/readyz never failed; exit code {code}")


# Reports


def write_report(out: Path, name: str, command: str, summary: dict[str, Any], table: str,
                 panels: dict[str, dict[str, float]], notes: list[str] | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    plot = bar_chart(out / f"bench-{name}.png", f"bench {name}", panels)
    text = "\n".join([f"# bench {name}", "", f"Command: `{command}`", "", table, "",
                      *(notes or []), "", f"![bench {name}]({plot.name})", "",
                      "```json", json.dumps(summary, indent=2), "```", ""])
    report = out / f"bench-{name}.md"
    report.write_text(text)
    return report


def load_table(result: LoadResult) -> str:
    s = result.summary()
    return markdown_table(["concurrency", "duration s", "requests", "failed", "graph runs", "p50 s", "p99 s",
                           "RSS growth"],
                          [[result.concurrency, result.duration_s, s["requests"], s["failed"], s["graph_runs"],
                            s["p50_s"], s["p99_s"], f"{100 * s['rss_growth']:.2f}%"]])


def security_table(result: SecurityResult) -> str:
    rows: list[list[object]] = [[k, result.attempts[k], result.refused.get(k, 0)] for k in result.attempts]
    rows.append(["cross-tenant prefix-cache hit tokens (metrics)", 1, result.cross_tenant_cache_hit_tokens])
    return markdown_table(["attempt", "requests", "refused / value"], rows)


def faults_table(result: FaultsResult) -> str:
    return markdown_table(["fault", "requests", "failed", "lost checkpoints", "recovery s", "detail"],
                          [[r.fault, r.requests, r.failed, "-" if r.lost_checkpoints is None else r.lost_checkpoints,
                            "-" if r.recovery_s is None else r.recovery_s, r.detail] for r in result.rows])
