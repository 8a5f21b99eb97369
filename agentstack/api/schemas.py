"""Request and response bodies of the OpenAI-compatible API (the subset agentstack serves).

Requests are strict about types and ranges, and ignore unknown fields the way OpenAI
clients expect a server to (SDKs add fields over time).
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from agentstack.chat.requests import (  # noqa: F401  (part of the API's schemas)
    ChatCompletionRequest,
    ChatMessage,
    ContentPart,
    FunctionDefinition,
    NamedToolChoice,
    NamedToolChoiceFunction,
    Request,
    SamplingFields,
    StreamOptions,
    Tool,
    ToolCall,
    ToolCallFunction,
)


class RouteRequest(Request):
    """`POST /v1/route`: what the gate would decide for this chat, without generating."""

    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[Tool] | None = None


class CompletionRequest(SamplingFields):
    # The documented schema says what the validator below accepts: one non-empty prompt,
    # as a string or a one-element list.
    prompt: Annotated[str | list[str], WithJsonSchema({"anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": 1},
    ]})] = Field(min_length=1)
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _single_nonempty_prompt(cls, prompt: str | list[str]) -> str | list[str]:
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if len(prompts) != 1:
            raise ValueError("exactly one prompt per request is supported")
        if not prompts[0]:
            raise ValueError("prompt must not be empty")
        return prompt

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class TokenizeRequest(Request):
    """vLLM's ``/tokenize``: a completion prompt or chat messages, as the engine would see them.
    The documented schema says so: exactly one of the two (a null one counts as absent)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"oneOf": [
        {"required": ["prompt"], "properties": {"prompt": {"type": "string"}, "messages": {"type": "null"}}},
        {"required": ["messages"], "properties": {"messages": {"type": "array"}, "prompt": {"type": "null"}}},
    ]})

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    add_special_tokens: bool = True

    @model_validator(mode="after")
    def _one_input(self) -> "TokenizeRequest":
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of `prompt` and `messages`")
        return self


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]


class DetokenizeRequest(Request):
    model: str | None = None
    tokens: list[Annotated[int, Field(ge=0, lt=2**31)]] = Field(max_length=1_000_000)


class DetokenizeResponse(BaseModel):
    prompt: str


class LoadLoraAdapterRequest(Request):
    lora_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
    lora_path: str = Field(min_length=1, max_length=4096, pattern=r"^[^\x00]+$")
    load_inplace: bool = False


class UnloadLoraAdapterRequest(Request):
    lora_name: str = Field(min_length=1)


# Responses


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None
    logprobs: None = None


class _Envelope(BaseModel):
    """Fields every completion response carries; `id` is the engine request id."""

    id: str
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    usage: Usage


class ChatCompletionResponse(_Envelope):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None
    logprobs: None = None


class CompletionResponse(_Envelope):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "agentstack"
    root: str
    parent: str | None = None
    max_model_len: int | None = None
    description: str | None = None


class RouteResponse(BaseModel):
    """The gate's decision: roles (served as their uniform mixture), path and why."""

    object: Literal["route"] = "route"
    roles: list[str]
    weights: list[float]
    path: Literal["think", "direct"]
    role_probs: dict[str, float]
    think_prob: float
    reason: str
    gate_ms: float
    action_probs: dict[str, float] = Field(default_factory=dict, description=(
        "A policy gate's probability per action (`roles|path`); empty for a role-and-think gate."))


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
