"""The worker connector's block I/O, off the engine step.

Copying a computed block out of the paged cache, compacting it and writing it to the
memory tier and Redis, or fetching a block from Redis and writing it into the paged
cache, takes milliseconds per block; done inside ``wait_for_save`` / ``start_load_kv`` it
lengthens every engine step. ``TransferQueue`` runs such jobs on one background thread in
submission order and tells, per request, when its jobs are done, which is what vLLM's
asynchronous connector protocol needs: a request whose saves are pending keeps its
blocks (``request_finished`` answered True) until ``finished`` names it; a request whose
load is pending stays in ``WAITING_FOR_REMOTE_KVS`` until then.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import Counter
from collections.abc import Callable

logger = logging.getLogger(__name__)


class TransferQueue:
    """One daemon thread running jobs in order, with per-request completion."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.Queue[tuple[str, Callable[[], None]] | None] = queue.Queue()
        self._pending: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, request_id: str, job: Callable[[], None]) -> None:
        """Run ``job`` after every job submitted before it; it counts against ``request_id``."""
        with self._lock:
            self._pending[request_id] += 1
        self._jobs.put((request_id, job))

    def has_pending(self, request_id: str) -> bool:
        with self._lock:
            return self._pending[request_id] > 0

    def take_done(self, request_ids: set[str]) -> set[str]:
        """Of ``request_ids``, those with no job left; each is reported once."""
        with self._lock:
            done = {r for r in request_ids if self._pending[r] == 0}
            for request_id in done:
                self._pending.pop(request_id, None)
            return done

    def drain(self) -> None:
        """Block until every job submitted so far has run."""
        self._jobs.join()

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            # Linux schedules threads on their own: the lowest priority lets the engine's
            # forward threads run first on a busy CPU, and the I/O fill the idle time.
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):
            pass
        while True:
            item = self._jobs.get()
            try:
                if item is None:
                    return
                request_id, job = item
                try:
                    job()
                except Exception:
                    # The job reports its own failures (load errors, tier faults); this is a
                    # bug guard, so the thread survives and the request is still released.
                    logger.exception("KV transfer for request %s failed", request_id)
                with self._lock:
                    self._pending[request_id] -= 1
            finally:
                self._jobs.task_done()
