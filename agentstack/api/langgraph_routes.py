"""LangGraph-Platform-compatible endpoints: assistants, threads, thread state, runs.

`langgraph-sdk` (sync and async) and `RemoteGraph` work against these unmodified. The
router brings its own lifespan, which starts the workflow manager once the service is
up; every route authenticates the caller and checks that a thread in its path is the
caller's. Workflow errors are agentstack errors: the SDK reads the message from their body and
picks its exception by status.

Tenancy: with API keys on, thread ids are per key (`thread_scope`): a key sees only its
own threads, may pick any id another key uses, and learns nothing about other keys'
threads. Threads also carry their key as `owner` metadata (callers cannot set it), which
searches filter on. A key runs only the graphs it may.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.routing import APIRoute
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sse_starlette import EventSourceResponse, ServerSentEvent

from agentstack.api.langgraph_schemas import (
    AssistantSearch,
    HistoryQuery,
    RunCreate,
    StateAtCheckpoint,
    StateUpdate,
    ThreadCreate,
    ThreadPatch,
    ThreadSearch,
)
from agentstack.api.openai_routes import client_gone, last_output_unless_disconnected
from agentstack.api.security import GenerationSlot, caller
from agentstack.api.sse import sse_response
from agentstack.api.thread_scope import OWNER, owner_of, scope_of, scoped_thread_id, unscoped
from agentstack.auth import current_principal
from agentstack.errors import AgentstackError, Forbidden, ServiceUnavailable
from agentstack.workflows import RunHandle, WorkflowManager
from agentstack.workflows.serde import dumps

ThreadId = Annotated[str, Depends(scoped_thread_id)]
"""A path's thread id, as stored: the caller's own thread of that id."""


class WorkflowRoute(APIRoute):
    """Answers an unreachable Redis as 503 (threads and runs live there), and shows callers
    their own thread ids (`thread_scope`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return unscoped(await handler(request), scope_of(request))
            except AgentstackError as e:
                if scope := scope_of(request):
                    e.message = e.message.replace(scope, "")
                raise
            except (RedisConnectionError, RedisTimeoutError) as e:
                raise ServiceUnavailable(
                    "Redis is unavailable: threads and graph runs are paused; retry shortly "
                    "(chat completions are unaffected)") from e

        return route


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    manager = WorkflowManager(app.state.service)
    await manager.start()
    app.state.workflows = manager
    try:
        yield
    finally:
        await manager.stop()


router = APIRouter(lifespan=lifespan, route_class=WorkflowRoute, tags=["langgraph"],
                   dependencies=[Depends(caller)])


def workflows_of(request: Request) -> WorkflowManager:
    return request.app.state.workflows  # type: ignore[no-any-return]


def stamped(request: Request, metadata: dict[str, Any] | None) -> dict[str, Any]:
    """Metadata with the caller as owner, whatever the caller put there."""
    owner = owner_of(request)
    given = {k: v for k, v in (metadata or {}).items() if k != OWNER}
    return given if owner is None else {**given, OWNER: owner}


def json_response(payload: Any, *, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(payload), status_code=status_code, media_type="application/json", headers=headers)


def run_path(handle: RunHandle) -> str:
    record = handle.record
    if handle.temporary_thread:
        return f"/runs/{record.run_id}"
    return f"/threads/{record.thread_id}/runs/{record.run_id}"


# Health


# Assistants


@router.post("/assistants/search", responses={200: {"links": {
    "GetAssistant": {"operationRef": "#/paths/~1assistants~1{assistant_id}/get",
                     "parameters": {"path.assistant_id": "$response.body#/0/assistant_id"}},
    "GetAssistantGraph": {"operationRef": "#/paths/~1assistants~1{assistant_id}~1graph/get",
                          "parameters": {"path.assistant_id": "$response.body#/0/assistant_id"}},
    "GetAssistantSchemas": {"operationRef": "#/paths/~1assistants~1{assistant_id}~1schemas/get",
                            "parameters": {"path.assistant_id": "$response.body#/0/assistant_id"}},
}}})
async def search_assistants(body: AssistantSearch, request: Request) -> Response:
    found = workflows_of(request).assistants(graph_id=body.graph_id, name=body.name, metadata=body.metadata)
    return json_response(found[body.offset:body.offset + body.limit])


@router.post("/assistants/count")
async def count_assistants(body: AssistantSearch, request: Request) -> Response:
    found = workflows_of(request).assistants(graph_id=body.graph_id, name=body.name, metadata=body.metadata)
    return json_response(len(found))


@router.get("/assistants/{assistant_id}")
async def get_assistant(assistant_id: str, request: Request) -> Response:
    return json_response(workflows_of(request).assistant(assistant_id).assistant())


@router.get("/assistants/{assistant_id}/graph")
async def get_assistant_graph(assistant_id: str, request: Request, xray: bool | int = False) -> Response:
    graph = workflows_of(request).assistant(assistant_id).graph
    return json_response(graph.get_graph(xray=xray).to_json())


@router.get("/assistants/{assistant_id}/schemas")
async def get_assistant_schemas(assistant_id: str, request: Request) -> Response:
    return json_response(workflows_of(request).assistant(assistant_id).schemas())


# Threads


@router.post("/threads")
async def create_thread(body: ThreadCreate, request: Request) -> Response:
    thread_id = await scoped_thread_id(request, body.thread_id or str(uuid.uuid4()))
    record = await workflows_of(request).create_thread(
        thread_id=thread_id, metadata=stamped(request, body.metadata), if_exists=body.if_exists)
    return json_response(record.as_api())


@router.post("/threads/search")
async def search_threads(body: ThreadSearch, request: Request) -> Response:
    records = await workflows_of(request).search_threads(
        metadata=_owner_filter(request, body.metadata), values=body.values, status=body.status,
        ids=_scoped_ids(request, body.ids),
        limit=body.limit, offset=body.offset, sort_by=body.sort_by, sort_order=body.sort_order)
    return json_response([r.as_api() for r in records])


@router.post("/threads/count")
async def count_threads(body: ThreadSearch, request: Request) -> Response:
    records = await workflows_of(request).search_threads(
        metadata=_owner_filter(request, body.metadata), values=body.values, status=body.status,
        ids=_scoped_ids(request, body.ids),
        limit=1_000_000)
    return json_response(len(records))


def _scoped_ids(request: Request, ids: list[str] | None) -> list[str] | None:
    """Ids as stored: scoped, or as given for threads created before ids were scoped (the
    owner filter keeps those to the caller's own)."""
    if ids is None:
        return None
    scope = scope_of(request)
    return [*ids, *(scope + i for i in ids)] if scope else ids


def _owner_filter(request: Request, metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    owner = owner_of(request)
    return metadata if owner is None else {**(metadata or {}), OWNER: owner}


@router.get("/threads/{thread_id}")
async def get_thread(thread_id: ThreadId, request: Request) -> Response:
    return json_response((await workflows_of(request).thread(thread_id)).as_api())


@router.patch("/threads/{thread_id}")
async def patch_thread(thread_id: ThreadId, body: ThreadPatch, request: Request) -> Response:
    metadata = stamped(request, body.metadata)
    return json_response((await workflows_of(request).update_thread(thread_id, metadata)).as_api())


@router.delete("/threads/{thread_id}", status_code=204)
async def delete_thread(thread_id: ThreadId, request: Request) -> Response:
    await workflows_of(request).delete_thread(thread_id)
    return Response(status_code=204)


@router.get("/threads/{thread_id}/state")
async def get_state(thread_id: ThreadId, request: Request, subgraphs: bool = False) -> Response:
    return json_response(await workflows_of(request).state(thread_id, subgraphs=subgraphs))


@router.get("/threads/{thread_id}/state/{checkpoint_id}")
async def get_state_at(thread_id: ThreadId, checkpoint_id: str, request: Request, subgraphs: bool = False) -> Response:
    state = await workflows_of(request).state(
        thread_id, checkpoint={"checkpoint_id": checkpoint_id}, subgraphs=subgraphs)
    return json_response(state)


@router.post("/threads/{thread_id}/state/checkpoint")
async def post_state_at(thread_id: ThreadId, body: StateAtCheckpoint, request: Request) -> Response:
    state = await workflows_of(request).state(
        thread_id, checkpoint=body.checkpoint.model_dump(exclude_none=True), subgraphs=body.subgraphs)
    return json_response(state)


@router.post("/threads/{thread_id}/state")
async def update_state(thread_id: ThreadId, body: StateUpdate, request: Request) -> Response:
    result = await workflows_of(request).update_state(
        thread_id, body.values, as_node=body.as_node, checkpoint=body.checkpoint_dict())
    return json_response(result)


@router.post("/threads/{thread_id}/history")
async def post_history(thread_id: ThreadId, body: HistoryQuery, request: Request) -> Response:
    states = await workflows_of(request).history(
        thread_id, limit=body.limit,
        before=body.before.model_dump(exclude_none=True) if body.before else None,
        metadata=body.metadata,
        checkpoint=body.checkpoint.model_dump(exclude_none=True) if body.checkpoint else None)
    return json_response(states)


@router.get("/threads/{thread_id}/history")
async def get_history(thread_id: ThreadId, request: Request, limit: int = 10, before: str | None = None) -> Response:
    states = await workflows_of(request).history(
        thread_id, limit=max(1, min(limit, 1000)), before={"checkpoint_id": before} if before else None)
    return json_response(states)


# Runs


def _sse(request: Request, handle: RunHandle, *, after: int = -1, cancel_on_disconnect: bool,
         modes: list[str] | None = None) -> EventSourceResponse:
    """The run's events as SSE, from whichever replica runs it; a client that goes away
    before `end` cancels the run if asked to."""
    always = {"metadata", "error", "end"}
    workflows = workflows_of(request)
    scope = scope_of(request)

    async def events() -> AsyncIterator[ServerSentEvent]:
        ended = False
        try:
            async for event in workflows.events(handle, after):
                ended = event.name == "end"
                mode = event.name.split("|")[0].split("/")[0]
                if modes is None or event.name in always or mode in modes or (
                        mode == "messages" and "messages-tuple" in modes):
                    data = event.data.replace(scope, "") if scope else event.data
                    yield ServerSentEvent(data=data, event=event.name, id=str(event.id), sep="\n")
        except (GeneratorExit, asyncio.CancelledError):  # the client went away
            if cancel_on_disconnect and not ended:
                workflows.cancel_soon(handle)
            raise

    return sse_response(events(), drain_s=request.app.state.service.settings.shutdown_grace_s,
                        headers={"Content-Location": run_path(handle)})


async def _outcome_unless_disconnected(request: Request, handle: RunHandle, *, cancel: bool) -> Response:
    workflows = workflows_of(request)

    async def finished() -> AsyncIterator[tuple[Any]]:
        yield (await workflows.outcome(handle),)

    result = await last_output_unless_disconnected(request, finished())
    if result is None:
        if cancel:
            workflows.cancel_soon(handle)
        return client_gone()
    return json_response(result[0], headers={"Content-Location": run_path(handle)})


async def _start(request: Request, thread_id: str | None, body: RunCreate) -> RunHandle:
    workflows = workflows_of(request)
    graph_id = workflows.assistant(body.assistant_id).graph_id
    if not current_principal.get().may_use_graph(graph_id):
        raise Forbidden(f"this API key may not run the graph `{graph_id}`", param="assistant_id")
    if thread_id is not None and body.if_not_exists == "create" and owner_of(request) is not None:
        await workflows.create_thread(thread_id=thread_id, metadata=stamped(request, None), if_exists="do_nothing")
    return await workflows.create_run(thread_id, body.spec())


@router.post("/threads/{thread_id}/runs", dependencies=[GenerationSlot])
async def create_run(thread_id: ThreadId, body: RunCreate, request: Request) -> Response:
    handle = await _start(request, thread_id, body)
    return json_response(handle.record.as_api(), headers={"Content-Location": run_path(handle)})


@router.post("/runs", dependencies=[GenerationSlot])
async def create_stateless_run(body: RunCreate, request: Request) -> Response:
    handle = await _start(request, None, body)
    return json_response(handle.record.as_api(), headers={"Content-Location": run_path(handle)})


@router.post("/threads/{thread_id}/runs/stream", response_class=EventSourceResponse, dependencies=[GenerationSlot])
async def stream_run(thread_id: ThreadId, body: RunCreate, request: Request) -> EventSourceResponse:
    handle = await _start(request, thread_id, body)
    return _sse(request, handle, cancel_on_disconnect=body.on_disconnect == "cancel")


@router.post("/runs/stream", response_class=EventSourceResponse, dependencies=[GenerationSlot])
async def stream_stateless_run(body: RunCreate, request: Request) -> EventSourceResponse:
    handle = await _start(request, None, body)
    return _sse(request, handle, cancel_on_disconnect=body.on_disconnect == "cancel")


@router.post("/threads/{thread_id}/runs/wait", dependencies=[GenerationSlot])
async def wait_run(thread_id: ThreadId, body: RunCreate, request: Request) -> Response:
    handle = await _start(request, thread_id, body)
    return await _outcome_unless_disconnected(request, handle, cancel=body.on_disconnect == "cancel")


@router.post("/runs/wait", dependencies=[GenerationSlot])
async def wait_stateless_run(body: RunCreate, request: Request) -> Response:
    handle = await _start(request, None, body)
    return await _outcome_unless_disconnected(request, handle, cancel=body.on_disconnect == "cancel")


@router.get("/threads/{thread_id}/runs")
async def list_runs(thread_id: ThreadId, request: Request, limit: int = 10, offset: int = 0,
                    status: str | None = None) -> Response:
    records = await workflows_of(request).runs(thread_id, limit=max(1, min(limit, 1000)),
                                               offset=max(0, offset), status=status)
    return json_response([r.as_api() for r in records])


@router.get("/threads/{thread_id}/runs/{run_id}")
async def get_run(thread_id: ThreadId, run_id: str, request: Request) -> Response:
    return json_response((await workflows_of(request).run_handle(thread_id, run_id)).record.as_api())


@router.delete("/threads/{thread_id}/runs/{run_id}", status_code=204)
async def delete_run(thread_id: ThreadId, run_id: str, request: Request) -> Response:
    await workflows_of(request).delete_run(thread_id, run_id)
    return Response(status_code=204)


@router.post("/threads/{thread_id}/runs/{run_id}/cancel", status_code=202, response_class=Response,
             responses={202: {"description": "Cancellation requested"},
                        204: {"description": "Cancelled, and the run has ended (wait=true)"}})
async def cancel_run(thread_id: ThreadId, run_id: str, request: Request, wait: bool = False,
                     action: Literal["interrupt", "rollback"] = "interrupt") -> Response:
    await workflows_of(request).cancel(thread_id, run_id, wait=wait, action=action)
    return Response(status_code=204 if wait else 202)


@router.get("/threads/{thread_id}/runs/{run_id}/join")
async def join_run(thread_id: ThreadId, run_id: str, request: Request) -> Response:
    handle = await workflows_of(request).run_handle(thread_id, run_id)
    return await _outcome_unless_disconnected(request, handle, cancel=False)


@router.get("/threads/{thread_id}/runs/{run_id}/stream", response_class=EventSourceResponse)
async def join_run_stream(
    thread_id: ThreadId, run_id: str, request: Request, cancel_on_disconnect: bool = False,
    stream_mode: Annotated[list[str] | None, Query()] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    handle = await workflows_of(request).run_handle(thread_id, run_id)
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else -1
    modes = [m for m in stream_mode or [] if m] or None
    return _sse(request, handle, after=after, cancel_on_disconnect=cancel_on_disconnect, modes=modes)
