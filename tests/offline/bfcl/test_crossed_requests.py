"""The made-up requests over two lists: a crossed question is answered by every pair, a
paired one by the pairs it writes out, and only the writer trains on them."""

from __future__ import annotations

from agentstack.offline.bfcl.crossed_requests import CROSSED_PREFIX, TOPICS, crossed_examples
from agentstack.offline.bfcl.listings import distractor_pool
from agentstack.offline.bfcl.training_data import (
    CROSSED_REQUESTS,
    DATA_SEED,
    ToolRole,
    role_chats,
    role_pool,
)


def _requests() -> list:
    return crossed_examples(CROSSED_REQUESTS, DATA_SEED)


def _values(request) -> tuple[set, set]:
    calls = request.reference_calls()
    first, second = request.functions[0]["parameters"]["required"]
    return {c["arguments"][first] for c in calls}, {c["arguments"][second] for c in calls}


def test_a_crossed_question_is_one_call_per_pair_of_its_lists() -> None:
    crossed = [r for r in _requests() if r.id.startswith(f"{CROSSED_PREFIX}crossed:")]
    assert crossed
    for request in crossed:
        calls = request.reference_calls()
        firsts, seconds = _values(request)
        assert len(firsts) >= 2 and len(seconds) >= 2
        pairs = {tuple(c["arguments"].values()) for c in calls}
        assert len(calls) == len(pairs) == len(firsts) * len(seconds), request.messages


def test_a_paired_question_is_one_call_per_pair_it_writes_out() -> None:
    paired = [r for r in _requests() if r.id.startswith(f"{CROSSED_PREFIX}paired:")]
    assert paired
    for request in paired:
        question = request.messages[0]["content"]
        calls = request.reference_calls()
        firsts, seconds = _values(request)
        assert len(calls) == len(firsts) == len(seconds) in (2, 3)
        spans = [[question.index(str(v)) for v in c["arguments"].values()] for c in calls]
        for before, after in zip(spans, spans[1:]):
            assert max(before) < min(after), question  # each pair reads where its call sits


def test_every_value_is_named_in_the_question_and_every_topic_is_used() -> None:
    requests = _requests()
    for request in requests:
        question = request.messages[0]["content"]
        for call in request.reference_calls():
            assert call["name"] == request.functions[0]["name"]
            for value in call["arguments"].values():
                assert str(value) in question, (value, question)
    assert {r.functions[0]["name"] for r in requests} == {t.function for t in TOPICS}
    assert len({r.messages[0]["content"] for r in requests}) == len(requests) == CROSSED_REQUESTS
    assert crossed_examples(CROSSED_REQUESTS, DATA_SEED) == requests


def test_only_the_writer_trains_on_them_and_their_functions_are_their_own() -> None:
    assert not {t.function for t in TOPICS} & {f["name"] for f in distractor_pool()}
    for role in (ToolRole.SELECTOR, ToolRole.SINGLE):
        assert not [e for e in role_pool(role) if e.id.startswith(CROSSED_PREFIX)]
    chats = role_chats(ToolRole.ARGUMENTS, role_pool(ToolRole.ARGUMENTS))
    written = [c for c in chats if c["id"].startswith(CROSSED_PREFIX)]
    assert len(written) == CROSSED_REQUESTS
    assert all(c["messages"][-1]["content"].count('"name"') >= 2 for c in written)
