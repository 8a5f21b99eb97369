"""The gate's baselines, statistics and report, read from small hand-built outcome tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from routers.gate import RouteDecision
from routers.offline.evaluate import (
    Overhead,
    PolicyScore,
    best_fixed,
    has_digits,
    kind_rule,
    result_json,
    score_policies,
    table_actions,
)
from routers.offline.measure import (
    Outcome,
    StaleOutcomes,
    TaskOutcomes,
    action_key,
    prompt_digest,
    rescore,
    twn_label,
)
from routers.offline.report import write_report
from routers.offline.stats import exact_binomial_two_sided, mcnemar, standard_error
from routers.offline.tasks import Task
from routers.prompt import Path_

ROLES = ("a", "b")
ACTIONS: list[tuple[tuple[str, ...], Path_]] = [((r,), p) for r in ROLES for p in ("direct", "think")]


def _outcome(roles: tuple[str, ...], path: Path_, correct: bool, *, tokens: int = 10) -> Outcome:
    return Outcome(roles=list(roles), path=path, correct=correct, generated_tokens=tokens + (20 if path == "think" else 0),
                   reasoning_tokens=20 if path == "think" else 0, latency_s=0.1,
                   text="Answer: 1" if correct else "Answer: 0")


def _row(task_id: str, kind: str, correct: set[str], tokens: int = 10) -> TaskOutcomes:
    """A measured row: `correct` names the action keys that answered right."""
    outcomes = {action_key(r, p): _outcome(r, p, action_key(r, p) in correct, tokens=tokens) for r, p in ACTIONS}
    return TaskOutcomes(task_id=task_id, kind=kind, outcomes=outcomes, think_label=twn_label(outcomes))


def _task(task_id: str, kind: str, text: str) -> Task:
    return Task(id=task_id, kind=kind, messages=[{"role": "user", "content": text}], answer="1")  # type: ignore[arg-type]


def _decision(role: str, path: Path_) -> RouteDecision:
    return RouteDecision(roles=(role,), weights=(1.0,), path=path, role_probs={role: 1.0}, think_prob=0.5, reason="")


# Four held-out prompts; `a|think` is right on the arithmetic, `b|direct` on the chat.
TABLE = [
    _row("h:0", "arith-easy", {"a|think"}),
    _row("h:1", "arith-easy", {"a|think", "a|direct"}),
    _row("h:2", "chat", {"b|direct"}),
    _row("h:3", "units", {"a|think", "b|think"}),
]
TASKS = [_task("h:0", "arith-easy", "Ana has 3 pens."), _task("h:1", "arith-easy", "Tom has 4 cards."),
         _task("h:2", "chat", "What is the capital of Chile?"), _task("h:3", "units", "Hours in 2 days?")]
GATE = [_decision("a", "direct"), _decision("a", "direct"), _decision("b", "direct"), _decision("a", "think")]


def _scores(rule_table: list[TaskOutcomes] | None = None) -> dict[str, PolicyScore]:
    rule = kind_rule(rule_table, table_actions(TABLE)) if rule_table else None
    policies, supervised = score_policies(TABLE, TASKS, GATE, GATE, ROLES, 1, rule)
    return {p.policy: p for p in [*policies, supervised]}


def test_every_baseline_is_read_from_the_table() -> None:
    scores = _scores()
    assert [scores[f"fixed:{r[0]}:{p}"].correct_flags for r, p in ACTIONS] == [
        [False, True, False, False], [True, True, False, True],
        [False, False, True, False], [False, False, False, True]]
    assert scores["gate"].correct_flags == [False, True, True, True]
    assert scores["always-think"].correct_flags == [True, True, False, True]  # the gate's roles, think forced
    assert scores["never-think"].correct_flags == [False, True, True, False]
    assert scores["think-if-digits"].correct_flags == [True, True, True, True]  # only the chat has no digit
    assert scores["oracle"].correct_flags == [True, True, True, True]
    assert scores["oracle"].outcomes[1].path == "direct"  # the cheapest correct action
    assert scores["always-think"].reasoning_tokens == 80 and scores["never-think"].reasoning_tokens == 0
    assert "per-kind rule" not in scores
    random_actions = [(tuple(o.roles), o.path) for o in scores["random"].outcomes]
    assert all(a in ACTIONS for a in random_actions)
    assert random_actions == [(tuple(o.roles), o.path) for o in _scores()["random"].outcomes]


def test_tallies_by_kind_and_part() -> None:
    think = _scores()["always-think"]
    arith = think.tally(["arith-easy"])
    assert (arith.n, arith.correct, arith.reasoning_tokens, arith.generated_tokens) == (2, 2, 40, 60)
    assert think.tally(["units", "chat"]).correct == 1
    assert think.accuracy == 0.75 and think.stderr == pytest.approx(standard_error(3, 4))


def test_per_kind_rule_is_chosen_on_the_training_table_only() -> None:
    # On training, `b|think` is best for arithmetic and `a|direct` for chat: the opposite of
    # what the held-out table rewards.
    train = [
        _row("t:0", "arith-easy", {"b|think"}),
        _row("t:1", "arith-easy", {"b|think", "a|think"}),
        _row("t:2", "chat", {"a|direct"}),
        _row("t:3", "chat", {"a|direct", "b|think"}),
    ]
    rule = kind_rule(train, table_actions(TABLE))
    assert rule.by_kind == {"arith-easy": (("b",), "think"), "chat": (("a",), "direct")}
    assert rule.fallback == (("b",), "think")  # best over all training prompts (3 of 4)
    assert rule.action("units") == rule.fallback
    scores = _scores(train)
    assert scores["per-kind rule"].correct_flags == [False, False, False, True]
    assert [(tuple(o.roles), o.path) for o in scores["per-kind rule"].outcomes] == [
        (("b",), "think"), (("b",), "think"), (("a",), "direct"), (("b",), "think")]


def test_per_kind_rule_breaks_ties_by_tokens() -> None:
    train = [_row("t:0", "chat", {"a|direct", "a|think"})]
    assert kind_rule(train, ACTIONS).by_kind["chat"] == (("a",), "direct")


def test_has_digits() -> None:
    assert has_digits(TASKS[0]) and not has_digits(TASKS[2])


def test_tasks_must_match_the_table() -> None:
    with pytest.raises(ValueError, match="same order"):
        score_policies(TABLE, TASKS[::-1], GATE, GATE, ROLES, 1)


def test_mcnemar_exact_p_values() -> None:
    assert exact_binomial_two_sided(10, 2) == pytest.approx(0.03857, abs=1e-5)
    assert exact_binomial_two_sided(2, 10) == exact_binomial_two_sided(10, 2)
    assert exact_binomial_two_sided(0, 0) == 1.0
    assert exact_binomial_two_sided(3, 3) == 1.0
    assert exact_binomial_two_sided(0, 5) == pytest.approx(0.0625)
    first = [True] * 10 + [False] * 2 + [True] * 5 + [False] * 7
    second = [False] * 10 + [True] * 2 + [True] * 5 + [False] * 7
    test = mcnemar(first, second)
    assert (test.only_first, test.only_second) == (10, 2)
    assert test.p_value == pytest.approx(0.03857, abs=1e-5)


def _policy(name: str, flags: list[bool], kinds: list[str]) -> PolicyScore:
    return PolicyScore(name, kinds, [_outcome(("a",), "think", f) for f in flags])


def test_targets_compare_the_gate_with_always_think_and_the_best_fixed_policy(tmp_path: Path) -> None:
    assert best_fixed(list(_scores().values())).policy == "fixed:a:think"  # always-think keeps the gate's roles
    table = [_row(f"h:{i}", "arith-easy" if i < 10 else "units", set()) for i in range(20)]
    kinds = [row.kind for row in table]
    gate = _policy("gate", [True] * 14 + [False] * 6, kinds)
    think = _policy("always-think", [True] * 15 + [False] * 5, kinds)
    fixed = _policy("fixed:a:direct", [True] * 10 + [False] * 10, kinds)
    assert best_fixed([gate, think, fixed]) is fixed
    files = write_report(tmp_path, [gate, think, fixed], gate, Overhead([0.01], [1.0]), table,
                         {"top_k": 1, "roles": list(ROLES), "layer": 4}, "eval")
    text = files.report.read_text()
    assert "| accuracy ≥ always-think | 0.700 vs 0.750 | no |" in text
    assert "| accuracy ≥ best fixed role × path (fixed:a:direct) + 2 s.e. | 0.700 vs 0.724 | no |" in text
    assert "| think-path tokens ≤ 60% of always-think's" in text and "(100.0%) | no |" in text
    assert "the gate alone is right on 0, always-think alone on 1; two-sided p = 1.0000" in text
    assert "Per-kind rule: left out" in text
    assert "in-template: accuracy ± s.e." in text and "out-of-template: accuracy ± s.e." in text
    assert "| always-think | 0.750 ± 0.097 | 400 | 600 | 1.000 ± 0.000 | 200 | 300 | 0.500 ± 0.158 |" in text
    assert [p.name for p in files.plots] == ["eval-gate.png", "eval-gate-tokens.png"]
    assert all(p.stat().st_size > 0 for p in files.plots)


def test_result_json_has_the_paired_test() -> None:
    scores = _scores()
    policies = [p for p in scores.values() if p.policy != "gate (supervised only)"]
    summary = result_json(policies, Overhead([0.01], [1.0]))
    assert summary["gate_vs_always_think"] == {"gate_only": 1, "always_think_only": 1, "p_value": 1.0}
    assert {"policy", "n", "accuracy", "stderr", "reasoning_tokens", "generated_tokens",
            "think_path_tokens"} == set(summary["policies"][0])
    assert summary["n"] == summary["policies"][0]["n"] == policies[0].tally().n > 0


def test_rescore_applies_the_strict_scorer_to_stored_replies() -> None:
    task = Task(id="t:chat:0", kind="chat", messages=[{"role": "user", "content": "Capital of Portugal?"}],
                answer="Lisbon", scoring="text")
    replies = {"a|direct": "Lisbon.", "a|think": '{"name": "capital", "arguments": {"city": "Lisbon"}}',
               "b|direct": "Porto, not Lisbon.", "b|think": "<think>Lisbon</think>\nLisbon"}
    outcomes = {k: Outcome(roles=[k[0]], path=k.split("|")[1], correct=True, generated_tokens=3,  # type: ignore[arg-type]
                           reasoning_tokens=0, latency_s=0.1, text=text) for k, text in replies.items()}
    lenient = TaskOutcomes(task_id=task.id, kind="chat", outcomes=outcomes, think_label=False)
    [strict] = rescore([lenient], [task])
    assert {k: o.correct for k, o in strict.outcomes.items()} == {
        "a|direct": True, "a|think": False, "b|direct": False, "b|think": True}
    assert strict.think_label is False


def test_per_kind_rule_needs_a_shared_action() -> None:
    with pytest.raises(ValueError, match="share no action"):
        kind_rule([], ACTIONS)


def test_rescore_refuses_a_table_measured_on_other_prompts() -> None:
    task = Task(id="t:chat:0", kind="chat", messages=[{"role": "user", "content": "Capital of Portugal?"}],
                answer="Lisbon", scoring="text")
    outcome = Outcome(roles=["a"], path="direct", correct=True, generated_tokens=1, reasoning_tokens=0,
                      latency_s=0.1, text="Lisbon.")
    row = TaskOutcomes(task_id=task.id, kind="chat", outcomes={"a|direct": outcome}, think_label=False,
                       prompt_digest=prompt_digest(task))
    assert rescore([row], [task])[0].outcomes["a|direct"].correct
    changed = Task(id=task.id, kind="chat", messages=[{"role": "user", "content": "Capital of Spain?"}],
                   answer="Madrid", scoring="text")
    with pytest.raises(StaleOutcomes, match="t:chat:0"):
        rescore([row], [changed])
    with pytest.raises(StaleOutcomes):
        rescore([row], [])


def test_think_path_tokens_count_every_token_where_the_policy_reasoned() -> None:
    """Reasoning costs all the tokens of a think-path answer, inside the tags or not; a
    direct answer costs none."""
    score = PolicyScore("gate", ["units", "units"], [_outcome(("a",), "think", True, tokens=30),
                                                     _outcome(("a",), "direct", True, tokens=7)])
    assert score.think_path_tokens == 50  # 30 + the helper's 20 inside the tags
    assert score.generated_tokens == 57
