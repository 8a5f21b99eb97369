"""The OpenAI chat-completions request, as the chat core reads it.

The HTTP API validates request bodies with these models and in-process callers
(`RoleChatModel` in graph nodes) build the same ones, so both reach the chat core
(`agentstack.chat.dispatch`) with input checked by one set of rules. Requests are
strict about types and ranges, and ignore unknown fields the way OpenAI clients expect a
server to (SDKs add fields over time).
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_NESTING = 64
"""Deepest JSON nesting a request may have: far beyond any real body (tool schemas, graph
state), far below what would exhaust the stack of code that walks it."""


def check_json(value: Any, depth: int = 0) -> None:
    """Refuse what JSON can carry but the server cannot keep: nesting past `MAX_NESTING`,
    and text that is not valid Unicode (a lone surrogate such as ``"\\ud800"`` decodes
    from JSON but cannot be encoded again for the tokenizer or for Redis)."""
    if depth > MAX_NESTING:
        raise ValueError(f"the body is nested deeper than {MAX_NESTING} levels")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text must be valid Unicode (it holds a lone surrogate such as \\ud800)") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_json(key, depth + 1)
            check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_json(item, depth + 1)


class Request(BaseModel):
    """A request body: unknown fields ignored, JSON that cannot be kept refused."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _keepable_json(cls, data: Any) -> Any:
        check_json(data)
        return data


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


class SamplingFields(Request):
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


SPOKEN_ROLES = ["developer", "user", "assistant", "tool"]
HAS_USER_CONTENT = {"anyOf": [
    {"required": ["role", "content"], "properties": {
        "role": {"enum": SPOKEN_ROLES},
        "content": {"anyOf": [{"type": "string", "minLength": 1},
                              {"type": "array", "contains": {"required": ["text"],
                                                             "properties": {"text": {"minLength": 1}}}}]}}},
    {"required": ["role", "tool_calls"], "properties": {
        "role": {"enum": SPOKEN_ROLES}, "tool_calls": {"type": "array", "minItems": 1}}},
]}
"""What `_has_user_content` checks, in JSON Schema: a message not from the system with text or
tool calls. The documented schema of `messages` requires one (`contains`)."""


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, json_schema_extra={"contains": HAS_USER_CONTENT})
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
