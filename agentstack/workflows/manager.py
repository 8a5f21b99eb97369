"""Threads, their state, and runs of the registered graphs on the shared backbone.

The manager owns the Redis checkpointer, the graph registry, the thread/run records
and the runs this replica executes. Each run is one asyncio task streaming the graph
into its `RunLog` in Redis; HTTP handlers on any replica create runs and read those
logs, so a stream, a `wait`, a `join` and a background run are the same run seen
differently, wherever the request lands. Replicas on one Redis coordinate through
`Ownership` (run leases, thread locks, a cancel channel) and settle each other's lost
runs (`recovery`). Graph nodes reach the engine through `RoleChatModel`, bound here to
the service in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from langgraph.checkpoint.redis.aio import AsyncRedisSaver
from langgraph.errors import InvalidUpdateError
from langgraph.types import Command, Send, StateSnapshot

from agentstack.chat_model import bind_service
from agentstack.service import Service
from agentstack.workflows.errors import (
    ThreadBusy,
    WorkflowConflict,
    WorkflowNotFound,
    WorkflowRequestError,
)
from agentstack.workflows.events import langgraph_modes, stream_parts
from agentstack.workflows.ownership import Ownership
from agentstack.workflows.recovery import settle_lost_runs
from agentstack.workflows.registry import GraphEntry, GraphRegistry
from agentstack.workflows.run_log import Event, RunLog
from agentstack.workflows.serde import to_jsonable
from agentstack.workflows.store import FINISHED, RunRecord, ThreadRecord, WorkflowStore

logger = logging.getLogger(__name__)

MultitaskStrategy = Literal["reject", "interrupt", "rollback", "enqueue"]
QUEUE_POLL_S = 0.2


@dataclass(slots=True)
class RunSpec:
    """What a run-create request asks for (the API validates the wire shape)."""

    assistant_id: str
    input: Any = None
    command: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    stream_mode: list[str] = field(default_factory=lambda: ["values"])
    stream_subgraphs: bool = False
    interrupt_before: list[str] | Literal["*"] | None = None
    interrupt_after: list[str] | Literal["*"] | None = None
    checkpoint: dict[str, Any] | None = None
    checkpoint_id: str | None = None
    multitask_strategy: MultitaskStrategy = "reject"
    if_not_exists: Literal["create", "reject"] = "reject"
    on_completion: Literal["delete", "keep"] | None = None
    durability: Literal["sync", "async", "exit"] | None = None


@dataclass(eq=False)
class RunHandle:
    """A run seen from this replica: its record and its event log, plus its task where
    this replica executes it."""

    record: RunRecord
    log: RunLog
    temporary_thread: bool = False
    task: asyncio.Task[None] | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    holds_thread: bool = False
    lost: bool = False
    finishing: bool = False

    def cancel(self) -> None:
        """Stop the run's task, unless it is already recording its end (which must finish)."""
        if self.task is not None and not self.finishing:
            self.task.cancel()


def _checkpoint_json(config: dict[str, Any] | None) -> dict[str, Any] | None:
    if not config:
        return None
    conf = config.get("configurable", {})
    return {
        "thread_id": conf.get("thread_id"),
        "checkpoint_ns": conf.get("checkpoint_ns", ""),
        "checkpoint_id": conf.get("checkpoint_id"),
        "checkpoint_map": conf.get("checkpoint_map"),
    }


def state_json(snapshot: StateSnapshot) -> dict[str, Any]:
    """A `StateSnapshot` as the LangGraph API's ThreadState."""
    tasks = []
    for task in snapshot.tasks:
        nested = task.state
        tasks.append({
            "id": task.id,
            "name": task.name,
            "error": str(task.error) if task.error else None,
            "interrupts": to_jsonable(list(task.interrupts)),
            "checkpoint": _checkpoint_json(nested) if isinstance(nested, dict) else None,
            "state": state_json(nested) if isinstance(nested, StateSnapshot) else None,
            "result": to_jsonable(task.result),
        })
    return {
        "values": to_jsonable(snapshot.values),
        "next": list(snapshot.next),
        "checkpoint": _checkpoint_json(dict(snapshot.config)),
        "metadata": to_jsonable(snapshot.metadata or {}),
        "created_at": snapshot.created_at,
        "parent_checkpoint": _checkpoint_json(dict(snapshot.parent_config or {})),
        "tasks": tasks,
        "interrupts": to_jsonable(list(snapshot.interrupts)),
    }


def _empty_state(thread_id: str) -> dict[str, Any]:
    return {"values": {}, "next": [], "metadata": {}, "created_at": None, "parent_checkpoint": None,
            "tasks": [], "interrupts": [],
            "checkpoint": {"thread_id": thread_id, "checkpoint_ns": "", "checkpoint_id": None,
                           "checkpoint_map": None}}


def _thread_config(thread_id: str, checkpoint: dict[str, Any] | None = None) -> dict[str, Any]:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    for key in ("checkpoint_ns", "checkpoint_id", "checkpoint_map"):
        if checkpoint and checkpoint.get(key) is not None:
            configurable[key] = checkpoint[key]
    return {"configurable": configurable}


def _graph_input(spec: RunSpec) -> Any:
    if spec.command is None:
        return spec.input
    goto = spec.command.get("goto") or ()
    if isinstance(goto, (str, dict)):
        goto = [goto]
    sends = [Send(g["node"], g.get("input")) if isinstance(g, dict) else g for g in goto]
    return Command(update=spec.command.get("update"), resume=spec.command.get("resume"), goto=sends)


class WorkflowManager:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.registry = GraphRegistry()
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._saver: AsyncRedisSaver | None = None
        self._store: WorkflowStore | None = None
        self._ownership: Ownership | None = None
        self._runs: dict[str, RunHandle] = {}
        self._background: list[asyncio.Task[None]] = []

    @property
    def store(self) -> WorkflowStore:
        if self._store is None:
            raise RuntimeError("WorkflowManager used before start()")
        return self._store

    @property
    def ownership(self) -> Ownership:
        if self._ownership is None:
            raise RuntimeError("WorkflowManager used before start()")
        return self._ownership

    async def start(self) -> None:
        """Set up the checkpointer, load the graphs, settle runs no replica owns any more,
        then keep this replica's leases and follow cancellations."""
        service = self.service
        if service.redis is None:
            raise RuntimeError("start the service before the workflow manager")
        self._saver = AsyncRedisSaver(redis_client=service.redis)
        await self._saver.asetup()
        self.registry = GraphRegistry.load(self._saver, service.settings.graphs_file)
        self._store = WorkflowStore(service.redis, prefix=service.settings.redis_prefix)
        self._ownership = Ownership(service.redis, prefix=service.settings.redis_prefix, replica=self.replica,
                                    lease_s=service.settings.run_lease_s)
        await self.settle_lost()
        self._background = [asyncio.create_task(self._keep_leases(), name="run-leases"),
                            asyncio.create_task(self._follow_cancels(), name="run-cancels")]

    async def stop(self) -> None:
        active = [h for h in self._runs.values() if h.task is not None]
        for handle in active:
            handle.cancel()
        if active:
            await asyncio.wait([asyncio.ensure_future(h.finished.wait()) for h in active], timeout=30)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    def _log(self, run_id: str) -> RunLog:
        assert self.service.redis is not None
        return RunLog(self.service.redis, self.store.events_key(run_id),
                      retention_s=self.service.settings.run_retention_s)

    async def settle_lost(self) -> list[str]:
        return await settle_lost_runs(self.store, self.ownership, self._log, running_here=self._runs)

    async def _keep_leases(self) -> None:
        """Renew the leases of this replica's runs (a run whose lease lapsed was settled
        by another replica: it stops here) and sweep for other replicas' lost runs."""
        lease_s = self.service.settings.run_lease_s
        loop = asyncio.get_running_loop()
        sweep_at = loop.time() + lease_s / 2
        while True:
            await asyncio.sleep(lease_s / 3)
            try:
                held = {run_id: h.record.thread_id if h.holds_thread else None for run_id, h in self._runs.items()}
                for run_id in await self.ownership.renew(held):
                    handle = self._runs.get(run_id)
                    if handle is not None and handle.task is not None and not handle.finishing:
                        logger.warning("run %s: its lease lapsed and another replica settled it; stopping it", run_id)
                        handle.lost = True
                        handle.cancel()
                if loop.time() >= sweep_at:
                    await self.settle_lost()
                    sweep_at = loop.time() + lease_s / 2
            except Exception as e:  # Redis away: runs go on; leases are renewed once it is back
                logger.warning("could not renew run leases: %s: %s", type(e).__name__, e)

    async def _follow_cancels(self) -> None:
        """Cancel this replica's runs when a request on any replica asks to."""
        redis = self.service.redis
        assert redis is not None
        while True:
            try:
                async with redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.ownership.cancel_channel)
                    async for message in pubsub.listen():
                        if message["type"] != "message":
                            continue
                        handle = self._runs.get(message["data"].decode())
                        if handle is not None:
                            handle.cancel()
            except Exception as e:  # Redis away: retry
                logger.warning("following run cancellations paused: %s: %s", type(e).__name__, e)
                await asyncio.sleep(1.0)

    # Assistants

    def assistants(self, *, graph_id: str | None = None, name: str | None = None,
                   metadata: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        found = []
        for entry in self.registry.entries.values():
            assistant = entry.assistant()
            if graph_id is not None and entry.graph_id != graph_id:
                continue
            if name is not None and name not in assistant["name"]:
                continue
            if metadata and any(assistant["metadata"].get(k) != v for k, v in metadata.items()):
                continue
            found.append(assistant)
        return found

    def assistant(self, assistant_id: str) -> GraphEntry:
        return self.registry.get(assistant_id)

    # Threads

    async def create_thread(self, *, thread_id: str | None = None, metadata: dict[str, Any] | None = None,
                            if_exists: Literal["raise", "do_nothing"] = "raise") -> ThreadRecord:
        thread_id = thread_id or str(uuid.uuid4())
        existing = await self.store.get_thread(thread_id)
        if existing is not None:
            if if_exists == "do_nothing":
                return existing
            raise WorkflowConflict(f"thread {thread_id!r} already exists")
        record = ThreadRecord(thread_id=thread_id, metadata=dict(metadata or {}))
        await self.store.put_thread(record, created=True)
        return record

    async def thread(self, thread_id: str) -> ThreadRecord:
        record = await self.store.get_thread(thread_id)
        if record is None:
            raise WorkflowNotFound("thread", thread_id)
        return record

    async def update_thread(self, thread_id: str, metadata: dict[str, Any]) -> ThreadRecord:
        record = await self.thread(thread_id)
        record.metadata.update(metadata)
        await self.store.put_thread(record)
        return record

    async def delete_thread(self, thread_id: str) -> None:
        await self.thread(thread_id)
        local = [run_id for run_id, h in self._runs.items() if h.record.thread_id == thread_id]
        for run_id in dict.fromkeys([*await self.ownership.thread_runs(thread_id), *local]):
            await self._stop_run(run_id)
        await self.store.delete_thread(thread_id)
        await self.ownership.forget_thread(thread_id)
        assert self._saver is not None
        await self._saver.adelete_thread(thread_id)

    async def search_threads(
        self, *, metadata: dict[str, Any] | None = None, values: dict[str, Any] | None = None,
        status: str | None = None, ids: list[str] | None = None, limit: int = 10, offset: int = 0,
        sort_by: str = "updated_at", sort_order: str = "desc",
    ) -> list[ThreadRecord]:
        records = [
            r for r in await self.store.threads()
            if (status is None or r.status == status)
            and (ids is None or r.thread_id in ids)
            and all(r.metadata.get(k) == v for k, v in (metadata or {}).items())
            and all(isinstance(r.values, dict) and r.values.get(k) == v for k, v in (values or {}).items())
        ]
        records.sort(key=lambda r: str(getattr(r, sort_by, r.updated_at)), reverse=sort_order == "desc")
        return records[offset:offset + limit]

    def _entry_of(self, thread: ThreadRecord) -> GraphEntry | None:
        if thread.graph_id is None:
            return None
        try:
            return self.registry.get(thread.graph_id)
        except WorkflowNotFound as e:
            raise WorkflowRequestError(f"thread {thread.thread_id!r} belongs to graph {thread.graph_id!r}, "
                                       "which this server does not serve") from e

    async def state(self, thread_id: str, *, checkpoint: dict[str, Any] | None = None,
                    subgraphs: bool = False) -> dict[str, Any]:
        thread = await self.thread(thread_id)
        entry = self._entry_of(thread)
        if entry is None:
            return _empty_state(thread_id)
        snapshot = await entry.graph.aget_state(_thread_config(thread_id, checkpoint), subgraphs=subgraphs)
        if snapshot.created_at is None:
            return _empty_state(thread_id)
        return state_json(snapshot)

    async def history(self, thread_id: str, *, limit: int = 10, before: dict[str, Any] | None = None,
                      metadata: dict[str, Any] | None = None,
                      checkpoint: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        thread = await self.thread(thread_id)
        entry = self._entry_of(thread)
        if entry is None:
            return []
        before_config = _thread_config(thread_id, before) if before else None
        return [
            state_json(s) async for s in entry.graph.aget_state_history(
                _thread_config(thread_id, checkpoint), filter=metadata, before=before_config, limit=limit)
        ]

    async def update_state(self, thread_id: str, values: Any, *, as_node: str | None = None,
                           checkpoint: dict[str, Any] | None = None) -> dict[str, Any]:
        thread = await self.thread(thread_id)
        entry = self._entry_of(thread)
        if entry is None:
            raise WorkflowConflict(  # the request is sound; the thread's state refuses it
                f"thread {thread_id!r} has no graph yet: create it with a graph_id or run it first")
        if await self.ownership.thread_runs(thread_id):
            raise ThreadBusy(thread_id)
        if as_node is not None and as_node not in entry.graph.nodes:
            nodes = ", ".join(n for n in entry.graph.nodes if not n.startswith("__"))
            raise WorkflowRequestError(f"as_node {as_node!r} is not a node of the graph ({nodes})", param="as_node")
        try:
            config = await entry.graph.aupdate_state(_thread_config(thread_id, checkpoint), values, as_node=as_node)
        except (ValueError, KeyError, TypeError, InvalidUpdateError) as e:
            raise WorkflowRequestError(f"cannot update the state: {e}") from e
        await self._refresh_thread(thread, entry, status=None)
        return {"checkpoint": _checkpoint_json(dict(config))}

    async def _refresh_thread(self, thread: ThreadRecord, entry: GraphEntry, *, status: str | None) -> StateSnapshot:
        """Copy the latest values and interrupts onto the thread record; `status` of the
        run that just ended decides between error, interrupted and idle."""
        snapshot = await entry.graph.aget_state(_thread_config(thread.thread_id))
        thread.values = to_jsonable(snapshot.values)
        thread.interrupts = {t.id: to_jsonable(list(t.interrupts)) for t in snapshot.tasks if t.interrupts}
        thread.status = "error" if status == "error" else "interrupted" if snapshot.interrupts else "idle"
        await self.store.put_thread(thread)
        return snapshot

    # Runs

    async def create_run(self, thread_id: str | None, spec: RunSpec) -> RunHandle:
        """Validate, record and start a run; `thread_id=None` runs on a temporary thread."""
        entry = self.registry.get(spec.assistant_id)
        if spec.command is None:
            entry.validator.validate(spec.input)
        unknown = set(spec.stream_mode) - {"values", "updates", "messages", "messages-tuple", "custom",
                                           "events", "debug", "tasks", "checkpoints"}
        if unknown:
            raise WorkflowRequestError(f"unknown stream_mode {sorted(unknown)}")
        temporary = thread_id is None
        thread = await self._thread_for_run(thread_id, spec)
        record = RunRecord(run_id=str(uuid.uuid4()), thread_id=thread.thread_id,
                           assistant_id=entry.assistant_id, metadata=dict(spec.metadata or {}),
                           multitask_strategy=spec.multitask_strategy)
        handle = RunHandle(record=record, log=self._log(record.run_id), temporary_thread=temporary)
        # Leased first: a run in a thread's queue or recorded as active always has an owner.
        await self.ownership.lease(record.run_id)
        try:
            handle.holds_thread = await self._take_thread(thread.thread_id, record.run_id, spec.multitask_strategy)
            thread.status = "busy"
            thread.metadata.update(graph_id=entry.graph_id, assistant_id=entry.assistant_id)
            await self.store.put_thread(thread, created=temporary)
            await self.store.put_run(record, created=True)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.ownership.release(record.run_id, thread.thread_id)
            raise
        self._runs[record.run_id] = handle
        handle.task = asyncio.create_task(self._execute(handle, entry, spec), name=f"run-{record.run_id}")
        return handle

    async def _thread_for_run(self, thread_id: str | None, spec: RunSpec) -> ThreadRecord:
        if thread_id is None:
            return ThreadRecord(thread_id=str(uuid.uuid4()))
        thread = await self.store.get_thread(thread_id)
        if thread is not None:
            return thread
        if spec.if_not_exists == "create":
            return await self.create_thread(thread_id=thread_id)
        raise WorkflowNotFound("thread", thread_id)

    async def _take_thread(self, thread_id: str, run_id: str, strategy: MultitaskStrategy) -> bool:
        """Whether the run holds the thread now; False: it waits in the thread's queue."""
        if await self.ownership.acquire(thread_id, run_id):
            return True
        if strategy == "reject":
            raise ThreadBusy(thread_id)
        if strategy == "enqueue":
            await self.ownership.enqueue(thread_id, run_id)
            return False
        for other in await self.ownership.thread_runs(thread_id):
            await self._stop_run(other, delete=strategy == "rollback")
        if await self.ownership.acquire(thread_id, run_id):
            return True
        raise ThreadBusy(thread_id)

    async def _stop_run(self, run_id: str, *, delete: bool = False) -> None:
        """Cancel a run on whichever replica runs it and wait for its end."""
        handle = self._runs.get(run_id)
        if handle is not None and handle.task is not None:
            handle.cancel()
            await handle.finished.wait()
        else:
            # A cancel is one message; a replica that was reconnecting to Redis missed it,
            # so it is sent again each lease period until the run ends.
            log = self._log(run_id)
            while True:
                await self.ownership.request_cancel(run_id)
                try:
                    await asyncio.wait_for(log.wait_end(ended=lambda: self._ended(run_id)),
                                           self.service.settings.run_lease_s)
                    break
                except TimeoutError:
                    continue
        if delete and (record := await self.store.get_run(run_id)) is not None:
            await self.store.delete_run(record)

    def _run_config(self, entry: GraphEntry, spec: RunSpec, record: RunRecord) -> dict[str, Any]:
        user = spec.config or {}
        checkpoint = dict(spec.checkpoint or {})
        if spec.checkpoint_id:
            checkpoint["checkpoint_id"] = spec.checkpoint_id
        config: dict[str, Any] = {k: user[k] for k in ("tags", "recursion_limit", "max_concurrency") if k in user}
        ids = {"run_id": record.run_id, "thread_id": record.thread_id, "graph_id": entry.graph_id,
               "assistant_id": entry.assistant_id}
        config["configurable"] = {**(user.get("configurable") or {}),
                                  **_thread_config(record.thread_id, checkpoint)["configurable"], **ids}
        config["metadata"] = {**(user.get("metadata") or {}), **(spec.metadata or {}), **ids}
        return config

    async def _wait_turn(self, handle: RunHandle) -> None:
        """An enqueued run starts once the runs before it on the thread ended, wherever they ran."""
        record = handle.record
        while not await self.ownership.acquire(record.thread_id, record.run_id):
            await asyncio.sleep(QUEUE_POLL_S)
        handle.holds_thread = True
        thread = await self.store.get_thread(record.thread_id)
        if thread is not None and thread.status != "busy":
            thread.status = "busy"
            await self.store.put_thread(thread)

    async def _execute(self, handle: RunHandle, entry: GraphEntry, spec: RunSpec) -> None:
        record, log = handle.record, handle.log
        started = time.perf_counter()
        bind_service(self.service)  # this run's task only: its nodes call roles in-process
        try:
            if not handle.holds_thread:
                await self._wait_turn(handle)
                started = time.perf_counter()
            record.status = "running"
            await self.store.put_run(record)
            await log.emit("metadata", {"run_id": record.run_id, "attempt": 1})
            kwargs: dict[str, Any] = {
                "stream_mode": langgraph_modes(spec.stream_mode), "subgraphs": spec.stream_subgraphs,
                "interrupt_before": spec.interrupt_before, "interrupt_after": spec.interrupt_after,
                "durability": spec.durability,
            }
            if spec.context is not None:
                kwargs["context"] = spec.context
            async for name, data in stream_parts(entry.graph, _graph_input(spec), self._run_config(entry, spec, record),
                                                 spec.stream_mode, **kwargs):
                await log.emit(name, data)
            record.status = "success"
        except asyncio.CancelledError:
            record.status = "interrupted"
        except Exception as e:  # a failing node ends its run, never the server
            logger.warning("run %s of graph %s failed: %s: %s", record.run_id, entry.graph_id, type(e).__name__, e)
            record.status = "error"
            record.error = {"error": type(e).__name__, "message": str(e)}
        finally:
            handle.finishing = True
            # Shielded: a second cancel (a client leaving, a lease check) must not cut the
            # records and the log's `end` in half.
            await asyncio.shield(self._finish(handle, entry, spec))
            metrics = self.service.metrics
            metrics.workflow_runs.labels(entry.graph_id, record.status).inc()
            metrics.workflow_run_latency.labels(entry.graph_id).observe(time.perf_counter() - started)

    async def _finish(self, handle: RunHandle, entry: GraphEntry, spec: RunSpec) -> None:
        """Record the outcome, free the thread, then end the log: a client that sees `end`
        finds the run's final record and may start the thread's next run at once."""
        record = handle.record
        retention_s = self.service.settings.run_retention_s
        try:
            if handle.lost:
                return  # another replica settled this run; its records are final already
            # A run cancelled while queued never ran: the thread is another run's business.
            thread = await self.store.get_thread(record.thread_id) if handle.holds_thread else None
            result: Any = None
            if thread is not None:
                snapshot = await self._refresh_thread(thread, entry, status=record.status)
                result = to_jsonable(snapshot.values)
                if snapshot.interrupts and isinstance(result, dict):
                    result["__interrupt__"] = to_jsonable(list(snapshot.interrupts))
                    if record.status == "success":
                        record.status = "interrupted"
            await self.store.put_run(record)
            await self.store.put_result(record.run_id, result, retention_s=retention_s)
            if handle.temporary_thread and spec.on_completion != "keep":
                await self.store.delete_thread(record.thread_id, runs_retention_s=retention_s)
                assert self._saver is not None
                await self._saver.adelete_thread(record.thread_id)
            await self.ownership.release(record.run_id, record.thread_id)
            errors = [("error", record.error)] if record.status == "error" else []
            await handle.log.end({"run_id": record.run_id, "status": record.status}, before=errors)
        except Exception:
            logger.exception("could not record the end of run %s", record.run_id)
        finally:
            handle.finished.set()
            self._runs.pop(record.run_id, None)

    async def _ended(self, run_id: str) -> dict[str, Any] | None:
        """`end` data for a run whose log is gone: finished (log expired) or deleted."""
        record = await self.store.get_run(run_id)
        if record is not None and record.status not in FINISHED:
            return None
        return {"run_id": run_id, "status": record.status if record is not None else "deleted"}

    async def run_handle(self, thread_id: str, run_id: str) -> RunHandle:
        """The run, live or finished, wherever it runs."""
        handle = self._runs.get(run_id)
        if handle is not None and handle.record.thread_id == thread_id:
            return handle
        record = await self.store.get_run(run_id)
        if record is None or record.thread_id != thread_id:
            raise WorkflowNotFound("run", run_id)
        return RunHandle(record=record, log=self._log(run_id))

    def events(self, handle: RunHandle, after: int = -1) -> AsyncIterator[Event]:
        """The run's events after id `after`, replayed then live, through `end`."""
        run_id = handle.record.run_id
        return handle.log.follow(after, ended=lambda: self._ended(run_id))

    async def outcome(self, handle: RunHandle) -> Any:
        """What `wait` and `join` return once the run ended: its final values, or
        `__error__` for a failed run."""
        run_id = handle.record.run_id
        await handle.log.wait_end(ended=lambda: self._ended(run_id))
        record = await self.store.get_run(run_id) or handle.record
        if record.status == "error":
            return {"__error__": record.error}
        found, result = await self.store.get_result(run_id)
        if found:
            return result
        thread = await self.store.get_thread(record.thread_id)
        return thread.values if thread is not None else None

    def cancel_soon(self, handle: RunHandle) -> None:
        """Cancel without waiting (a client went away): here if it runs here, else by message."""
        if handle.task is not None:
            handle.cancel()
        elif handle.record.status not in FINISHED:
            task = asyncio.create_task(self.ownership.request_cancel(handle.record.run_id))
            self._background.append(task)
            task.add_done_callback(self._background.remove)

    async def runs(self, thread_id: str, *, limit: int = 10, offset: int = 0,
                   status: str | None = None) -> list[RunRecord]:
        await self.thread(thread_id)
        records = [r for r in await self.store.thread_runs(thread_id) if status is None or r.status == status]
        return records[offset:offset + limit]

    async def cancel(self, thread_id: str, run_id: str, *, wait: bool,
                     action: Literal["interrupt", "rollback"]) -> None:
        handle = await self.run_handle(thread_id, run_id)
        if wait or action == "rollback":
            await self._stop_run(run_id, delete=action == "rollback")
        elif handle.task is not None:
            handle.cancel()
        elif handle.record.status not in FINISHED:
            await self.ownership.request_cancel(run_id)

    async def delete_run(self, thread_id: str, run_id: str) -> None:
        handle = await self.run_handle(thread_id, run_id)
        if handle.record.status not in FINISHED:
            raise WorkflowConflict(f"run {run_id!r} is still {handle.record.status}; cancel it first")
        await self.store.delete_run(handle.record)
