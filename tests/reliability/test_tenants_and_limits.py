"""Keys, tenants and limits on the real server: every foreign or missing key is refused,
tenants never share cached KV, and a key past its queue gets 429 with Retry-After.
The fuzz and load benchmarks run here in short form (their full runs: `make bench-fuzz`,
`make bench-load`)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from agentstack.offline.bench.fuzz import run_fuzz
from agentstack.offline.bench.reliability import run_load, run_security
from agentstack.offline.bench.server import RESTRICTED_ROLES, TENANT_KEYS, ServerProcess, bearer

pytestmark = [pytest.mark.slow, pytest.mark.reliability]


async def test_other_tenants_are_refused_and_share_no_cache(keyed: ServerProcess) -> None:
    result = await run_security(keyed.base_url)
    assert result.refused == result.attempts, result.summary()
    assert result.owner_cache_hit_tokens > 0, "the owner's repeat must hit the prefix cache"
    assert result.cross_tenant_cache_hit_tokens == 0


async def test_thread_ids_are_per_tenant_and_reveal_nothing(keyed: ServerProcess) -> None:
    """A key may create a thread with an id another key holds, as if it were free; each
    sees only its own thread under that id, with the id it chose."""
    a, b = bearer(TENANT_KEYS["tenant-a"]), bearer(TENANT_KEYS["tenant-b"])
    async with httpx.AsyncClient(base_url=keyed.base_url, timeout=120) as client:
        held = (await client.post("/threads", headers=a, json={"metadata": {"who": "a"}})).json()["thread_id"]
        fresh = f"free-{held}"
        as_taken = await client.post("/threads", headers=b, json={"thread_id": held, "metadata": {"who": "b"}})
        as_free = await client.post("/threads", headers=b, json={"thread_id": fresh})
        assert (as_taken.status_code, as_free.status_code) == (200, 200)
        assert as_taken.json()["thread_id"] == held and as_free.json()["thread_id"] == fresh
        assert set(as_taken.json()) == set(as_free.json())
        again = await client.post("/threads", headers=b, json={"thread_id": held})
        assert again.status_code == 409, "a key's own id is taken for that key"
        mine = (await client.get(f"/threads/{held}", headers=a)).json()
        theirs = (await client.get(f"/threads/{held}", headers=b)).json()
        assert (mine["metadata"]["who"], theirs["metadata"]["who"]) == ("a", "b")
        assert mine["thread_id"] == theirs["thread_id"] == held
        found = (await client.post("/threads/search", headers=b, json={"ids": [held]})).json()
        assert [(t["thread_id"], t["metadata"]["who"]) for t in found] == [(held, "b")]
        ran = await client.post(f"/threads/{held}/runs/wait", headers=b, json={
            "assistant_id": "tool_agent", "input": {"messages": [{"role": "user", "content": "What is 2 + 2?"}]}})
        assert ran.status_code == 200, ran.text
        assert (await client.get(f"/threads/{held}/state", headers=a)).json()["values"] == {}
        state = (await client.get(f"/threads/{held}/state", headers=b)).json()
        assert state["checkpoint"]["thread_id"] == held and state["values"]["messages"]
        assert ran.headers["content-location"].startswith(f"/threads/{held}/runs/")


async def test_auto_routes_only_to_roles_the_key_may_use(keyed: ServerProcess) -> None:
    """tenant-b may use `auto` but, of the gate's roles, only `assistant`: the gate picks
    among those, even for prompts it would send to the reasoner or the tool role."""
    prompts = ["Zoe has 15 apples. She gives away 5, then doubles the rest and loses 7. How many now?",
               "What is the capital of Japan?"]
    async with httpx.AsyncClient(base_url=keyed.base_url, timeout=120) as client:
        for prompt in prompts:
            body = {"messages": [{"role": "user", "content": prompt}]}
            restricted = await client.post("/v1/route", headers=bearer(TENANT_KEYS["tenant-b"]), json=body)
            assert restricted.status_code == 200, restricted.text
            assert set(restricted.json()["roles"]) <= set(RESTRICTED_ROLES), restricted.json()
        free = await client.post("/v1/route", headers=bearer(TENANT_KEYS["tenant-a"]), json=body)
    assert free.status_code == 200 and "may use" not in free.json()["reason"]


async def test_past_the_queue_a_key_gets_429_with_retry_after(keyed: ServerProcess) -> None:
    body = {"model": "assistant", "max_tokens": 48, "ignore_eos": True,
            "messages": [{"role": "user", "content": "Count slowly."}]}
    async with httpx.AsyncClient(base_url=keyed.base_url, timeout=600) as client:
        a = bearer(TENANT_KEYS["tenant-a"])
        responses = await asyncio.gather(*(client.post("/v1/chat/completions", headers=a, json=body)
                                           for _ in range(12)))
        other = await client.post("/v1/chat/completions", headers=bearer(TENANT_KEYS["tenant-b"]),
                                  json={**body, "max_tokens": 2})
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 8 and set(statuses) <= {200, 429}, statuses
    limited = [r for r in responses if r.status_code == 429]
    assert limited and all(int(r.headers["retry-after"]) >= 1 for r in limited)
    assert limited[0].json()["error"]["type"] == "RateLimitError"
    assert other.status_code == 200


def test_fuzz_short_fails_no_check(keyed: ServerProcess) -> None:
    """Every schemathesis check, over coverage, fuzzing and a short stateful phase."""
    result = run_fuzz(keyed.base_url, cases=120, key=TENANT_KEYS["tenant-a"])
    summary = result.summary()
    assert result.cases >= 100 and all(summary["phases"][phase] > 0 for phase in ("coverage", "fuzzing", "stateful"))
    assert {"not_a_server_error", "negative_data_rejection", "use_after_free", "ignored_auth"} <= set(result.checks)
    assert result.failures == 0 and result.server_errors == 0, [e.line() for e in result.examples]
    assert result.stateful_links > 0, "the stateful phase follows links"


async def test_load_short_fails_nothing(keyed: ServerProcess) -> None:
    result = await run_load(keyed.base_url, duration_s=20, concurrency=8, key=TENANT_KEYS["tenant-a"],
                            rss=keyed.rss_bytes)
    summary = result.summary()
    assert summary["failed"] == 0, result.errors
    assert summary["requests"] > 8 and summary["p99_s"] >= summary["p50_s"] > 0
    assert summary["graph_runs"] >= 1, "graph runs are part of the load"
