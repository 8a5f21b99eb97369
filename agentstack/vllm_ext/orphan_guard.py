"""vLLM's engine-core and worker processes end when the process that started them dies.

vLLM stops them on a clean shutdown, but a server killed with SIGKILL (the OOM killer, a
`kubectl delete --force`) never runs its shutdown, and its engine core, several GB,
lives on as an orphan. Every vLLM process loads this package's plugin; in a process
started by `multiprocessing` (the engine core, its workers) a daemon thread waits on the
parent's sentinel and, once the parent is gone, stops this process: SIGTERM first, so
vLLM shuts down its own children, then a hard exit after a grace period.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.process import BaseProcess

logger = logging.getLogger(__name__)

GRACE_S = 10.0
_started = threading.Event()


def watch_parent() -> bool:
    """Start the watch in a child process; returns whether one runs (once per process)."""
    parent = multiprocessing.parent_process()
    if parent is None or _started.is_set():
        return False
    _started.set()
    threading.Thread(target=_stop_when_gone, args=(parent,), name="agentstack-orphan-guard", daemon=True).start()
    return True


def _stop_when_gone(parent: BaseProcess) -> None:
    parent.join()
    logger.warning("agentstack: the process that started this one (pid %s) is gone; stopping", parent.pid)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE_S)
    os._exit(1)
