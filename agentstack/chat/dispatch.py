"""One chat path for every caller: a chat request becomes a plan, a plan becomes events.

The HTTP route (`/v1/chat/completions`) and graph nodes (`RoleChatModel` in-process) both
call `plan_chat` and `chat_events`; the route renders the events as an OpenAI response
or SSE chunks, the chat model as LangChain message chunks. What serves a request is
decided here, from its `model`:

    a role or the base model   one engine request under that role's adapter
    `auto`                     the learned gate picks the role(s) and think or direct
    `tool-calling`             selector, then arguments per chosen function; when no
                               function applies, the base model answers with the tools

Every check that can refuse a request runs in `plan_chat`, before anything is generated.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentstack.chat.requests import (
    ChatCompletionRequest,
    ChatMessage,
    NamedToolChoice,
    SamplingFields,
    Tool,
    ToolCall,
)
from agentstack.chat.template import (
    forced_call_schema,
    may_become_tool_call,
    parse_reply,
    render_messages,
)
from agentstack.chat.tool_prompts import plain_turns
from agentstack.chat.tool_roles import ARGUMENTS_ROLE, SELECTOR_ROLE, select_and_fill
from agentstack.chat.tool_shortlist import configured_size
from agentstack.errors import InvalidRequest, NotFound
from agentstack.roles import ReasoningPath, Role
from agentstack.service import AUTO_MODEL, Service

if TYPE_CHECKING:
    from vllm import SamplingParams
    from vllm.outputs import RequestOutput

    from routers.gate import RouteDecision

TOOL_CALLING_MODEL = "tool-calling"
ROUTE_HEADER = "x-agentstack-route"
"""The response header that carries the gate's decision for `model: auto`."""


@dataclass(frozen=True, slots=True)
class TokenUsage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# Events, in the order a request yields them: Started once, deltas, Finished once.


@dataclass(frozen=True, slots=True)
class Started:
    """The engine produced its first output: a stream's first chunk leaves now, so time to
    first token means the same thing here as against vLLM. `route` is the gate's decision
    for `model: auto` (what the `x-agentstack-route` header carries), so graph nodes see
    it too."""

    request_id: str
    route: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallsDelta:
    calls: list[ToolCall]


@dataclass(frozen=True, slots=True)
class Finished:
    reason: str | None
    usage: TokenUsage


ChatEvent = Started | TextDelta | ReasoningDelta | ToolCallsDelta | Finished


# Plans


@dataclass(frozen=True, slots=True)
class Generation:
    """One engine request, and how to read its text back (tool calls, reasoning)."""

    role: Role
    prompt_ids: list[int]
    sampling: SamplingParams
    tools: list[Tool] | None
    forced: bool
    think: bool


@dataclass(frozen=True, slots=True)
class ReadyToolCalls:
    """The tool-calling workflow already ran; its calls are the whole answer."""

    calls: list[ToolCall]
    usage: TokenUsage


@dataclass(frozen=True, slots=True)
class ChatPlan:
    request_id: str
    model: str
    """The `model` the caller asked for, echoed in the response."""
    work: Generation | ReadyToolCalls
    route: RouteDecision | None = None
    """The gate's decision, for `model: auto`."""


def resolve_model(service: Service, name: str) -> Role:
    """The role a request's `model` names (`auto` and `tool-calling` are not roles)."""
    if name == AUTO_MODEL:
        raise InvalidRequest(
            "model `auto` needs the learned gate, which is not enabled on this server; "
            f"name a role instead: {', '.join(service.model_names())}",
            param="model",
        )
    return service.resolve(name)


def tool_calling_available(service: Service) -> bool:
    return {SELECTOR_ROLE, ARGUMENTS_ROLE} <= set(service.roles)


def prepare_sampling(
    service: Service,
    role: Role,
    body: SamplingFields,
    prompt_ids: list[int],
    *,
    requested_max: int | None,
    structured_schema: dict[str, Any] | None = None,
) -> SamplingParams:
    """The engine's sampling parameters: the request's values over the role's defaults,
    refused when the prompt and `max_tokens` do not fit the context."""
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


def _wants_thinking(role: Role, body: ChatCompletionRequest) -> bool:
    """The request's `chat_template_kwargs.enable_thinking` wins; otherwise the role's policy."""
    kwargs = body.chat_template_kwargs or {}
    if "enable_thinking" in kwargs:
        return bool(kwargs["enable_thinking"])
    return role.spec.reasoning is ReasoningPath.THINK


def _generation(service: Service, role: Role, body: ChatCompletionRequest) -> Generation:
    assert service.engine is not None
    tools = body.tools if body.tool_choice != "none" else None
    if body.tool_choice not in (None, "none", "auto") and not body.tools:
        raise InvalidRequest("tool_choice needs tools", param="tool_choice")
    schema = forced_call_schema(tools, body.tool_choice) if tools else None
    if tools and schema is None and body.tool_choice not in (None, "auto"):
        raise InvalidRequest("tool_choice names a function that is not in tools", param="tool_choice")
    think = _wants_thinking(role, body)
    messages = render_messages(body.messages, system_prompt=role.spec.system_prompt, tools=tools, think=think)
    prompt_ids = service.engine.chat_prompt(messages)
    sampling = prepare_sampling(service, role, body, prompt_ids, requested_max=body.token_limit,
                                structured_schema=schema)
    return Generation(role=role, prompt_ids=prompt_ids, sampling=sampling, tools=tools,
                      forced=schema is not None, think=think)


def conversation_turns(messages: list[ChatMessage]) -> list[dict[str, str]]:
    """The conversation as the tool roles and the gate read it (see `plain_turns`)."""
    return plain_turns([m.model_dump(exclude_none=True) for m in messages])


def tool_dicts(tools: list[Tool] | None) -> list[dict[str, Any]] | None:
    return [t.model_dump(exclude_none=True) for t in tools] if tools else None


async def _tool_calling(service: Service, body: ChatCompletionRequest) -> Generation | ReadyToolCalls:
    if not tool_calling_available(service):
        raise NotFound(f"model `{TOOL_CALLING_MODEL}` needs the roles {SELECTOR_ROLE} and {ARGUMENTS_ROLE}",
                       param="model")
    if not body.tools or body.tool_choice == "none":
        raise InvalidRequest(f"model `{TOOL_CALLING_MODEL}` needs `tools`", param="tools")
    named = body.tool_choice.function.name if isinstance(body.tool_choice, NamedToolChoice) else None
    if named is not None and named not in {t.function.name for t in body.tools}:
        raise InvalidRequest("tool_choice names a function that is not in tools", param="tool_choice")
    outcome = await select_and_fill(service, conversation_turns(body.messages), tool_dicts(body.tools) or [],
                                    named=named, shortlist=configured_size(service.settings.tool_shortlist_size))
    if outcome.calls:
        return ReadyToolCalls(outcome.openai_tool_calls(),
                              TokenUsage(outcome.prompt_tokens, outcome.generated_tokens))
    base = service.resolve(service.base_name)
    if body.tool_choice in (None, "auto"):
        # The selector found no function that applies: that is the decision, so the base
        # model answers in words, without the tools in its prompt (nor call markup to copy).
        return _generation(service, base, body.model_copy(update={"tools": None, "tool_choice": None}))
    # `required` or a named function: a call the base model writes under guided decoding.
    return _generation(service, base, body)


async def _routed(service: Service, body: ChatCompletionRequest) -> tuple[RouteDecision, Generation]:
    """The gate's decision, then one generation under the chosen role set and path, with the
    prompt and token budget the gate's measurements used."""
    from routers.prompt import max_tokens_for, route_messages
    from routers.serving import decide

    router = service.router
    assert router is not None and service.engine is not None
    tools = body.tools if body.tool_choice != "none" else None
    turns = conversation_turns(body.messages)
    decision = await decide(router, turns, tool_dicts(body.tools))
    service.metrics.route_decisions.labels("+".join(decision.roles), decision.path).inc()
    role = await router.resolver.role_for(service, decision.roles)
    think = decision.path == "think"
    prompt_ids = service.engine.chat_prompt(route_messages(turns, tool_dicts(tools), think=think))
    greedy = role.spec.model_copy(update={"sampling": role.spec.sampling.model_copy(update={"temperature": 0.0})})
    sampling = prepare_sampling(service, Role(spec=greedy, adapter=role.adapter, origin=role.origin), body,
                                prompt_ids, requested_max=body.token_limit or max_tokens_for(decision.path))
    return decision, Generation(role=role, prompt_ids=prompt_ids, sampling=sampling, tools=tools,
                                forced=False, think=think)


async def plan_chat(service: Service, body: ChatCompletionRequest) -> ChatPlan:
    """What will serve this request, checked: every refusal is raised here.

    Raises:
        InvalidRequest, NotFound, Forbidden: the request cannot be served as asked.
    """
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    if body.model == AUTO_MODEL and service.router is not None:
        decision, generation = await _routed(service, body)
        return ChatPlan(request_id, body.model, generation, route=decision)
    if body.model == TOOL_CALLING_MODEL:
        return ChatPlan(request_id, body.model, await _tool_calling(service, body))
    return ChatPlan(request_id, body.model, _generation(service, resolve_model(service, body.model), body))


def usage_of(final: RequestOutput) -> TokenUsage:
    """Token counts of a finished engine request."""
    return TokenUsage(prompt_tokens=len(final.prompt_token_ids or ()),
                      completion_tokens=len(final.outputs[0].token_ids),
                      cached_tokens=final.num_cached_tokens or 0)


async def chat_events(service: Service, plan: ChatPlan, *, incremental: bool) -> AsyncIterator[ChatEvent]:
    """The answer as events. ``incremental`` sends text as it is generated; with tools, text
    that may still become a tool call is held back until it is known, then sent as one
    `ToolCallsDelta`. Otherwise the whole reply is parsed once at the end."""
    work = plan.work
    started = Started(plan.request_id, plan.route.as_dict() if plan.route is not None else None)
    if isinstance(work, ReadyToolCalls):
        yield started
        yield ToolCallsDelta(work.calls)
        yield Finished("tool_calls", work.usage)
        return
    hold = not incremental or work.forced or work.think
    sent = 0
    final: RequestOutput | None = None
    async for output in service.stream(work.role, work.prompt_ids, work.sampling, request_id=plan.request_id):
        if final is None:
            yield started
        final = output
        text = output.outputs[0].text
        if hold or (work.tools and may_become_tool_call(text)):
            continue
        if len(text) > sent:
            yield TextDelta(text[sent:])
            sent = len(text)
    assert final is not None
    completion = final.outputs[0]
    text = completion.text
    finish = completion.finish_reason
    if hold or (work.tools and may_become_tool_call(text)):
        reply = parse_reply(text[sent:], tools=work.tools, forced=work.forced, think=work.think)
        if reply.reasoning:
            yield ReasoningDelta(reply.reasoning)
        if reply.content:
            yield TextDelta(reply.content)
        if reply.tool_calls:
            finish = "tool_calls"
            yield ToolCallsDelta(reply.tool_calls)
    elif len(text) > sent:
        yield TextDelta(text[sent:])
    yield Finished(finish, usage_of(final))
