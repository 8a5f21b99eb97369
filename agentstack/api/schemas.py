"""Request and response bodies of the OpenAI-compatible API (the subset agentstack serves).

Requests are strict about types and ranges, and ignore unknown fields the way OpenAI
clients expect a server to (SDKs add fields over time).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FunctionDefinition(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class Tool(BaseModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedToolChoiceFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"] = "function"
    function: NamedToolChoiceFunction


class ToolCallFunction(BaseModel):
    name: str
    arguments: str


class ToolCall(BaseModel):
    id: str = Field(default_factory=lambda: f"chatcmpl-tool-{uuid.uuid4().hex[:24]}")
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ContentPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class _SamplingFields(_Request):
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    ignore_eos: bool = Field(default=False, description="vLLM extension: generate max_tokens tokens.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    chat_template_kwargs: dict[str, Any] | None = None

    @field_validator("messages")
    @classmethod
    def _has_user_content(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.role != "system" and (m.text() or m.tool_calls) for m in messages):
            raise ValueError("messages must contain at least one non-empty non-system message")
        return messages

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class RouteRequest(_Request):
    """`POST /v1/route`: what the gate would decide for this chat, without generating."""

    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[Tool] | None = None


class CompletionRequest(_SamplingFields):
    prompt: str | list[str] = Field(min_length=1)
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


class TokenizeRequest(_Request):
    """vLLM's ``/tokenize``: a completion prompt or chat messages, as the engine would see them."""

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


class DetokenizeRequest(_Request):
    model: str | None = None
    tokens: list[Annotated[int, Field(ge=0, lt=2**31)]] = Field(max_length=1_000_000)


class DetokenizeResponse(BaseModel):
    prompt: str


class LoadLoraAdapterRequest(_Request):
    lora_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
    lora_path: str = Field(min_length=1)
    load_inplace: bool = False


class UnloadLoraAdapterRequest(_Request):
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


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
