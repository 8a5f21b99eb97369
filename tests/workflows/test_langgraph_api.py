"""The official `langgraph-sdk` (async and sync) and `RemoteGraph`, unmodified, against
the live server: the built-in graphs on the real engine's roles, a user's graph from
the registry file, Redis checkpoints, and every client mistake answered with a 4xx."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from langgraph.pregel.remote import RemoteGraph
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import ConflictError, NotFoundError

pytestmark = pytest.mark.slow

BUILTIN = {"tool_agent", "plan_act_reflect"}
USER = {"review", "fragile", "in_process", "slow"}


def last_of_type(messages: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return [m for m in messages if m["type"] == kind][-1]


async def test_assistants_schemas_and_graph(workflow_url: str) -> None:
    client = get_client(url=workflow_url)
    assistants = await client.assistants.search(limit=50)
    assert {a["graph_id"] for a in assistants} == BUILTIN | USER
    by_graph = await client.assistants.get("plan_act_reflect")
    by_id = await client.assistants.get(by_graph["assistant_id"])
    assert by_id == by_graph
    assert [a["graph_id"] for a in await client.assistants.search(graph_id="review")] == ["review"]
    schemas = await client.assistants.get_schemas(by_graph["assistant_id"])
    assert schemas["input_schema"]["required"] == ["task"]
    assert {"messages", "answer", "round"} <= set(schemas["state_schema"]["properties"])
    drawn = await client.assistants.get_graph("tool_agent")
    assert {n["id"] for n in drawn["nodes"]} >= {"select", "arguments", "execute", "answer"}
    assert (await client.http.get("/ok")) == {"ok": True}


async def test_plan_act_reflect_streams_every_mode_from_its_roles(workflow_url: str) -> None:
    client = get_client(url=workflow_url)
    thread = await client.threads.create(metadata={"purpose": "stream-test"})
    nodes, message_nodes, values, custom_or_other = [], set(), [], []
    async for part in client.runs.stream(
        thread["thread_id"], "plan_act_reflect", input={"task": "Name two primary colors.", "max_rounds": 1},
        stream_mode=["updates", "values", "messages-tuple"],
    ):
        if part.event == "updates":
            nodes.extend(part.data)
        elif part.event == "values":
            values.append(part.data)
        elif part.event == "messages":
            chunk, metadata = part.data
            assert chunk["type"] in ("AIMessageChunk", "ai")
            message_nodes.add(metadata["langgraph_node"])
        else:
            custom_or_other.append(part.event)
    assert nodes == ["planner", "actor", "reflector"]
    assert message_nodes == {"planner", "actor", "reflector"}
    assert custom_or_other == ["metadata", "end"]
    final = values[-1]
    assert final["round"] == 1 and final["answer"]
    roles = [m["response_metadata"]["model_name"] for m in final["messages"]]
    assert roles == ["planner", "actor", "reflector"]
    assert all(m["usage_metadata"]["input_tokens"] > 0 for m in final["messages"])

    state = await client.threads.get_state(thread["thread_id"])
    assert state["next"] == [] and state["values"]["answer"] == final["answer"]
    stored = await client.threads.get(thread["thread_id"])
    assert stored["status"] == "idle" and stored["metadata"]["graph_id"] == "plan_act_reflect"
    found = await client.threads.search(metadata={"purpose": "stream-test"})
    assert [t["thread_id"] for t in found] == [thread["thread_id"]]
    history = await client.threads.get_history(thread["thread_id"], limit=20)
    assert history[0]["checkpoint"]["checkpoint_id"] == state["checkpoint"]["checkpoint_id"]
    assert len(history) >= 4


def test_tool_agent_runs_tools_and_returns_errors_to_the_model(workflow_url: str) -> None:
    """Calls are put in as if the arguments role wrote them: the tools run for real, the
    failing one becomes an error result, and the answer role reads both."""
    client = get_sync_client(url=workflow_url)
    thread = client.threads.create(graph_id="tool_agent")
    client.threads.update_state(thread["thread_id"], {"messages": [
        {"role": "user", "content": "What is 12 times 7, and what is 5 km in parsecs?"},
        {"type": "ai", "content": "", "tool_calls": [
            {"name": "calculator", "args": {"expression": "12 * 7"}, "id": "call_calc"},
            {"name": "convert_units", "args": {"value": 5, "from_unit": "km", "to_unit": "parsec"}, "id": "call_bad"},
        ]},
    ]}, as_node="arguments")
    assert client.threads.get_state(thread["thread_id"])["next"] == ["execute"]
    result = client.runs.wait(thread["thread_id"], "tool_agent", input=None)
    tools = {m["tool_call_id"]: m for m in result["messages"] if m["type"] == "tool"}
    assert tools["call_calc"]["content"] == "84" and tools["call_calc"]["status"] == "success"
    assert tools["call_bad"]["status"] == "error" and "parsec" in tools["call_bad"]["content"]
    assert result["messages"][-1]["type"] == "ai" and result["messages"][-1]["content"]
    assert client.threads.get(thread["thread_id"])["status"] == "idle"


def test_a_tool_agent_thread_calls_tools_run_after_run(workflow_url: str) -> None:
    """Each run reads the whole thread, earlier calls and their results included, and goes on
    calling tools: a later run never trips over the ids an earlier run's calls carry. The
    first answer reads its result (later ones may not: the 135M base model copies the
    shape of its earlier answers and does the arithmetic itself, docs/NOTES.md).
    (The questions say "calculate": asked "What is 13 times 8?" the shipped selector may
    answer in words, docs/TOOL_ROLES.md.)"""
    client = get_sync_client(url=workflow_url)
    thread = client.threads.create(graph_id="tool_agent")
    for question in ("Calculate 12 * 7.", "Calculate 13 * 8.", "Calculate 14 * 9."):
        result = client.runs.wait(thread["thread_id"], "tool_agent",
                                  input={"messages": [{"role": "user", "content": question}]})
        last_human = max(i for i, m in enumerate(result["messages"]) if m["type"] == "human")
        turn = result["messages"][last_human:]
        assert turn[0]["content"] == question
        calls = [c for m in turn if m["type"] == "ai" for c in m.get("tool_calls") or []]
        results = {m["tool_call_id"] for m in turn if m["type"] == "tool"}
        assert calls and results == {c["id"] for c in calls}, turn
        assert turn[-1]["type"] == "ai" and turn[-1]["content"]
        if question == "Calculate 12 * 7.":
            assert "84" in turn[-1]["content"], "the answer reads the result"
    assert client.threads.get(thread["thread_id"])["status"] == "idle"


async def test_graph_nodes_call_the_gate_and_the_tool_workflow_in_process(workflow_url: str) -> None:
    client = get_client(url=workflow_url)
    before = httpx.get(f"{workflow_url}/metrics").text
    question = "What is the capital of France?"
    result = await client.runs.wait(None, "in_process", input={"question": question})
    after = httpx.get(f"{workflow_url}/metrics").text
    assert result["answer"].strip() and 0 < result["answer_tokens"] <= 32
    assert _route_decisions(after) == _route_decisions(before) + 1, "the gate decided the node's request"
    over_http = httpx.post(f"{workflow_url}/v1/chat/completions", timeout=120, json={
        "model": "auto", "messages": [{"role": "user", "content": question}], "max_tokens": 32})
    assert over_http.status_code == 200
    http_route = json.loads(over_http.headers["x-agentstack-route"])
    assert _without_timing(result["route"]) == _without_timing(http_route), "node and HTTP routed alike"
    assert [c["name"] for c in result["tool_calls"]] == ["get_weather"]
    assert "paris" in str(result["tool_calls"][0]["args"].get("city", "")).lower()


async def test_a_run_config_lets_the_gate_play_a_plan_act_reflect_step(workflow_url: str) -> None:
    client = get_client(url=workflow_url)
    before = _route_decisions(httpx.get(f"{workflow_url}/metrics").text)
    result = await client.runs.wait(None, "plan_act_reflect", input={"task": "Name one prime number.", "max_rounds": 1},
                                    config={"configurable": {"actor_role": "auto"}})
    after = _route_decisions(httpx.get(f"{workflow_url}/metrics").text)
    assert after == before + 1, "only the actor's request went through the gate"
    by_step = {m["name"]: m for m in result["messages"] if m["type"] == "ai"}
    assert set(by_step) == {"planner", "actor", "reflector"}
    assert by_step["actor"]["response_metadata"]["agentstack_route"]["roles"]
    assert "agentstack_route" not in by_step["planner"]["response_metadata"]


def _without_timing(route: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in route.items() if k != "gate_ms"}


def _route_decisions(metrics: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("agentstack:route_decisions_total"))


async def test_tool_agent_end_to_end_through_remote_graph(workflow_url: str) -> None:
    remote = RemoteGraph("tool_agent", url=workflow_url)
    thread_id = str(uuid.uuid4())
    config = {"configurable": {"thread_id": thread_id}}
    final = await remote.ainvoke({"messages": [{"role": "user", "content": "What is 12 times 7?"}]}, config)
    messages = final["messages"]
    assert messages[0]["type"] == "human" and messages[-1]["type"] == "ai"
    called = [c["name"] for m in messages if m["type"] == "ai" for c in m.get("tool_calls") or []]
    assert set(called) <= {"calculator", "convert_units", "capital_of"}
    assert len([m for m in messages if m["type"] == "tool"]) == len(called)
    snapshot = await remote.aget_state(config)
    assert snapshot.next == () and snapshot.values["messages"] == messages
    assert isinstance(final["selected"], list)


async def test_user_graph_node_error_ends_the_run_and_the_thread_stays_usable(workflow_url: str) -> None:
    client = get_client(url=workflow_url)
    thread = await client.threads.create()
    events = [part async for part in client.runs.stream(
        thread["thread_id"], "fragile", input={"fail": True}, stream_mode="updates")]
    assert [e.event for e in events] == ["metadata", "error", "end"]
    assert events[1].data == {"error": "ValueError", "message": "injected failure in step"}
    runs = await client.runs.list(thread["thread_id"])
    assert runs[0]["status"] == "error"
    assert (await client.threads.get(thread["thread_id"]))["status"] == "error"
    with pytest.raises(Exception, match="injected failure in step"):
        await client.runs.wait(thread["thread_id"], "fragile", input={"fail": True})
    assert await client.runs.wait(thread["thread_id"], "fragile", input={"fail": False}) == {"fail": False, "count": 1}
    assert (await client.threads.get(thread["thread_id"]))["status"] == "idle"
    metrics = httpx.get(f"{workflow_url}/metrics", timeout=10).text
    assert 'agentstack:workflow_runs_total{graph="fragile",status="error"}' in metrics


async def test_background_run_cancel_join_and_multitask(workflow_url: str) -> None:
    client = get_client(url=workflow_url)
    thread = await client.threads.create()
    run = await client.runs.create(thread["thread_id"], "plan_act_reflect",
                                   input={"task": "Write a long story.", "max_rounds": 3})
    with pytest.raises(ConflictError):
        await client.runs.create(thread["thread_id"], "plan_act_reflect", input={"task": "again"})
    await asyncio.sleep(1)
    await client.runs.cancel(thread["thread_id"], run["run_id"], wait=True)
    assert (await client.runs.get(thread["thread_id"], run["run_id"]))["status"] == "interrupted"
    assert (await client.threads.get(thread["thread_id"]))["status"] == "idle"
    joined = await client.runs.join(thread["thread_id"], run["run_id"])
    assert joined["task"] == "Write a long story."
    replayed = [p.event async for p in client.runs.join_stream(thread["thread_id"], run["run_id"])]
    assert replayed[0] == "metadata" and replayed[-1] == "end"
    queue = await client.threads.create()
    enqueued = [await client.runs.create(queue["thread_id"], "fragile", input={"count": start},
                                         multitask_strategy="enqueue") for start in (10, 20)]
    results = [await client.runs.join(queue["thread_id"], r["run_id"]) for r in enqueued]
    assert [r["count"] for r in results] == [11, 21]


async def test_stateless_runs(workflow_url: str) -> None:
    client = get_client(url=workflow_url)
    assert await client.runs.wait(None, "fragile", input={"count": 41}) == {"count": 42, "fail": False}
    events = [p async for p in client.runs.stream(None, "fragile", input={"count": 1},
                                                  stream_mode=["events", "updates", "custom"])]
    names = [p.event for p in events]
    assert names[0] == "metadata" and names[-1] == "end"
    assert "updates" in names and names.count("events") >= 4
    assert any(p.data.get("event") == "on_chain_end" for p in events if p.event == "events")


@pytest.mark.parametrize(("method", "path", "body", "status", "param"), [
    ("get", "/assistants/nobody", None, 404, "assistant_id"),
    ("get", "/threads/nobody", None, 404, "thread_id"),
    ("get", "/threads/nobody/state", None, 404, "thread_id"),
    ("post", "/threads/nobody/runs/wait", {"assistant_id": "fragile"}, 404, "thread_id"),
    ("post", "/runs/wait", {"assistant_id": "nobody"}, 404, "assistant_id"),
    ("post", "/runs/wait", {"assistant_id": "plan_act_reflect", "input": {"tsk": "x"}}, 422, "input.task"),
    ("post", "/runs/wait", {"assistant_id": "plan_act_reflect", "input": {"task": 7}}, 422, "input.task"),
    ("post", "/runs/wait", {"assistant_id": "plan_act_reflect", "input": {"task": "x", "max_rounds": 99}},
     422, "input.max_rounds"),
    ("post", "/runs/wait", {"assistant_id": "tool_agent", "input": {"messages": [{"text": "hi"}]}},
     422, "input.messages"),
    ("post", "/runs/wait", {"assistant_id": "fragile", "input": {"count": 1, "extra": 2}}, 422, "input.extra"),
    ("post", "/runs/stream", {"assistant_id": "fragile", "stream_mode": "nonsense"}, 400, "stream_mode"),
    ("post", "/runs/wait", {"input": {}}, 400, "assistant_id"),
    ("post", "/threads", b"{not json", 400, None),
])
def test_client_mistakes_get_4xx_with_the_field_named(
    workflow_url: str, method: str, path: str, body: Any, status: int, param: str | None
) -> None:
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = httpx.request(method, workflow_url + path, timeout=30, **(kwargs if body is not None else {}))
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == status and "Traceback" not in error["message"]
    if param is not None:
        assert error["param"].startswith(param)


def test_a_state_update_as_an_unknown_node_names_the_nodes(workflow_url: str) -> None:
    client = get_sync_client(url=workflow_url)
    thread = client.threads.create(graph_id="tool_agent")
    response = httpx.post(f"{workflow_url}/threads/{thread['thread_id']}/state", timeout=30,
                          json={"values": {"messages": []}, "as_node": "nobody"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "as_node" and "select" in error["message"]
    assert client.threads.get(thread["thread_id"])["status"] == "idle"


async def test_unknown_run_and_thread_conflicts(workflow_url: str) -> None:
    client = get_client(url=workflow_url)
    thread = await client.threads.create()
    with pytest.raises(NotFoundError):
        await client.runs.get(thread["thread_id"], str(uuid.uuid4()))
    with pytest.raises(ConflictError):
        await client.threads.create(thread_id=thread["thread_id"])
    same = await client.threads.create(thread_id=thread["thread_id"], if_exists="do_nothing")
    assert same["thread_id"] == thread["thread_id"]
    await client.threads.delete(thread["thread_id"])
    with pytest.raises(NotFoundError):
        await client.threads.get(thread["thread_id"])
