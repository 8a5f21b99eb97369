"""`model: "tool-calling"` on `/v1/chat/completions`: the selector → arguments workflow
behind the ordinary OpenAI request shape. The caller sends `tools` as usual and gets
`tool_calls` back; when the selector says no function applies, the base model answers
the conversation without tools, as a plain chat request would be answered."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from agentstack.api.errors import InvalidRequest, NotFound
from agentstack.api.sse import chat_chunk, sse, usage_chunk
from agentstack.api.schemas import AssistantMessage, ChatChoice, ChatCompletionRequest, ChatCompletionResponse, Usage
from agentstack.service import PromptTooLong, Service
from agentstack.tool_agent import ARGUMENTS_ROLE, SELECTOR_ROLE, ToolCallOutcome, select_and_fill

TOOL_WORKFLOW_MODEL = "tool-calling"


def tool_workflow_available(service: Service) -> bool:
    return {SELECTOR_ROLE, ARGUMENTS_ROLE} <= set(service.roles)


def plain_messages(body: ChatCompletionRequest) -> list[dict[str, str]]:
    return [{"role": "user" if m.role == "tool" else m.role, "content": m.text()} for m in body.messages]


async def run_tool_workflow(service: Service, body: ChatCompletionRequest) -> ToolCallOutcome | None:
    """The workflow's calls, or None when no function applies (the caller answers plainly)."""
    if not tool_workflow_available(service):
        raise NotFound(f"model `{TOOL_WORKFLOW_MODEL}` needs the roles {SELECTOR_ROLE} and {ARGUMENTS_ROLE}",
                       param="model")
    if not body.tools or body.tool_choice == "none":
        raise InvalidRequest(f"model `{TOOL_WORKFLOW_MODEL}` needs `tools`", param="tools")
    tools = [t.model_dump(exclude_none=True) for t in body.tools]
    try:
        outcome = await select_and_fill(service, plain_messages(body), tools)
    except PromptTooLong as e:
        raise InvalidRequest(f"the conversation and tools exceed the context: {e}", param="messages") from e
    return outcome if outcome.calls else None


def tool_calls_response(outcome: ToolCallOutcome, body: ChatCompletionRequest) -> JSONResponse | StreamingResponse:
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    usage = Usage(prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.generated_tokens,
                  total_tokens=outcome.prompt_tokens + outcome.generated_tokens)
    calls = outcome.openai_tool_calls()
    if not body.stream:
        response = ChatCompletionResponse(
            id=request_id, model=body.model, usage=usage,
            choices=[ChatChoice(message=AssistantMessage(content=None, tool_calls=calls), finish_reason="tool_calls")],
        )
        return JSONResponse(response.model_dump(exclude_none=False))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(_events(request_id, body.model, outcome, usage, include_usage),
                             media_type="text/event-stream")


async def _events(
    request_id: str, model: str, outcome: ToolCallOutcome, usage: Usage, include_usage: bool
) -> AsyncIterator[str]:
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return chat_chunk(request_id, created, model, delta, finish)

    yield sse(chunk({"role": "assistant", "content": None}))
    yield sse(chunk({"tool_calls": [
        {"index": i, "id": call.id, "type": "function",
         "function": {"name": call.function.name, "arguments": call.function.arguments}}
        for i, call in enumerate(outcome.openai_tool_calls())
    ]}))
    yield sse(chunk({}, "tool_calls"))
    if include_usage:
        yield sse(usage_chunk(request_id, created, model, usage.model_dump()))
    yield sse("[DONE]")
