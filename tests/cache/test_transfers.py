"""The worker's background transfer queue: order, per-request completion, drain."""

from __future__ import annotations

import threading

from cache.transfers import TransferQueue


def test_jobs_run_in_order_and_requests_complete_when_all_their_jobs_ran() -> None:
    transfers = TransferQueue("test")
    gate, ran = threading.Event(), []
    transfers.submit("a", lambda: (gate.wait(5), ran.append("a1")))
    transfers.submit("b", lambda: ran.append("b1"))
    transfers.submit("a", lambda: ran.append("a2"))
    assert transfers.take_done({"a", "b"}) == set(), "nothing ran yet"
    gate.set()
    transfers.drain()
    assert ran == ["a1", "b1", "a2"]
    assert transfers.take_done({"a", "b"}) == {"a", "b"}
    transfers.close()


def test_a_failing_job_still_completes_its_request() -> None:
    transfers = TransferQueue("test")

    def broken() -> None:
        raise RuntimeError("tier exploded")

    transfers.submit("a", broken)
    transfers.submit("b", lambda: None)
    transfers.drain()
    assert transfers.take_done({"a", "b"}) == {"a", "b"}
    transfers.close()
