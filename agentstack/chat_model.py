"""Roles as LangChain chat models, so LangGraph nodes call them like any chat model.

`RoleChatModel(role="planner")` talks to one role, `auto` (the gate) or `tool-calling`
either on the engine of the process it runs in — the server binds its service to each
graph run with `bind_service`, so graph nodes run on the shared backbone without HTTP —
or, with
`base_url`, on a remote agentstack server through its OpenAI-compatible endpoint. The
in-process path calls the chat core (`agentstack.chat.dispatch`) the HTTP route calls,
so a node gets exactly what an HTTP client gets; the remote path reads the same events
back from the SSE stream. One converter turns events into `AIMessageChunk`s: content,
tool-call chunks, reasoning and token usage.
"""

from __future__ import annotations

import asyncio
import json
import queue
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from httpx_sse import aconnect_sse, connect_sse
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_openai_messages
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError

from agentstack.chat.dispatch import (
    ROUTE_HEADER,
    ChatEvent,
    Finished,
    ReasoningDelta,
    Started,
    TextDelta,
    TokenUsage,
    ToolCallsDelta,
    chat_events,
    plan_chat,
)
from agentstack.chat.requests import ChatCompletionRequest, ToolCall, ToolCallFunction
from agentstack.errors import AgentstackError

if TYPE_CHECKING:
    from agentstack.service import Service

__all__ = ["ROUTE_METADATA_KEY", "ChatModelError", "RoleChatModel", "bind_service"]

ROUTE_METADATA_KEY = "agentstack_route"
"""Where a reply's `response_metadata` holds the gate's decision (`model: auto`)."""


class ChatModelError(RuntimeError):
    """A role could not answer: the server refused the request or generation failed."""


class EventSource(Protocol):
    """Where a chat request goes: yields the chat core's events."""

    def astream(self, payload: dict[str, Any]) -> AsyncIterator[ChatEvent]: ...

    def stream(self, payload: dict[str, Any]) -> Iterator[ChatEvent]: ...


@dataclass(slots=True)
class _ChunkReader:
    """OpenAI `chat.completion.chunk`s of a remote server back into events; the finish
    reason and usage arrive on separate chunks, so `Finished` comes at the end."""

    route: dict[str, Any] | None = None
    """The `x-agentstack-route` header of the response (`model: auto`)."""
    started: bool = False
    finish_reason: str | None = None
    usage: TokenUsage | None = None

    def events(self, data: str) -> list[ChatEvent]:
        """The events of one SSE message's data."""
        if not data or data == "[DONE]":
            return []
        chunk: dict[str, Any] = json.loads(data)
        if "error" in chunk:
            raise ChatModelError(str(chunk["error"].get("message", chunk["error"])))
        if chunk.get("usage"):
            u = chunk["usage"]
            self.usage = TokenUsage(u["prompt_tokens"], u["completion_tokens"],
                                    (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0))
        events: list[ChatEvent] = []
        if not self.started:
            self.started = True
            events.append(Started(chunk.get("id", ""), self.route))
        if not chunk.get("choices"):
            return events
        choice = chunk["choices"][0]
        self.finish_reason = choice.get("finish_reason") or self.finish_reason
        delta = choice.get("delta") or {}
        if delta.get("reasoning"):
            events.append(ReasoningDelta(delta["reasoning"]))
        if delta.get("content"):
            events.append(TextDelta(delta["content"]))
        if delta.get("tool_calls"):
            events.append(ToolCallsDelta([
                ToolCall(id=c.get("id") or "", function=ToolCallFunction(
                    name=(c.get("function") or {}).get("name") or "",
                    arguments=(c.get("function") or {}).get("arguments") or ""))
                for c in delta["tool_calls"]
            ]))
        return events

    def finished(self) -> Finished:
        return Finished(self.finish_reason, self.usage or TokenUsage(0, 0))


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
        return f"{response.status_code}: {error.get('message', response.text)}"
    except ValueError:
        return f"{response.status_code}: {response.text[:500]}"


def _route_header(response: httpx.Response) -> dict[str, Any] | None:
    header = response.headers.get(ROUTE_HEADER)
    return json.loads(header) if header else None


@dataclass
class LocalSource:
    """The in-process engine, through the chat core the HTTP route uses."""

    service: Service
    loop: asyncio.AbstractEventLoop

    async def astream(self, payload: dict[str, Any]) -> AsyncIterator[ChatEvent]:
        try:
            body = ChatCompletionRequest.model_validate(payload)
            plan = await plan_chat(self.service, body)
        except ValidationError as e:
            raise ChatModelError(f"400: {e}") from e
        except AgentstackError as e:
            raise ChatModelError(f"{e.status}: {e.message}") from e
        async for event in chat_events(self.service, plan, incremental=True):
            yield event

    def stream(self, payload: dict[str, Any]) -> Iterator[ChatEvent]:
        """Sync callers (sync graph nodes run in worker threads) borrow the service's loop."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            raise ChatModelError("sync invoke() inside the server's event loop would block it; use ainvoke()")
        items: queue.Queue[tuple[str, Any]] = queue.Queue()

        async def pump() -> None:
            try:
                async for event in self.astream(payload):
                    items.put(("event", event))
                items.put(("end", None))
            except BaseException as e:  # handed to the consuming thread, which re-raises it
                items.put(("error", e))

        future = asyncio.run_coroutine_threadsafe(pump(), self.loop)
        try:
            while True:
                kind, item = items.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise item
                yield item
        finally:
            future.cancel()


@dataclass
class RemoteSource:
    """A remote agentstack server's `/v1/chat/completions`, streamed."""

    base_url: str
    api_key: str | None = None
    timeout_s: float = 600.0
    _headers: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    @property
    def url(self) -> str:
        return f"{self.base_url}/v1/chat/completions"

    async def astream(self, payload: dict[str, Any]) -> AsyncIterator[ChatEvent]:
        reader = _ChunkReader()
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            async with aconnect_sse(client, "POST", self.url, json=payload, headers=self._headers) as source:
                if source.response.status_code >= 400:
                    await source.response.aread()
                    raise ChatModelError(_error_message(source.response))
                reader.route = _route_header(source.response)
                async for message in source.aiter_sse():
                    for event in reader.events(message.data):
                        yield event
        yield reader.finished()

    def stream(self, payload: dict[str, Any]) -> Iterator[ChatEvent]:
        reader = _ChunkReader()
        with httpx.Client(timeout=self.timeout_s) as client:
            with connect_sse(client, "POST", self.url, json=payload, headers=self._headers) as source:
                if source.response.status_code >= 400:
                    source.response.read()
                    raise ChatModelError(_error_message(source.response))
                reader.route = _route_header(source.response)
                for message in source.iter_sse():
                    yield from reader.events(message.data)
        yield reader.finished()


_local: ContextVar[LocalSource | None] = ContextVar("agentstack_local_source", default=None)


def bind_service(service: Service, loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Make `service` the engine that `RoleChatModel`s without `base_url` use, in the
    current context: the workflow manager binds it in each run's task, so the graph's
    nodes (and the worker threads LangGraph runs sync nodes in) see it, and nothing else
    does. `loop` is the loop the service runs on."""
    _local.set(LocalSource(service, loop or asyncio.get_running_loop()))


@dataclass(slots=True)
class _ChunkConverter:
    """Events to `ChatGenerationChunk`s; finish reason and usage go on one last chunk."""

    role: str
    response_id: str | None = None
    route: dict[str, Any] | None = None
    finished: Finished | None = None

    def convert(self, event: ChatEvent) -> ChatGenerationChunk | None:
        content, calls, extra = "", [], {}
        if isinstance(event, Started):
            self.response_id = event.request_id
            self.route = event.route
            return None
        if isinstance(event, Finished):
            self.finished = event
            return None
        if isinstance(event, TextDelta):
            content = event.text
        elif isinstance(event, ReasoningDelta):
            extra = {"reasoning_content": event.text}
        else:
            calls = [tool_call_chunk(name=c.function.name, args=c.function.arguments, id=c.id, index=i)
                     for i, c in enumerate(event.calls)]
        message = AIMessageChunk(content=content, tool_call_chunks=calls, additional_kwargs=extra,
                                 id=self.response_id)
        return ChatGenerationChunk(message=message, text=content)

    def last(self) -> ChatGenerationChunk:
        usage = None
        if self.finished is not None:
            u = self.finished.usage
            usage = {"input_tokens": u.prompt_tokens, "output_tokens": u.completion_tokens,
                     "total_tokens": u.total_tokens, "input_token_details": {"cache_read": u.cached_tokens}}
        message = AIMessageChunk(
            content="",
            id=self.response_id,
            usage_metadata=usage,  # type: ignore[arg-type]
            response_metadata=self._metadata(),
            chunk_position="last",
        )
        return ChatGenerationChunk(message=message, text="")

    def _metadata(self) -> dict[str, Any]:
        """Finish reason, role and, for `auto`, the gate's decision as the HTTP header has it."""
        metadata: dict[str, Any] = {"finish_reason": self.finished.reason if self.finished else None,
                                    "model_name": self.role, "model_provider": "agentstack"}
        if self.route is not None:
            metadata[ROUTE_METADATA_KEY] = self.route
        return metadata


class RoleChatModel(BaseChatModel):
    """One agentstack role as a LangChain chat model (streaming, tool binding).

    Args:
        role: role name from the roles file, the base model's name, `auto` (the gate) or
            `tool-calling` (selector, then arguments).
        base_url: a remote agentstack server; unset uses the engine bound in this process.
        api_key: sent as a bearer token to a remote server.
        temperature, max_tokens, stop: override the role's sampling defaults.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    role: str = "assistant"
    base_url: str | None = None
    api_key: str | None = Field(default=None, repr=False)
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    timeout_s: float = 600.0
    _remote: RemoteSource | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "agentstack"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"role": self.role, "base_url": self.base_url}

    def _source(self) -> EventSource:
        if self.base_url is not None:
            if self._remote is None:
                self._remote = RemoteSource(self.base_url, self.api_key, self.timeout_s)
            return self._remote
        local = _local.get()
        if local is None:
            raise ChatModelError(
                "no agentstack engine in this process: run the graph on an agentstack server, "
                "or pass base_url to RoleChatModel"
            )
        return local

    def _payload(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.role,
            "messages": convert_to_openai_messages(messages),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stop": stop or self.stop,
            **kwargs,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        return {k: v for k, v in payload.items() if v is not None}

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        converter = _ChunkConverter(self.role)
        for event in self._source().stream(self._payload(messages, stop, kwargs)):
            generation = converter.convert(event)
            if generation is not None:
                if run_manager:
                    run_manager.on_llm_new_token(generation.text, chunk=generation)
                yield generation
        yield converter.last()

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        converter = _ChunkConverter(self.role)
        async for event in self._source().astream(self._payload(messages, stop, kwargs)):
            generation = converter.convert(event)
            if generation is not None:
                if run_manager:
                    await run_manager.on_llm_new_token(generation.text, chunk=generation)
                yield generation
        yield converter.last()

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind OpenAI-format tools; `tool_choice` takes "auto", "none", "required"/"any",
        True (= required) or a tool name."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        choice: str | dict[str, Any] | None
        if tool_choice is True or tool_choice == "any":
            choice = "required"
        elif tool_choice in (None, False):
            choice = None
        elif tool_choice in ("auto", "none", "required"):
            choice = str(tool_choice)
        else:
            choice = {"type": "function", "function": {"name": tool_choice}}
        if choice is not None:
            kwargs["tool_choice"] = choice
        return super().bind(tools=formatted, **kwargs)

