"""Faults injected into a real server under load (short form of `agentstack bench faults`):
a Redis outage, clients leaving mid-stream, broken adapters, SIGTERM, engine death, and a
server killed outright."""

from __future__ import annotations

import signal
from pathlib import Path

import psutil
import pytest

from agentstack.cli import ENGINE_DEAD_EXIT_CODE
from agentstack.offline.bench.reliability import (
    bad_adapters,
    client_disconnects,
    engine_death,
    graceful_drain,
    redis_outage,
)
from tests.reliability.conftest import keyed_server

pytestmark = [pytest.mark.slow, pytest.mark.reliability]


async def test_faults_then_drain(tmp_path: Path, model_dir: Path) -> None:
    server = keyed_server(tmp_path, model_dir).start()
    try:
        outage = await redis_outage(server, load_s=20, outage_s=4, concurrency=4)
        assert outage.failed == 0 and outage.lost_checkpoints == 0, outage
        assert outage.recovery_s is not None and "degraded" in outage.detail and "after: ok" in outage.detail
        disconnects = await client_disconnects(server, streams=2)
        assert disconnects.failed == 0 and "aborted: 2/2" in disconnects.detail, disconnects
        adapters = await bad_adapters(server)
        assert adapters.failed == 0 and "[400, 400]" in adapters.detail, adapters
        drain = await graceful_drain(server)
        assert drain.failed == 0 and drain.detail == "exit code 0", drain
    finally:
        server.stop()


async def test_engine_death_fails_readiness_and_exits_non_zero(tmp_path: Path, model_dir: Path) -> None:
    server = keyed_server(tmp_path, model_dir).start()
    try:
        row = await engine_death(server)
        assert f"exit code {ENGINE_DEAD_EXIT_CODE}" in row.detail and "never" not in row.detail, row
    finally:
        server.stop()


def test_a_server_killed_by_sigkill_leaves_no_engine_behind(tmp_path: Path, model_dir: Path) -> None:
    """The engine core holds GBs: it must not outlive a server that could not shut it down."""
    server = keyed_server(tmp_path, model_dir).start()
    try:
        assert server.process is not None
        children = psutil.Process(server.process.pid).children(recursive=True)
        assert server.engine_core() in children
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=30)
        _, alive = psutil.wait_procs(children, timeout=60)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        server.stop()
