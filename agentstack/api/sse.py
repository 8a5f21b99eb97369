"""Server-sent events through sse-starlette, in the shapes the OpenAI SDK and
langgraph-sdk read: `data:` JSON chunks ending with `data: [DONE]` for chat and
completions; `event:`/`data:`/`id:` events for graph runs (the id is what a client sends
back as `Last-Event-ID`). Lines end in `\\n`, as vLLM's and LangGraph's servers write them;
the response keeps the connection alive with comment pings and stops the generator when
the client leaves (aborting its engine request)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Mapping
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent

DONE = ServerSentEvent(data="[DONE]", sep="\n")


def data_event(payload: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(payload, separators=(",", ":")), sep="\n")


def sse_response(events: AsyncIterable[ServerSentEvent], *, drain_s: float,
                 headers: Mapping[str, str] | None = None) -> EventSourceResponse:
    """``drain_s``: on SIGTERM a stream in flight may run this long to its end (the
    server's shutdown grace) before it is cut."""
    return EventSourceResponse(events, headers=headers, sep="\n", shutdown_grace_period=drain_s)


def chat_chunk(request_id: str, created: int, model: str, delta: dict[str, Any],
               finish: str | None = None) -> dict[str, Any]:
    return {
        "id": request_id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def usage_chunk(request_id: str, created: int, model: str, usage: dict[str, Any]) -> dict[str, Any]:
    return {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [], "usage": usage}
