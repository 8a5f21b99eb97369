"""Settling the runs of a replica that is gone.

A run recorded as active whose lease expired has no replica left to end it: a server
was killed, lost its node, or could not reach Redis for longer than a lease. Every
replica sweeps for such runs now and then (and once at start); the first to claim one
ends it as an error, closes its event log so that readers on any replica see `end`,
and frees its thread. The thread's checkpoints are intact, so a new run continues it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container

from agentstack.workflows.ownership import Ownership
from agentstack.workflows.run_log import RunLog
from agentstack.workflows.store import FINISHED, WorkflowStore

logger = logging.getLogger(__name__)

LOST = {"error": "RunLost", "message": "the server running this run stopped before the run ended"}


async def settle_lost_runs(store: WorkflowStore, ownership: Ownership, log_of: Callable[[str], RunLog],
                           *, running_here: Container[str] = ()) -> list[str]:
    """End every active run whose lease lapsed; return the ids this replica settled."""
    ids = await store.active_run_ids()
    settled = []
    for run_id, leased in zip(ids, await ownership.leased(ids)):
        if leased or run_id in running_here or not await ownership.claim_lost(run_id):
            continue
        try:
            record = await store.get_run(run_id)
            if record is None or record.status in FINISHED:
                await store.forget_active(run_id)
                continue
            record.status, record.error = "error", dict(LOST)
            await store.put_run(record)
            await ownership.release_lost(run_id, record.thread_id)
            thread = await store.get_thread(record.thread_id)
            if thread is not None and thread.status == "busy" and not await ownership.thread_runs(thread.thread_id):
                thread.status = "idle"
                await store.put_thread(thread)
            await log_of(run_id).end({"run_id": run_id, "status": "error"}, before=[("error", record.error)])
            settled.append(run_id)
        finally:
            await ownership.drop_claim(run_id)
    if settled:
        logger.warning("settled %d run(s) whose server stopped before they ended", len(settled))
    return settled
