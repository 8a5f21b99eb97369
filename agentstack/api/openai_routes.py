"""OpenAI-compatible endpoints: chat completions, completions, models."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from agentstack.api.errors import error_body
from agentstack.api.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    ModelCard,
    ModelList,
    RouteRequest,
    RouteResponse,
    TokenizeRequest,
    TokenizeResponse,
    ToolCall,
    Usage,
)
from agentstack.api.security import Caller, GenerationSlot, caller, check_model
from agentstack.api.sse import DONE, chat_chunk, data_event, sse_response, usage_chunk
from agentstack.chat.dispatch import (
    ROUTE_HEADER,
    TOOL_CALLING_MODEL,
    ChatEvent,
    ChatPlan,
    Finished,
    ReasoningDelta,
    Started,
    TextDelta,
    TokenUsage,
    ToolCallsDelta,
    chat_events,
    conversation_turns,
    plan_chat,
    prepare_sampling,
    resolve_model,
    tool_calling_available,
    tool_dicts,
    usage_of,
)
from agentstack.chat.template import render_messages
from agentstack.errors import InvalidRequest
from agentstack.roles import Role
from agentstack.service import AUTO_MODEL, Service

router = APIRouter(dependencies=[Depends(caller)])
logger = logging.getLogger(__name__)
T = TypeVar("T")


def service_of(request: Request) -> Service:
    return request.app.state.service  # type: ignore[no-any-return]


def count_as(request: Request, service: Service, model: str) -> None:
    """Label the request's metrics with the model it asked for, when that model is served
    (a label per unknown name would let clients grow the metrics without bound)."""
    if model in (AUTO_MODEL, TOOL_CALLING_MODEL, *service.model_names()):
        request.state.role = model


# Nobody reads it; 499 is the de-facto "client closed request" status in access logs.
def client_gone() -> JSONResponse:
    return JSONResponse(error_body(499, "ClientClosedRequest", "client disconnected"), status_code=499)


async def run_unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T | None:
    """Run a non-streaming request's work to its end, or cancel it (aborting its engine
    requests) as soon as the client disconnects; returns None in that case."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return None if task.cancelled() else task.result()


async def _last(items: AsyncIterator[T]) -> T | None:
    final = None
    async for item in items:
        final = item
    return final


async def _all(items: AsyncIterator[T]) -> list[T]:
    return [item async for item in items]


async def last_output_unless_disconnected(request: Request, outputs: AsyncIterator[Any]) -> Any | None:
    """The last of a stream's outputs, or None when the client disconnected first."""
    return await run_unless_disconnected(request, _last(outputs))


def _usage(usage: TokenUsage) -> Usage:
    return Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                 total_tokens=usage.total_tokens, prompt_tokens_details={"cached_tokens": usage.cached_tokens})


def _tool_call_deltas(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [{"index": i, "id": call.id, "type": "function",
             "function": {"name": call.function.name, "arguments": call.function.arguments}}
            for i, call in enumerate(calls)]


@router.post("/v1/chat/completions", response_model=None, dependencies=[GenerationSlot])
async def chat_completions(body: ChatCompletionRequest, request: Request,
                           principal: Caller) -> JSONResponse | EventSourceResponse:
    service = service_of(request)
    count_as(request, service, body.model)
    check_model(principal, body.model)
    plan = await plan_chat(service, body)
    headers = {ROUTE_HEADER: plan.route.header()} if plan.route is not None else {}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse_response(_chat_stream(service, plan, include_usage=include_usage),
                            drain_s=service.settings.shutdown_grace_s, headers=headers)
    events = await run_unless_disconnected(request, _all(chat_events(service, plan, incremental=False)))
    if events is None:
        return client_gone()
    return JSONResponse(_chat_response(plan, events).model_dump(exclude_none=False), headers=headers)


def _chat_response(plan: ChatPlan, events: list[ChatEvent]) -> ChatCompletionResponse:
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    calls = [call for e in events if isinstance(e, ToolCallsDelta) for call in e.calls]
    finished = events[-1]
    assert isinstance(finished, Finished)
    message = AssistantMessage(content=text or None, reasoning=reasoning or None, tool_calls=calls)
    return ChatCompletionResponse(id=plan.request_id, model=plan.model, usage=_usage(finished.usage),
                                  choices=[ChatChoice(message=message, finish_reason=finished.reason)])


async def _chat_stream(service: Service, plan: ChatPlan, *, include_usage: bool
                       ) -> AsyncIterator[ServerSentEvent]:
    """SSE chunks as the OpenAI SDK reads them; a failure after the first byte can only be
    reported in the stream."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> ServerSentEvent:
        return data_event(chat_chunk(plan.request_id, created, plan.model, delta, finish))

    try:
        async for event in chat_events(service, plan, incremental=True):
            if isinstance(event, Started):
                yield chunk({"role": "assistant", "content": ""})
            elif isinstance(event, TextDelta):
                yield chunk({"content": event.text})
            elif isinstance(event, ReasoningDelta):
                yield chunk({"reasoning": event.text})
            elif isinstance(event, ToolCallsDelta):
                yield chunk({"tool_calls": _tool_call_deltas(event.calls)})
            else:
                yield chunk({}, event.reason)
                if include_usage:
                    yield data_event(usage_chunk(plan.request_id, created, plan.model,
                                                 _usage(event.usage).model_dump()))
    except Exception:
        logger.exception("generation failed mid-stream")
        yield data_event(error_body(500, "InternalServerError", "generation failed"))
        return
    yield DONE


@router.post("/v1/route")
async def route(body: RouteRequest, request: Request) -> RouteResponse:
    """The learned gate's decision for a chat, explained, without generating."""
    service = service_of(request)
    if service.router is None:
        raise InvalidRequest("the learned gate is not enabled on this server", param="model")
    from routers.serving import decide

    decision = await decide(service.router, conversation_turns(body.messages), tool_dicts(body.tools))
    return RouteResponse.model_validate(decision.as_dict())


@router.post("/v1/completions", response_model=None, dependencies=[GenerationSlot])
async def completions(body: CompletionRequest, request: Request,
                      principal: Caller) -> JSONResponse | EventSourceResponse:
    service = service_of(request)
    count_as(request, service, body.model)
    check_model(principal, body.model)
    role = resolve_model(service, body.model)
    assert service.engine is not None
    prompt_ids = service.engine.text_prompt(body.prompt_text)
    sampling = prepare_sampling(service, role, body, prompt_ids, requested_max=body.max_tokens)
    request_id = f"cmpl-{uuid.uuid4().hex}"
    prefix = body.prompt_text if body.echo else ""

    if body.stream:
        return sse_response(_completion_events(service, role, body.model, prompt_ids, sampling, request_id, prefix),
                            drain_s=service.settings.shutdown_grace_s)
    final = await last_output_unless_disconnected(
        request, service.stream(role, prompt_ids, sampling, request_id=request_id)
    )
    if final is None:
        return client_gone()
    completion = final.outputs[0]
    response = CompletionResponse(
        id=request_id,
        model=body.model,
        choices=[CompletionChoice(text=prefix + completion.text, finish_reason=completion.finish_reason)],
        usage=_usage(usage_of(final)),
    )
    return JSONResponse(response.model_dump())


async def _completion_events(
    service: Service, role: Role, model: str, prompt_ids: list[int], sampling: Any,
    request_id: str, prefix: str,
) -> AsyncIterator[ServerSentEvent]:
    created = int(time.time())
    sent = 0
    pending = prefix

    def chunk(text: str, finish: str | None) -> dict[str, Any]:
        return {"id": request_id, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}

    async for output in service.stream(role, prompt_ids, sampling, request_id=request_id):
        completion = output.outputs[0]
        finish = completion.finish_reason if output.finished else None
        delta = pending + completion.text[sent:]
        pending = ""
        sent = len(completion.text)
        if delta or finish:
            yield data_event(chunk(delta, finish))
    yield DONE


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> TokenizeResponse:
    """The token ids the engine would serve for a prompt (or a chat, with the role's system
    prompt and the model's template), as vLLM's server answers it."""
    service = service_of(request)
    count_as(request, service, body.model or service.base_name)
    role = resolve_model(service, body.model or service.base_name)
    assert service.engine is not None
    if body.messages is not None:
        turns = render_messages(body.messages, system_prompt=role.spec.system_prompt, tools=None, think=False)
        tokens = service.engine.chat_prompt(turns)
    else:
        tokens = list(service.engine.tokenizer(body.prompt, add_special_tokens=body.add_special_tokens)["input_ids"])
    return TokenizeResponse(count=len(tokens), max_model_len=service.settings.max_model_len, tokens=tokens)


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request) -> DetokenizeResponse:
    service = service_of(request)
    count_as(request, service, body.model or service.base_name)
    resolve_model(service, body.model or service.base_name)
    assert service.engine is not None
    vocab = len(service.engine.tokenizer)
    if any(t >= vocab for t in body.tokens):
        raise InvalidRequest(f"token ids must be below the vocabulary size {vocab}", param="tokens")
    return DetokenizeResponse(prompt=service.engine.tokenizer.decode(body.tokens))


@router.get("/v1/models")
async def list_models(request: Request) -> ModelList:
    service = service_of(request)
    cards = [
        ModelCard(id=service.base_name, root=service.base_name,
                  max_model_len=service.settings.max_model_len, description="base model")
    ]
    if tool_calling_available(service):
        cards.append(ModelCard(id=TOOL_CALLING_MODEL, root=TOOL_CALLING_MODEL, parent=service.base_name,
                               max_model_len=service.settings.max_model_len,
                               description="selector, then arguments per chosen function; answers with tool_calls"))
    if service.router is not None:
        cards.append(ModelCard(id=AUTO_MODEL, root=AUTO_MODEL, parent=service.base_name,
                               max_model_len=service.settings.max_model_len,
                               description="learned gate: picks the role(s) and think or direct per request"))
    for role in service.roles.values():
        cards.append(
            ModelCard(
                id=role.name,
                root=str(role.adapter.path.name) if role.adapter else service.base_name,
                parent=service.base_name,
                max_model_len=service.settings.max_model_len,
                description=role.spec.description or None,
            )
        )
    return ModelList(data=cards)
