"""A run's stream: LangGraph's stream parts turned into the SSE events of the LangGraph
API, which the run appends to its `RunLog`.

Event names: `metadata` first, then one per stream part, `<mode>` or `<mode>|<ns>...`
for subgraph parts, then `error` if the run failed, and `end`. Stream modes map onto
LangGraph's: `values`, `updates`, `custom`, `debug`, `tasks`, `checkpoints` directly;
`messages-tuple` as `messages` events of `[message chunk, metadata]` (what RemoteGraph
reads); `messages` as `messages/metadata`, `messages/partial` (the message so far) and
`messages/complete`; `events` as LangChain's `astream_events` v2 events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import BaseMessage, BaseMessageChunk, message_chunk_to_message


LANGGRAPH_MODES = frozenset({"values", "updates", "messages", "custom", "debug", "tasks", "checkpoints"})
API_MODES = frozenset({*LANGGRAPH_MODES, "messages-tuple", "events"})

Part = tuple[str, tuple[str, ...], Any]


def event_name(mode: str, ns: Sequence[str]) -> str:
    return "|".join([mode, *ns])


def langgraph_modes(requested: Sequence[str]) -> list[str]:
    """What to ask LangGraph for; `values` when only `events` is asked for (it needs one)."""
    modes = {"messages" if m == "messages-tuple" else m for m in requested} & LANGGRAPH_MODES
    return sorted(modes) or ["values"]


@dataclass
class MessageEvents:
    """The two message stream modes, from LangGraph's `(message, metadata)` parts."""

    tuples: bool
    partial: bool
    _so_far: dict[str, BaseMessageChunk] = field(default_factory=dict)

    def events(self, ns: tuple[str, ...], part: Any) -> list[tuple[str, Any]]:
        message, metadata = part
        out: list[tuple[str, Any]] = []
        if self.tuples:
            out.append((event_name("messages", ns), [message, metadata]))
        if self.partial and isinstance(message, BaseMessage):
            key = message.id or ""
            if not isinstance(message, BaseMessageChunk):
                out.append(("messages/complete", [message]))
                return out
            if key not in self._so_far:
                out.append(("messages/metadata", {key: {"metadata": metadata}}))
                self._so_far[key] = message
            else:
                self._so_far[key] = self._so_far[key] + message
            if getattr(message, "chunk_position", None) == "last":
                out.append(("messages/complete", [message_chunk_to_message(self._so_far.pop(key))]))
            else:
                out.append(("messages/partial", [self._so_far[key]]))
        return out


async def stream_parts(
    graph: Any, graph_input: Any, config: dict[str, Any], requested: Sequence[str], **kwargs: Any
) -> AsyncIterator[tuple[str, Any]]:
    """Run the graph and yield `(event name, data)` for the requested stream modes."""
    wanted = set(requested)
    messages = MessageEvents(tuples="messages-tuple" in wanted, partial="messages" in wanted)
    subgraphs = bool(kwargs.get("subgraphs"))
    async for mode, ns, part in _parts(graph, graph_input, config, events="events" in wanted, **kwargs):
        if mode == "messages":
            for item in messages.events(ns, part):
                yield item
        elif mode in wanted and (subgraphs or not ns or mode == "events"):
            yield event_name(mode, ns), part


async def _parts(graph: Any, graph_input: Any, config: dict[str, Any], *, events: bool, **kwargs: Any) -> AsyncIterator[Part]:
    def split(chunk: Any) -> Part:
        if kwargs.get("subgraphs"):
            ns, mode, part = chunk
            return mode, tuple(ns), part
        mode, part = chunk
        return mode, (), part

    if not events:
        async for chunk in graph.astream(graph_input, config, **kwargs):
            yield split(chunk)
        return
    async for event in graph.astream_events(graph_input, config, version="v2", **kwargs):
        if event["event"] == "on_chain_stream" and not event.get("parent_ids"):
            yield split(event["data"]["chunk"])
        yield "events", (), event
