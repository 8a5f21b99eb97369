"""Two servers on one Redis, as the Helm chart's replicas run: a run started on one is
followed, joined, queued behind and cancelled through the other; a thread never runs
twice at once; adapter changes on one reach the other; and when one is killed, the
other ends its runs as errors and their threads stay usable."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import SyncLangGraphClient

from agentstack.redis_server import EmbeddedRedis
from tests.conftest import LiveServer, selector_chat, server_env
from tests.workflows.conftest import USER_GRAPHS_FILE

pytestmark = pytest.mark.slow

LEASE_S = 2.0


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, model_dir: Path,
             adapters_root: Path) -> Iterator[tuple[LiveServer, LiveServer]]:
    work = tmp_path_factory.mktemp("replicas")
    with EmbeddedRedis(work / "redis") as redis:
        env = {**server_env(model_dir, redis.url, adapters_root, work / "cache"),
               "AGENTSTACK_REDIS_PREFIX": "replicas", "AGENTSTACK_GRAPHS_FILE": str(USER_GRAPHS_FILE),
               "AGENTSTACK_RUN_LEASE_S": str(LEASE_S)}
        first = LiveServer(env=env, log_path=work / "first.log").start()
        try:
            second = LiveServer(env=env, log_path=work / "second.log").start()
            try:
                yield first, second
            finally:
                second.stop()
        finally:
            first.stop()


def clients(replicas: tuple[LiveServer, LiveServer]) -> tuple[SyncLangGraphClient, SyncLangGraphClient]:
    return get_sync_client(url=replicas[0].base_url), get_sync_client(url=replicas[1].base_url)


def seconds_until(done: Callable[[], bool], limit_s: float = 30) -> float:
    """Seconds until `done()` holds (polled every 0.1 s); `limit_s` if it never does."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        if done():
            return time.monotonic() - started
        time.sleep(0.1)
    return limit_s


def test_a_run_on_one_replica_is_followed_and_joined_through_the_other(
        replicas: tuple[LiveServer, LiveServer]) -> None:
    a, b = clients(replicas)
    thread = a.threads.create()
    run = a.runs.create(thread["thread_id"], "slow", input={"ticks": 4, "seconds": 0.4, "done": 0},
                        stream_mode=["values", "updates"])
    seen = [(p.event, p.data) for p in b.runs.join_stream(thread["thread_id"], run["run_id"])]
    names = [e for e, _ in seen]
    assert names[0] == "metadata" and names[-1] == "end" and names.count("updates") == 4
    assert [d for e, d in seen if e == "values"][-1]["done"] == 4
    assert b.runs.join(thread["thread_id"], run["run_id"]) == {"ticks": 4, "seconds": 0.4, "done": 4}
    again = [(p.event, p.data) for p in a.runs.join_stream(thread["thread_id"], run["run_id"])]
    assert again == seen, "the other replica replayed a different log"
    resumed = [p.event for p in b.runs.join_stream(thread["thread_id"], run["run_id"], last_event_id="2")]
    assert resumed == names[3:]
    assert b.runs.get(thread["thread_id"], run["run_id"])["status"] == "success"


def test_a_thread_busy_on_one_replica_is_busy_on_the_other(replicas: tuple[LiveServer, LiveServer]) -> None:
    a, b = clients(replicas)
    thread_id = a.threads.create()["thread_id"]
    first = a.runs.create(thread_id, "slow", input={"ticks": 3, "seconds": 0.5, "done": 0})
    with pytest.raises(httpx.HTTPStatusError) as refused:
        b.runs.create(thread_id, "slow", input={"ticks": 1}, multitask_strategy="reject")
    assert refused.value.response.status_code == 409
    queued = b.runs.create(thread_id, "slow", input={"ticks": 4, "seconds": 0.1}, multitask_strategy="enqueue")
    assert b.runs.join(thread_id, queued["run_id"])["done"] == 4
    assert a.runs.get(thread_id, first["run_id"])["status"] == "success"
    first_ended = a.runs.get(thread_id, first["run_id"])["updated_at"]
    queued_run = b.runs.get(thread_id, queued["run_id"])
    assert queued_run["status"] == "success" and queued_run["updated_at"] > first_ended


def test_a_run_is_cancelled_through_the_other_replica(replicas: tuple[LiveServer, LiveServer]) -> None:
    a, b = clients(replicas)
    thread_id = a.threads.create()["thread_id"]
    run = a.runs.create(thread_id, "slow", input={"ticks": 20, "seconds": 0.5, "done": 0})
    time.sleep(1.0)
    started = time.monotonic()
    b.runs.cancel(thread_id, run["run_id"], wait=True)
    assert time.monotonic() - started < 5
    assert a.runs.get(thread_id, run["run_id"])["status"] == "interrupted"
    assert a.runs.wait(thread_id, "slow", input={"ticks": 1, "seconds": 0.1, "done": 0})["done"] == 1


def model_ids(server: LiveServer) -> set[str]:
    return {m["id"] for m in httpx.get(f"{server.base_url}/v1/models").json()["data"]}


def test_replicas_follow_each_others_adapter_changes(replicas: tuple[LiveServer, LiveServer]) -> None:
    """What one replica loads or unloads at run time, the other serves or drops moments
    later, without a restart."""
    first, second = replicas
    http = httpx.Client(base_url=first.base_url, timeout=120)
    assert http.post("/v1/load_lora_adapter",
                     json={"lora_name": "selector-shared", "lora_path": "selector-copy"}).status_code == 200
    assert seconds_until(lambda: "selector-shared" in model_ids(second)) <= 2, second.log_tail()
    reply = httpx.post(f"{second.base_url}/v1/chat/completions", timeout=120, json={
        "model": "selector-shared", "temperature": 0, "max_tokens": 24, "messages": selector_chat(),
    })
    assert reply.status_code == 200
    assert http.post("/v1/unload_lora_adapter", json={"lora_name": "selector-shared"}).status_code == 200
    assert seconds_until(lambda: "selector-shared" not in model_ids(second)) <= 2, second.log_tail()


def test_a_killed_replicas_runs_end_as_errors_and_their_threads_go_on(
        replicas: tuple[LiveServer, LiveServer]) -> None:
    a, b = clients(replicas)
    thread_id = b.threads.create()["thread_id"]
    b.runs.wait(thread_id, "slow", input={"ticks": 1, "seconds": 0.1, "done": 0})
    run = b.runs.create(thread_id, "slow", input={"ticks": 40, "seconds": 0.5})
    follower: list[str] = []
    reader = threading.Thread(target=lambda: follower.extend(
        p.event for p in a.runs.join_stream(thread_id, run["run_id"])))
    reader.start()
    time.sleep(1.5)
    replicas[1].kill()
    killed = time.monotonic()
    outcome = a.runs.join(thread_id, run["run_id"])
    settled_s = time.monotonic() - killed
    assert outcome["__error__"]["error"] == "RunLost"
    assert settled_s < 4 * LEASE_S + 5, f"settled after {settled_s:.1f} s"
    reader.join(timeout=30)
    assert follower[0] == "metadata" and follower[-2:] == ["error", "end"]
    assert a.threads.get(thread_id)["status"] == "idle"
    after = a.runs.wait(thread_id, "slow", input={"ticks": 1, "seconds": 0.1})
    assert after["done"] >= 2, "the thread lost the checkpoints of its earlier runs"
