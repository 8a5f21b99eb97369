"""`RoleChatModel` against a live server: invoke, stream, usage, tool binding, errors."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage

from agentstack.chat_model import ROUTE_METADATA_KEY, ChatModelError, RoleChatModel
from graphs.tools import calculator


def test_without_an_engine_or_url_it_says_what_to_do() -> None:
    with pytest.raises(ChatModelError, match="base_url"):
        RoleChatModel(role="assistant").invoke("hi")


@pytest.mark.slow
def test_invoke_and_stream_carry_text_usage_and_role(workflow_url: str) -> None:
    model = RoleChatModel(role="assistant", base_url=workflow_url, max_tokens=16)
    reply = model.invoke("What is the capital of France?")
    assert isinstance(reply, AIMessage) and reply.text
    assert reply.usage_metadata is not None
    assert 0 < reply.usage_metadata["output_tokens"] <= 16 and reply.usage_metadata["input_tokens"] > 10
    assert reply.response_metadata["model_name"] == "assistant"
    chunks = list(model.stream("Say hello to the world."))
    assert len(chunks) > 2 and "".join(c.text for c in chunks).strip()
    assert chunks[-1].chunk_position == "last" and chunks[-1].usage_metadata is not None
    assert ROUTE_METADATA_KEY not in reply.response_metadata, "only the gate's replies carry a route"


@pytest.mark.slow
async def test_the_gates_decision_comes_back_in_the_response_metadata(workflow_url: str) -> None:
    model = RoleChatModel(role="auto", base_url=workflow_url, max_tokens=16)
    reply = await model.ainvoke("What is the capital of France?")
    route = reply.response_metadata[ROUTE_METADATA_KEY]
    assert route["roles"] and route["path"] in ("direct", "think")
    assert set(route["roles"]) <= set(route["role_probs"]) and len(route["weights"]) == len(route["roles"])


@pytest.mark.slow
async def test_bound_tools_come_back_as_tool_calls(workflow_url: str) -> None:
    model = RoleChatModel(role="assistant", base_url=workflow_url, max_tokens=64)
    reply = await model.bind_tools([calculator], tool_choice="calculator").ainvoke("What is 6 times 7?")
    assert [c["name"] for c in reply.tool_calls] == ["calculator"]
    assert isinstance(reply.tool_calls[0]["args"]["expression"], str)


@pytest.mark.slow
async def test_unknown_role_is_a_clear_error(workflow_url: str) -> None:
    with pytest.raises(ChatModelError, match="404.*nobody"):
        await RoleChatModel(role="nobody", base_url=workflow_url).ainvoke("hi")
