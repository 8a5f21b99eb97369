"""How `eval bfcl` tells where a wrong answer went wrong (no engine needed)."""

from __future__ import annotations

from pathlib import Path

from agentstack.offline.bfcl.dataset import examples
from agentstack.chat.tool_shortlist import SHORTLIST_SIZE
from agentstack.offline.bfcl.evaluate import (
    CategoryScore,
    EvalConfig,
    EvalMode,
    MissKind,
    eval_examples,
    listed,
    miss_kind,
    write_report,
)
from agentstack.offline.bfcl.listings import answer_position


def test_a_miss_is_told_by_the_functions_it_named() -> None:
    entry = next(e for e in examples("parallel_multiple", "dev")
                 if len({c["name"] for c in e.reference_calls()}) >= 2)
    wanted = list(dict.fromkeys(c["name"] for c in entry.reference_calls()))
    assert miss_kind(entry, wanted) is MissKind.CALLS
    assert miss_kind(entry, wanted[:1]) is MissKind.SOME
    assert miss_kind(entry, [*wanted, "some_other_function"]) is MissKind.OTHER
    assert miss_kind(entry, []) is MissKind.NONE
    [irrelevant] = examples("irrelevance")[:1]
    assert miss_kind(irrelevant, ["anything"]) is None


def test_the_report_counts_misses_by_kind(tmp_path: Path) -> None:
    score = CategoryScore(category="parallel", mode=EvalMode.ROLES, part="dev", n=10, correct=4,
                          misses={MissKind.CALLS: 5, MissKind.SOME: 1})
    report, _ = write_report([score], tmp_path)
    text = report.read_text()
    assert "## Where the misses went wrong" in text
    assert "| parallel | roles | as given | 6 | 5 | 1 | 0 | 0 |" in text
    assert score.summary()["misses"] == {"right functions, wrong calls": 5, "some of the functions": 1}


def test_the_report_names_a_shortlist_other_than_the_served_one() -> None:
    """Runs that read whole listings unranked or another shortlist size are labelled as such, so their
    rows cannot pass for the served behaviour."""
    def listing(**options: object) -> str:
        return EvalConfig(categories=("multiple",), toolbox_tokens=1500, **options).listing  # type: ignore[arg-type]

    assert listing() == "toolbox 1500 tokens"
    assert listing(shortlist=None) == "toolbox 1500 tokens, caller's order, whole listing"
    assert listing(shortlist=SHORTLIST_SIZE + 3) == f"toolbox 1500 tokens, shortlist {SHORTLIST_SIZE + 3}"
    assert listing(rotate=True) == "every rotation, toolbox 1500 tokens"


def test_a_rotated_run_asks_every_question_with_its_right_function_at_every_place() -> None:
    _, questions = eval_examples("multiple", 10)
    asked = listed(questions, EvalConfig(categories=("multiple",), rotate=True), len)
    assert len(asked) == sum(len(q.functions) for q in questions)
    for question in questions:
        places = sorted(answer_position(a) for a in asked if a.id == question.id)
        assert places == list(range(len(question.functions)))
