"""Checkpoints live in Redis: a thread paused by `interrupt()` survives a server restart
and a later run with a resume command continues it."""

from __future__ import annotations

import pytest
from langgraph.pregel.remote import RemoteGraph
from langgraph.types import Command
from langgraph_sdk import get_sync_client

from tests.conftest import LiveServer

pytestmark = pytest.mark.slow


def test_interrupted_user_graph_resumes_after_a_restart(workflow_server: LiveServer) -> None:
    client = get_sync_client(url=workflow_server.base_url)
    thread = client.threads.create()
    paused = client.runs.wait(thread["thread_id"], "review", input={"topic": "tea"})
    draft = paused["draft"]
    assert draft and paused["__interrupt__"][0]["value"] == {"draft": draft}
    assert client.threads.get(thread["thread_id"])["status"] == "interrupted"

    workflow_server.stop()
    workflow_server.start()

    client = get_sync_client(url=workflow_server.base_url)
    state = client.threads.get_state(thread["thread_id"])
    assert state["next"] == ["review"] and state["values"]["draft"] == draft
    assert state["interrupts"][0]["value"] == {"draft": draft}
    remote = RemoteGraph("review", url=workflow_server.base_url)
    config = {"configurable": {"thread_id": thread["thread_id"]}}
    final = remote.invoke(Command(resume={"edited": "Tea is a drink."}), config)
    assert final == {"topic": "tea", "draft": draft, "final": "Tea is a drink."}
    assert client.threads.get(thread["thread_id"])["status"] == "idle"
    assert remote.get_state(config).next == ()

