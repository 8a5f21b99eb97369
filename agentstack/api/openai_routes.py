"""OpenAI-compatible endpoints: chat completions, completions, models."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from agentstack.api.errors import InvalidRequest, NotFound, error_body
from agentstack.api.sse import chat_chunk, sse, usage_chunk
from agentstack.api.tool_workflow import (
    TOOL_WORKFLOW_MODEL,
    run_tool_workflow,
    tool_calls_response,
    tool_workflow_available,
)
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
    Tool,
    Usage,
    _SamplingFields,
)
from agentstack.prompting import forced_call_schema, may_become_tool_call, parse_reply, render_messages
from agentstack.roles import ReasoningPath, Role
from agentstack.service import AUTO_MODEL, Service, UnknownRole

router = APIRouter()


def service_of(request: Request) -> Service:
    return request.app.state.service  # type: ignore[no-any-return]


def role_for(service: Service, name: str) -> Role:
    """The role a request's `model` names, as an API error when there is none."""
    if name == AUTO_MODEL:
        raise InvalidRequest(
            "model `auto` needs the learned gate, which is not enabled on this server; "
            f"name a role instead: {', '.join(service.model_names())}",
            param="model",
        )
    try:
        return service.resolve(name)
    except UnknownRole as e:
        raise NotFound(str(e), param="model") from e


def resolve_role(request: Request, name: str) -> Role:
    role = role_for(service_of(request), name)
    request.state.role = role.name
    return role


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    role: Role
    prompt_ids: list[int]
    sampling: Any
    request_id: str


def prepare_sampling(
    service: Service,
    role: Role,
    body: _SamplingFields,
    prompt_ids: list[int],
    *,
    requested_max: int | None,
    structured_schema: dict[str, Any] | None = None,
) -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    settings = service.settings
    if requested_max is not None and requested_max > settings.max_tokens_cap:
        raise InvalidRequest(
            f"max_tokens is {requested_max}, above this server's cap of {settings.max_tokens_cap}",
            param="max_tokens",
        )
    room = settings.max_model_len - len(prompt_ids)
    if room < 1:
        raise InvalidRequest(
            f"This model's maximum context length is {settings.max_model_len} tokens; "
            f"the prompt has {len(prompt_ids)} tokens",
            param="messages",
        )
    max_tokens = requested_max or role.spec.sampling.max_tokens or settings.default_max_tokens
    if requested_max is not None and requested_max > room:
        raise InvalidRequest(
            f"This model's maximum context length is {settings.max_model_len} tokens; "
            f"the prompt has {len(prompt_ids)} and max_tokens asks for {requested_max}",
            param="max_tokens",
        )
    defaults = role.spec.sampling
    return SamplingParams(
        n=1,
        temperature=body.temperature if body.temperature is not None else defaults.temperature,
        top_p=body.top_p if body.top_p is not None else defaults.top_p,
        max_tokens=min(max_tokens, room),
        stop=body.stop_list() or None,
        seed=body.seed,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        ignore_eos=body.ignore_eos,
        structured_outputs=StructuredOutputsParams(json=structured_schema) if structured_schema else None,
    )


def wants_thinking(role: Role, body: ChatCompletionRequest) -> bool:
    """The request's `chat_template_kwargs.enable_thinking` wins; otherwise the role's policy."""
    kwargs = body.chat_template_kwargs or {}
    if "enable_thinking" in kwargs:
        return bool(kwargs["enable_thinking"])
    return role.spec.reasoning is ReasoningPath.THINK


# Nobody reads it; 499 is the de-facto "client closed request" status in access logs.
def client_gone() -> JSONResponse:
    return JSONResponse(error_body(499, "ClientClosedRequest", "client disconnected"), status_code=499)


async def last_output_unless_disconnected(request: Request, outputs: AsyncIterator[Any]) -> Any | None:
    """Run a non-streaming request to its end, or cancel it (aborting the engine request)
    as soon as the client disconnects; returns None in that case."""

    async def last() -> Any:
        final = None
        async for output in outputs:
            final = output
        return final

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    generation = asyncio.ensure_future(last())
    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({generation, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not generation.done():
            generation.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await generation
    return None if generation.cancelled() else generation.result()


def _usage(final: Any) -> Usage:
    """Token counts of a finished engine request (a vLLM `RequestOutput`)."""
    prompt = len(final.prompt_token_ids or ())
    completion = len(final.outputs[0].token_ids)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details={"cached_tokens": final.num_cached_tokens or 0},
    )


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> JSONResponse | StreamingResponse:
    service = service_of(request)
    route_headers: dict[str, str] = {}
    if body.model == AUTO_MODEL and service.router is not None:
        from routers.serving import plan_routed

        decision, plan = await plan_routed(service, body)
        request.state.role = AUTO_MODEL
        route_headers = {"x-agentstack-route": decision.header()}
    elif body.model == TOOL_WORKFLOW_MODEL:
        request.state.role = TOOL_WORKFLOW_MODEL
        outcome = await run_tool_workflow(service, body)
        if outcome is not None:
            return tool_calls_response(outcome, body)
        body = body.model_copy(update={"tools": None, "tool_choice": None})
        plan = plan_chat(service, service.resolve(service.base_name), body)
    else:
        plan = plan_chat(service, resolve_role(request, body.model), body)

    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = chat_events(service, plan, body.model, include_usage=include_usage)
        return StreamingResponse(events, media_type="text/event-stream", headers=route_headers)

    final = await last_output_unless_disconnected(
        request, service.stream(plan.role, plan.prompt_ids, plan.sampling, request_id=plan.request_id)
    )
    if final is None:
        return client_gone()
    completion = final.outputs[0]
    reply = parse_reply(completion.text, tools=plan.tools, forced=plan.forced, think=plan.think)
    finish = "tool_calls" if reply.tool_calls else completion.finish_reason
    response = ChatCompletionResponse(
        id=plan.request_id,
        model=body.model,
        choices=[
            ChatChoice(
                message=AssistantMessage(content=reply.content, reasoning=reply.reasoning, tool_calls=reply.tool_calls),
                finish_reason=finish,
            )
        ],
        usage=_usage(final),
    )
    return JSONResponse(response.model_dump(exclude_none=False), headers=route_headers)


@router.post("/v1/route")
async def route(body: RouteRequest, request: Request) -> RouteResponse:
    """The learned gate's decision for a chat, explained, without generating."""
    service = service_of(request)
    if service.router is None:
        raise InvalidRequest("the learned gate is not enabled on this server", param="model")
    from routers.serving import decide

    decision = await decide(service.router, body.messages, body.tools)
    return RouteResponse.model_validate(decision.as_dict())


@dataclass(frozen=True, slots=True)
class ChatPlan:
    """A validated chat request turned into engine input: shared by the HTTP route and
    the in-process chat model of graph nodes, so both run exactly the same path."""

    role: Role
    prompt_ids: list[int]
    sampling: Any
    request_id: str
    tools: list[Tool] | None
    forced: bool
    think: bool


def plan_chat(service: Service, role: Role, body: ChatCompletionRequest) -> ChatPlan:
    assert service.engine is not None
    tools = body.tools if body.tool_choice != "none" else None
    if body.tool_choice not in (None, "none", "auto") and not body.tools:
        raise InvalidRequest("tool_choice needs tools", param="tool_choice")
    schema = forced_call_schema(tools, body.tool_choice) if tools else None
    if tools and schema is None and body.tool_choice not in (None, "auto"):
        raise InvalidRequest("tool_choice names a function that is not in tools", param="tool_choice")
    think = wants_thinking(role, body)
    messages = render_messages(body.messages, system_prompt=role.spec.system_prompt, tools=tools, think=think)
    prompt_ids = service.engine.chat_prompt(messages)
    sampling = prepare_sampling(
        service, role, body, prompt_ids, requested_max=body.token_limit, structured_schema=schema
    )
    return ChatPlan(role=role, prompt_ids=prompt_ids, sampling=sampling,
                    request_id=f"chatcmpl-{uuid.uuid4().hex}", tools=tools,
                    forced=schema is not None, think=think)


async def chat_events(service: Service, plan: ChatPlan, model: str, *, include_usage: bool) -> AsyncIterator[str]:
    """SSE chunks as the OpenAI SDK expects. With tools, text that may be a tool call is
    held back until it is known, then sent as one `tool_calls` delta."""
    role, prompt_ids, sampling, request_id = plan.role, plan.prompt_ids, plan.sampling, plan.request_id
    tools, forced, think = plan.tools, plan.forced, plan.think
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return chat_chunk(request_id, created, model, delta, finish)

    sent = 0
    hold = forced or think
    final = None
    try:
        async for output in service.stream(role, prompt_ids, sampling, request_id=request_id):
            if final is None:
                # As vLLM does: the first chunk leaves with the first token, so a client's
                # time to first token means the same thing here as against vLLM.
                yield sse(chunk({"role": "assistant", "content": ""}))
            final = output
            text = output.outputs[0].text
            if hold or (tools and may_become_tool_call(text)):
                continue
            if len(text) > sent:
                yield sse(chunk({"content": text[sent:]}))
                sent = len(text)
    except Exception:
        yield sse(error_body(500, "InternalServerError", "generation failed"))
        return
    assert final is not None
    completion = final.outputs[0]
    text = completion.text
    finish = completion.finish_reason
    if hold or (tools and may_become_tool_call(text)):
        reply = parse_reply(text[sent:], tools=tools, forced=forced, think=think)
        if reply.reasoning:
            yield sse(chunk({"reasoning": reply.reasoning}))
        if reply.tool_calls:
            finish = "tool_calls"
            yield sse(chunk({"tool_calls": [
                {"index": i, "id": call.id, "type": "function",
                 "function": {"name": call.function.name, "arguments": call.function.arguments}}
                for i, call in enumerate(reply.tool_calls)
            ]}))
        elif reply.content:
            yield sse(chunk({"content": reply.content}))
    elif len(text) > sent:
        yield sse(chunk({"content": text[sent:]}))
    yield sse(chunk({}, finish))
    if include_usage:
        usage = _usage(final)
        yield sse(usage_chunk(request_id, created, model, usage.model_dump()))
    yield sse("[DONE]")


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request) -> JSONResponse | StreamingResponse:
    service = service_of(request)
    role = resolve_role(request, body.model)
    assert service.engine is not None
    prompt_ids = service.engine.text_prompt(body.prompt_text)
    sampling = prepare_sampling(service, role, body, prompt_ids, requested_max=body.max_tokens)
    request_id = f"cmpl-{uuid.uuid4().hex}"
    prefix = body.prompt_text if body.echo else ""

    if body.stream:
        return StreamingResponse(
            _completion_events(service, role, body.model, prompt_ids, sampling, request_id, prefix),
            media_type="text/event-stream",
        )
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
        usage=_usage(final),
    )
    return JSONResponse(response.model_dump())


async def _completion_events(
    service: Service, role: Role, model: str, prompt_ids: list[int], sampling: Any,
    request_id: str, prefix: str,
) -> AsyncIterator[str]:
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
            yield sse(chunk(delta, finish))
    yield sse("[DONE]")


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> TokenizeResponse:
    """The token ids the engine would serve for a prompt (or a chat, with the role's system
    prompt and the model's template), as vLLM's server answers it."""
    service = service_of(request)
    role = resolve_role(request, body.model or service.base_name)
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
    resolve_role(request, body.model or service.base_name)
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
    if tool_workflow_available(service):
        cards.append(ModelCard(id=TOOL_WORKFLOW_MODEL, root=TOOL_WORKFLOW_MODEL, parent=service.base_name,
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
