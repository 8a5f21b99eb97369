"""`agentstack eval gate`: the gate against the policies a user would compare it with.

All policies are read from one outcome table measured in the same run on held-out
prompts (`routers.offline.measure`, `routers.offline.heldout`), so they are compared side
by side, prompt by prompt:

- `gate`: the gate evaluated; beside it the gate file written for comparison
  (`gate-supervised.json`): `gate (supervised only)` for a role-and-think gate (its head
  before RLOO), `gate (exact objective)` for a policy gate (the exact expected-reward
  policy at the same k and lam, the same as `gate` unless RLOO won on validation);
- `always-think` / `never-think`: the gate's roles, path forced;
- `fixed:<role>:<path>`: one role on one path for everything, for every role the gate may
  choose and both paths;
- `per-kind rule`: per task kind the action that did best on the *training* outcomes
  (kinds training never saw get the best action over all training prompts); it needs
  the training table and is left out without one;
- `think-if-digits`: the gate's roles, thinking exactly when the prompt has a digit;
- `random`: a seeded random role set of the gate's k and a random path;
- `oracle`: per prompt the cheapest correct action (or the cheapest one when none is).

The gate's cost is measured on the serving path: per request, features plus head, next
to the latency of the request it routes, run one at a time on an otherwise idle engine.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from routers.gate import RouteDecision
from routers.offline.measure import PATHS, Outcome, TaskOutcomes, action_key, role_subsets
from routers.offline.stats import PairedTest, mcnemar, standard_error
from routers.offline.tasks import Task
from routers.prompt import Path_

RANDOM_SEED = 0
# The policies that route every prompt the same way, whatever it says (one role set, one
# path): the gate must beat the best of them by two standard errors. `always-think` and
# `never-think` keep the gate's roles, so they are compared with it one by one instead.
FIXED_PREFIX = "fixed:"
SUPERVISED_ONLY = "gate (supervised only)"
EXACT_OBJECTIVE = "gate (exact objective)"

Action = tuple[tuple[str, ...], Path_]
Choice = Callable[[int, TaskOutcomes], Action]


@dataclass(frozen=True, slots=True)
class Tally:
    """Correct answers and tokens of one policy over a group of prompts."""

    n: int = 0
    correct: int = 0
    reasoning_tokens: int = 0
    generated_tokens: int = 0
    think_path_tokens: int = 0
    """Every token generated on the prompts where the policy reasoned first, inside the
    think tags or not: what reasoning costs."""

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def stderr(self) -> float:
        return standard_error(self.correct, self.n)


@dataclass(slots=True)
class PolicyScore:
    """The outcome a policy gets on each prompt, in table order."""

    policy: str
    kinds: list[str] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)

    def add(self, kind: str, outcome: Outcome) -> None:
        self.kinds.append(kind)
        self.outcomes.append(outcome)

    def tally(self, kinds: Collection[str] | None = None) -> Tally:
        """Totals over the prompts of `kinds` (all prompts for None)."""
        chosen = [o for k, o in zip(self.kinds, self.outcomes) if kinds is None or k in kinds]
        return Tally(len(chosen), sum(o.correct for o in chosen), sum(o.reasoning_tokens for o in chosen),
                     sum(o.generated_tokens for o in chosen),
                     sum(o.generated_tokens for o in chosen if o.path == "think"))

    @property
    def correct_flags(self) -> list[bool]:
        return [o.correct for o in self.outcomes]

    @property
    def accuracy(self) -> float:
        return self.tally().accuracy

    @property
    def stderr(self) -> float:
        return self.tally().stderr

    @property
    def reasoning_tokens(self) -> int:
        return self.tally().reasoning_tokens

    @property
    def generated_tokens(self) -> int:
        return self.tally().generated_tokens

    @property
    def think_path_tokens(self) -> int:
        return self.tally().think_path_tokens

    def as_json(self) -> dict[str, Any]:
        total = self.tally()
        return {"policy": self.policy, "n": total.n, "accuracy": round(total.accuracy, 4),
                "stderr": round(total.stderr, 4),
                "reasoning_tokens": total.reasoning_tokens, "generated_tokens": total.generated_tokens,
                "think_path_tokens": total.think_path_tokens}


@dataclass(frozen=True, slots=True)
class KindRule:
    """Per task kind the action that did best on the training outcomes."""

    by_kind: dict[str, Action]
    fallback: Action
    """The best action over all training prompts, for kinds the training table lacks."""

    def action(self, kind: str) -> Action:
        return self.by_kind.get(kind, self.fallback)


def table_actions(table: Sequence[TaskOutcomes]) -> list[Action]:
    """The actions measured for every prompt of `table`, in its first row's order."""
    if not table:
        return []
    common = set.intersection(*(set(row.outcomes) for row in table))
    return [(tuple(o.roles), o.path) for key, o in table[0].outcomes.items() if key in common]


def _best_action(rows: Sequence[TaskOutcomes], actions: Sequence[Action]) -> Action:
    """Most correct answers; ties to fewer generated tokens, then to the earlier action."""
    def merit(action: Action) -> tuple[int, int]:
        outcomes = [row.outcome(*action) for row in rows]
        return sum(o.correct for o in outcomes), -sum(o.generated_tokens for o in outcomes)

    return max(actions, key=merit)


def kind_rule(train: Sequence[TaskOutcomes], actions: Sequence[Action]) -> KindRule:
    """The per-kind rule, chosen on training outcomes only, among `actions` (those the
    held-out table measured and the training table has too)."""
    keys = set.intersection(*(set(row.outcomes) for row in train)) if train else set()
    usable = [a for a in actions if action_key(*a) in keys]
    if not usable:
        raise ValueError("the training outcomes share no action with the held-out table")
    kinds = dict.fromkeys(row.kind for row in train)
    by_kind = {kind: _best_action([r for r in train if r.kind == kind], usable) for kind in kinds}
    return KindRule(by_kind, _best_action(train, usable))


def has_digits(task: Task) -> bool:
    """Does any message of the request contain a digit?"""
    return any(ch.isdigit() for m in task.messages for ch in m["content"])


def _score(name: str, table: Sequence[TaskOutcomes], choose: Choice) -> PolicyScore:
    score = PolicyScore(name)
    for i, row in enumerate(table):
        roles, path = choose(i, row)
        score.add(row.kind, row.outcome(roles, path))
    return score


def _oracle(row: TaskOutcomes) -> Outcome:
    return min(row.outcomes.values(), key=lambda o: (not o.correct, o.generated_tokens, o.reasoning_tokens))


def score_policies(
    table: Sequence[TaskOutcomes],
    tasks: Sequence[Task],
    gate: Sequence[RouteDecision],
    supervised: Sequence[RouteDecision],
    roles: Sequence[str],
    top_k: int,
    rule: KindRule | None = None,
    comparison: str = SUPERVISED_ONLY,
) -> tuple[list[PolicyScore], PolicyScore]:
    """Scores of the gate and every baseline (report order) and of the comparison gate
    (`supervised`, named `comparison`)."""
    if [t.id for t in tasks] != [row.task_id for row in table]:
        raise ValueError("tasks and outcome table are not in the same order")
    policies = [
        _score("gate", table, lambda i, r: (tuple(gate[i].roles), gate[i].path)),
        _score("always-think", table, lambda i, r: (tuple(gate[i].roles), "think")),
        _score("never-think", table, lambda i, r: (tuple(gate[i].roles), "direct")),
    ]
    for role in roles:
        for path in PATHS:
            policies.append(_score(f"{FIXED_PREFIX}{role}:{path}", table,
                                   lambda i, r, role=role, path=path: ((role,), path)))
    if rule is not None:
        policies.append(_score("per-kind rule", table, lambda i, r: rule.action(r.kind)))
    policies.append(_score("think-if-digits", table, lambda i, r: (
        tuple(gate[i].roles), "think" if has_digits(tasks[i]) else "direct")))
    rng = random.Random(RANDOM_SEED)
    subsets = [s for s in role_subsets(roles, top_k) if len(s) == top_k]
    draws = [(rng.choice(subsets), rng.choice(PATHS)) for _ in table]
    policies.append(_score("random", table, lambda i, r: draws[i]))
    oracle = PolicyScore("oracle")
    for row in table:
        oracle.add(row.kind, _oracle(row))
    policies.append(oracle)
    return policies, _score(comparison, table,
                            lambda i, r: (tuple(supervised[i].roles), supervised[i].path))


def best_fixed(policies: Sequence[PolicyScore]) -> PolicyScore:
    """The most accurate policy that ignores the prompt (one role set on one path for
    everything); ties go to the one listed first."""
    return max((p for p in policies if p.policy.startswith(FIXED_PREFIX)), key=lambda p: p.accuracy)


def paired_vs(policies: Sequence[PolicyScore], first: str, second: str) -> PairedTest:
    """McNemar's exact test of two named policies on the same prompts."""
    by_name = {p.policy: p for p in policies}
    return mcnemar(by_name[first].correct_flags, by_name[second].correct_flags)


@dataclass(frozen=True, slots=True)
class Overhead:
    gate_s: list[float]
    request_s: list[float]

    @property
    def share(self) -> float:
        """Median gate cost over median request latency (the request includes the gate)."""
        return statistics.median(self.gate_s) / statistics.median(self.request_s)


def result_json(policies: Sequence[PolicyScore], overhead: Overhead) -> dict[str, Any]:
    """Exactly the object `eval gate --json` prints."""
    paired = paired_vs(policies, "gate", "always-think")
    return {"n": policies[0].tally().n, "policies": [p.as_json() for p in policies],
            "gate_overhead_share": round(overhead.share, 4),
            "gate_vs_always_think": {"gate_only": paired.only_first, "always_think_only": paired.only_second,
                                     "p_value": round(paired.p_value, 4)}}
