"""The gate's policy, trained on small synthetic outcome tables whose prompts are separable
by their features: soft targets, the expected-reward objective, and what validation picks."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import torch

from routers.gate import GATE_FILE, SUPERVISED_GATE_FILE, action_key, load_gate
from routers.offline.measure import Outcome, TaskOutcomes, twn_label
from routers.offline.tasks import Task
from routers.offline.train import (
    Candidate,
    CandidateScore,
    GateTrainConfig,
    decisions,
    fit_policy,
    outcome_tensors,
    policy_actions,
    select,
    stratified_folds,
    train_gate,
    train_policy,
)

ROLES = ("a", "b")
ACTIONS = policy_actions(ROLES, 2)
RUNS = 4  # the greedy run and 3 samples: P(correct) in quarters
DIM = 8
# Per kind, the actions that are ever right: action key -> P(correct). Direct replies take
# 10 tokens, think replies 100; every other action is always wrong.
Spec = dict[str, dict[str, float]]
CONFIG = GateTrainConfig(roles=ROLES, hidden=16, dropout=0.0, lr=1e-2, weight_decay=1e-3, max_epochs=200,
                         patience=200, folds=2, ks=(2,), objectives=("exact",), lambdas=(1e-3,))


def _tokens(path: str) -> int:
    return 100 if path == "think" else 10


def _row(task_id: str, kind: str, right: dict[str, float]) -> TaskOutcomes:
    greedy: dict[str, Outcome] = {}
    samples: dict[str, list[Outcome]] = {}
    for roles, path in ACTIONS:
        key = action_key(roles, path)
        correct = round(right.get(key, 0.0) * RUNS)
        runs = [Outcome(roles=list(roles), path=path, correct=r < correct, generated_tokens=_tokens(path),
                        reasoning_tokens=0, latency_s=0.1, text="", temperature=0.7 if r else 0.0,
                        seed=r - 1 if r else None)
                for r in range(RUNS)]
        greedy[key], samples[key] = runs[0], runs[1:]
    return TaskOutcomes(task_id=task_id, kind=kind, outcomes=greedy, think_label=twn_label(greedy), samples=samples)


def _table(spec: Spec, per_kind: int = 6) -> tuple[list[TaskOutcomes], torch.Tensor]:
    """`per_kind` prompts of each kind; a prompt's features are its kind's random centre
    plus a little noise, so every feature separates the kinds (as pooled states do)."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(len(spec), DIM, generator=generator)
    rows, xs = [], []
    for i in range(per_kind):
        for j, (kind, right) in enumerate(spec.items()):
            rows.append(_row(f"t:{kind}:{i}", kind, right))
            xs.append(centres[j] + 0.05 * torch.randn(DIM, generator=generator))
    return rows, torch.stack(xs)


def _chosen(head: Any, x: torch.Tensor, actions: list[Any], rows: list[TaskOutcomes]) -> dict[str, set[str]]:
    """Per kind, the actions the head chooses on its prompts."""
    out: dict[str, set[str]] = {}
    for row, i in zip(rows, decisions(head, x).tolist()):
        out.setdefault(row.kind, set()).add(action_key(*actions[i]))
    return out


def test_soft_targets_are_the_sample_means() -> None:
    rows, _ = _table({"x": {"a|direct": 0.75, "b|think": 0.25}}, per_kind=2)
    data = outcome_tensors(rows, ACTIONS)
    direct = ACTIONS.index((("a",), "direct"))
    assert data.p_correct[0, direct] == pytest.approx(0.75)
    assert data.p_correct[0, ACTIONS.index((("b",), "think"))] == pytest.approx(0.25)
    for i, row in enumerate(rows):
        for j, (roles, path) in enumerate(ACTIONS):
            runs = row.runs(roles, path)
            assert data.p_correct[i, j] == pytest.approx(sum(o.correct for o in runs) / len(runs))
            assert data.tokens[i, j] == pytest.approx(row.mean_tokens(roles, path))
    assert data.reward(1e-3)[0, direct] == pytest.approx(0.75 - 1e-3 * 10)


def test_an_incomplete_table_is_refused() -> None:
    rows, _ = _table({"x": {"a|direct": 1.0}}, per_kind=1)
    del rows[0].outcomes["a+b|think"]
    with pytest.raises(ValueError, match="a\\+b\\|think"):
        outcome_tensors(rows, ACTIONS)


@pytest.mark.parametrize("objective", ["exact", "rloo"])
def test_the_policy_prefers_the_cheaper_of_equally_correct_actions_and_else_the_correct_one(
        objective: str) -> None:
    """`x`: `a` is right on both paths, direct is cheaper; `y`: only `b` thinking is right."""
    rows, x = _table({"x": {"a|direct": 1.0, "a|think": 1.0}, "y": {"b|think": 1.0}})
    data = outcome_tensors(rows, ACTIONS)
    config = replace(CONFIG, max_epochs=300) if objective == "rloo" else CONFIG
    fit = fit_policy(x, data, torch.arange(len(rows)), config, 1e-3, objective,  # type: ignore[arg-type]
                     epochs=config.max_epochs)
    assert _chosen(fit.head, x, ACTIONS, rows) == {"x": {"a|direct"}, "y": {"b|think"}}


def test_folds_are_stratified_by_kind() -> None:
    kinds = ["x"] * 6 + ["y"] * 4 + ["z"] * 2
    folds = stratified_folds(kinds, 2, seed=0)
    assert sorted(torch.cat(folds).tolist()) == list(range(12))
    for fold in folds:
        assert sorted(kinds[i] for i in fold.tolist()) == ["x"] * 3 + ["y"] * 2 + ["z"]


# `x`: thinking is surely right, direct right 3 times in 4; `y`: thinking surely right,
# direct half the time. The token price decides where direct is worth its misses.
PRICED: Spec = {"x": {"a|think": 1.0, "a|direct": 0.75}, "y": {"b|think": 1.0, "b|direct": 0.5}}


@pytest.mark.parametrize(("slack", "lam", "accuracy"), [(0.0, 0.0, 1.0), (0.15, 4e-3, 0.875), (0.4, 1e-2, 0.625)])
def test_lambda_is_chosen_on_validation(slack: float, lam: float, accuracy: float) -> None:
    """At 0 the policy always thinks (accuracy 1, 100 tokens); at 0.004 it answers `x`
    directly (0.875, 55 tokens); at 0.01 both (0.625, 10 tokens). The most accurate on the
    held-out folds wins, within the slack; inside it, the fewest tokens."""
    rows, x = _table(PRICED)
    config = replace(CONFIG, ks=(1,), lambdas=(0.0, 4e-3, 1e-2), accuracy_slack=slack)
    training = train_policy(rows, x, config)
    by_lam = {s.candidate.lam: s for s in training.scores}
    assert [round(by_lam[v].accuracy, 3) for v in (0.0, 4e-3, 1e-2)] == [1.0, 0.875, 0.625]
    assert [round(by_lam[v].tokens) for v in (0.0, 4e-3, 1e-2)] == [100, 55, 10]
    assert training.chosen.candidate.lam == lam and training.chosen.accuracy == pytest.approx(accuracy)
    assert training.training_info()["lam"] == lam


@pytest.mark.parametrize(("spec", "k"), [
    ({"x": {"a|direct": 1.0}, "y": {"a+b|direct": 1.0}}, 2),  # only the mixture answers `y`
    ({"x": {"a|direct": 1.0}, "y": {"b|direct": 1.0, "a+b|direct": 1.0}}, 1),  # a single role does as well
])
def test_k_is_chosen_on_validation(spec: Spec, k: int) -> None:
    rows, x = _table(spec)
    training = train_policy(rows, x, replace(CONFIG, ks=(1, 2)))
    assert training.chosen.candidate.k == k
    assert max(len(roles) for roles, _ in training.actions) == k
    assert len(training.actions) == len(policy_actions(ROLES, k))  # sizes 1..k x both paths
    assert training.chosen.accuracy == pytest.approx(1.0)


def _score(k: int, objective: str, lam: float, accuracy: float, tokens: float) -> CandidateScore:
    return CandidateScore(Candidate(k, objective, lam), accuracy, tokens, 10)  # type: ignore[arg-type]


def test_selection_keeps_rloo_only_where_it_wins() -> None:
    """k and lam come from the exact objective; RLOO at that k and lam replaces it only if
    it is more accurate, or as accurate with clearly fewer tokens."""
    tied = [_score(1, "rloo", 0.0, 0.8, 30), _score(1, "exact", 0.0, 0.8, 30)]
    assert select(tied).candidate.objective == "exact"
    hair = [_score(1, "exact", 0.0, 0.8, 36.14), _score(1, "rloo", 0.0, 0.8, 36.10)]
    assert select(hair).candidate.objective == "exact", "0.04 tokens fewer is a tie"
    better = [_score(1, "exact", 0.0, 0.8, 30), _score(1, "rloo", 0.0, 0.85, 30)]
    assert select(better).candidate.objective == "rloo"
    cheaper = [_score(1, "exact", 0.0, 0.8, 30), _score(1, "rloo", 0.0, 0.8, 20)]
    assert select(cheaper).candidate.objective == "rloo"
    elsewhere = [_score(1, "exact", 0.0, 0.8, 30), _score(2, "exact", 0.0, 0.7, 30), _score(2, "rloo", 0.0, 0.9, 30)]
    assert select(elsewhere).candidate == Candidate(1, "exact", 0.0)  # RLOO was not at the chosen k
    assert select([_score(2, "exact", 0.0, 0.8, 30), _score(1, "exact", 1e-3, 0.8, 30)]).candidate.k == 1
    assert select([_score(1, "exact", 1e-3, 0.8, 30), _score(1, "exact", 0.0, 0.8, 30)]).candidate.lam == 0.0


def test_rloo_is_compared_with_the_exact_objective_on_the_same_table() -> None:
    rows, x = _table({"x": {"a|direct": 1.0, "a|think": 1.0}, "y": {"b|think": 1.0}})
    training = train_policy(rows, x, replace(CONFIG, objectives=("exact", "rloo"), lambdas=(0.0, 1e-3)))
    assert [s.candidate.objective for s in training.scores] == ["exact", "exact", "rloo"]
    assert training.scores[-1].candidate.lam == training.exact.candidate.lam
    assert training.exact.candidate.objective == "exact"
    assert training.exact.candidate.k == training.chosen.candidate.k
    if training.chosen.candidate.objective == "exact":
        assert training.exact_head is training.head


@dataclass(slots=True)
class _Features:
    """Stands in for the backbone: each prompt's features by its text."""

    by_prompt: dict[str, torch.Tensor]
    layer: int = 4
    pooling: str = "mean"

    def features(self, messages: list[dict[str, str]], tools: Any = None) -> torch.Tensor:
        return self.by_prompt[messages[-1]["content"]]


def test_a_trained_policy_round_trips_through_gate_json_and_decides_the_same(tmp_path: Path) -> None:
    rows, x = _table({"x": {"a|direct": 1.0, "a|think": 1.0}, "y": {"a+b|think": 1.0}, "z": {"b|direct": 0.75}})
    tasks = [Task(id=row.task_id, kind="chat", messages=[{"role": "user", "content": row.task_id}], answer="")
             for row in rows]
    features = _Features({row.task_id: x[i] for i, row in enumerate(rows)})
    config = replace(CONFIG, ks=(1, 2))
    info = train_gate(rows, tasks, features, tmp_path, config, base_model="m")  # type: ignore[arg-type]
    training = train_policy(rows, x, config)  # the same seed and data: the same head
    gate = load_gate(tmp_path / GATE_FILE)
    assert gate.spec.format == "agentstack-gate/2" and gate.spec.top_k == info["top_k"] == 2
    assert [(tuple(a.roles), a.path) for a in gate.spec.actions or []] == training.actions
    assert gate.spec.training["lam"] == training.chosen.candidate.lam
    assert gate.spec.training["runs_per_action"] == [RUNS]
    expected = decisions(training.head, x).tolist()
    for i, row in enumerate(rows):
        decision = gate.decide_features(x[i])
        roles, path = training.actions[expected[i]]
        assert (decision.roles, decision.path) == (roles, path)
        assert decision.weights == tuple(1 / len(roles) for _ in roles)
        assert sum(decision.action_probs.values()) == pytest.approx(1.0)
        assert decision.action_probs[action_key(roles, path)] == max(decision.action_probs.values())
        assert decision.reason.startswith(f"best of {len(training.actions)} actions: {action_key(roles, path)}")
    assert _chosen(training.head, x, training.actions, rows) == {
        "x": {"a|direct"}, "y": {"a+b|think"}, "z": {"b|direct"}}
    assert load_gate(tmp_path / SUPERVISED_GATE_FILE).spec.training["objective"] == "exact"
