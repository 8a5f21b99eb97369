"""A vLLM child process (engine core, worker) stops when the process that started it is
killed without a chance to shut it down."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

# The parent starts a child the way vLLM starts its engine core, waits until the child
# watches it, then dies by SIGKILL.
PARENT = """
import multiprocessing, os, signal, sys, time
from pathlib import Path

def child(marker):
    from agentstack.vllm_ext.orphan_guard import watch_parent
    if watch_parent():
        Path(marker).write_text(str(os.getpid()))
    time.sleep(600)

if __name__ == "__main__":
    marker = Path(sys.argv[1])
    process = multiprocessing.get_context("spawn").Process(target=child, args=(str(marker),))
    process.start()
    while not marker.exists():
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_child_does_not_outlive_a_parent_killed_by_sigkill(tmp_path: Path) -> None:
    script, marker = tmp_path / "parent.py", tmp_path / "watching"
    script.write_text(PARENT)
    run = subprocess.run([sys.executable, str(script), str(marker)], capture_output=True, text=True, timeout=60)
    assert run.returncode == -signal.SIGKILL, run.stderr
    child = int(marker.read_text())
    deadline = time.monotonic() + 20
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the orphaned child is still running"
        time.sleep(0.2)


def test_a_process_nobody_started_with_multiprocessing_is_not_watched() -> None:
    from agentstack.vllm_ext.orphan_guard import watch_parent

    assert not watch_parent()
