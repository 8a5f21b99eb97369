"""Request bodies of the LangGraph-Platform-compatible API (the subset `langgraph-sdk`
and `RemoteGraph` send). Unknown fields are ignored, as the SDK adds fields over time
(webhooks, feedback keys, tracing) that this server does not act on."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from agentstack.chat.requests import Request
from agentstack.workflows import RunSpec

StreamMode = Literal[
    "values", "updates", "messages", "messages-tuple", "custom", "events", "debug", "tasks", "checkpoints"
]
ThreadStatus = Literal["idle", "busy", "interrupted", "error"]
SortOrder = Literal["asc", "desc"]


class AssistantSearch(Request):
    metadata: dict[str, Any] | None = None
    graph_id: str | None = None
    name: str | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


class ThreadCreate(Request):
    thread_id: str | None = Field(default=None, min_length=1, max_length=128)
    metadata: dict[str, Any] | None = None
    if_exists: Literal["raise", "do_nothing"] = "raise"


class ThreadPatch(Request):
    metadata: dict[str, Any] = Field(default_factory=dict)


class ThreadSearch(Request):
    metadata: dict[str, Any] | None = None
    values: dict[str, Any] | None = None
    status: ThreadStatus | None = None
    ids: list[str] | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)
    sort_by: Literal["thread_id", "status", "created_at", "updated_at"] = "updated_at"
    sort_order: SortOrder = "desc"


class Checkpoint(Request):
    thread_id: str | None = None
    checkpoint_ns: str = ""
    checkpoint_id: str | None = None
    checkpoint_map: dict[str, Any] | None = None


class StateAtCheckpoint(Request):
    checkpoint: Checkpoint
    subgraphs: bool = False


class StateUpdate(Request):
    values: dict[str, Any] | list[Any] | None = None
    as_node: str | None = None
    checkpoint: Checkpoint | None = None
    checkpoint_id: str | None = None

    def checkpoint_dict(self) -> dict[str, Any] | None:
        checkpoint = self.checkpoint.model_dump(exclude_none=True) if self.checkpoint else {}
        if self.checkpoint_id:
            checkpoint["checkpoint_id"] = self.checkpoint_id
        return checkpoint or None


class HistoryQuery(Request):
    limit: int = Field(default=10, ge=1, le=1000)
    before: Checkpoint | None = None
    metadata: dict[str, Any] | None = None
    checkpoint: Checkpoint | None = None


class CommandBody(Request):
    update: Any = None
    resume: Any = None
    goto: str | dict[str, Any] | list[str | dict[str, Any]] | None = None


class RunCreate(Request):
    assistant_id: str = Field(min_length=1)
    input: Any = None
    command: CommandBody | None = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    stream_mode: StreamMode | list[StreamMode] = "values"
    stream_subgraphs: bool = False
    interrupt_before: Literal["*"] | list[str] | None = None
    interrupt_after: Literal["*"] | list[str] | None = None
    checkpoint: Checkpoint | None = None
    checkpoint_id: str | None = None
    multitask_strategy: Literal["reject", "interrupt", "rollback", "enqueue"] = "reject"
    if_not_exists: Literal["create", "reject"] = "reject"
    on_disconnect: Literal["cancel", "continue"] = "cancel"
    on_completion: Literal["delete", "keep"] | None = None
    durability: Literal["sync", "async", "exit"] | None = None

    def spec(self) -> RunSpec:
        modes = [self.stream_mode] if isinstance(self.stream_mode, str) else list(dict.fromkeys(self.stream_mode))
        return RunSpec(
            assistant_id=self.assistant_id,
            input=self.input,
            command=self.command.model_dump(exclude_none=True) if self.command else None,
            config=self.config,
            context=self.context,
            metadata=self.metadata,
            stream_mode=modes,
            stream_subgraphs=self.stream_subgraphs,
            interrupt_before=self.interrupt_before,
            interrupt_after=self.interrupt_after,
            checkpoint=self.checkpoint.model_dump(exclude_none=True) if self.checkpoint else None,
            checkpoint_id=self.checkpoint_id,
            multitask_strategy=self.multitask_strategy,
            if_not_exists=self.if_not_exists,
            on_completion=self.on_completion,
            durability=self.durability,
        )
