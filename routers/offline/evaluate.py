"""`agentstack eval gate`: the gate against the policies a user would compare it with.

All policies are read from one outcome table measured in the same run on held-out
prompts (`routers.offline.measure`), so they are compared side by side:

- `gate`: the shipped gate (supervised + RLOO); `gate (supervised only)` in the report;
- `always-think` / `never-think`: the gate's roles, path forced;
- `fixed:<role>`: one role for everything, on the path its roles-file entry names;
- `random`: a seeded random role set of the gate's k and a random path;
- `oracle`: per prompt the cheapest correct action (or the cheapest one when none is).

The gate's cost is measured on the serving path: per request, features plus head, next
to the latency of the request it routes, run one at a time on an otherwise idle engine.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from routers.gate import RouteDecision
from routers.offline.measure import PATHS, Outcome, TaskOutcomes, role_subsets
from routers.prompt import Path_

RANDOM_SEED = 0


@dataclass(slots=True)
class PolicyScore:
    policy: str
    n: int = 0
    correct: int = 0
    reasoning_tokens: int = 0
    generated_tokens: int = 0
    by_kind: dict[str, list[int]] = field(default_factory=dict)

    def add(self, kind: str, outcome: Outcome) -> None:
        self.n += 1
        self.correct += int(outcome.correct)
        self.reasoning_tokens += outcome.reasoning_tokens
        self.generated_tokens += outcome.generated_tokens
        seen = self.by_kind.setdefault(kind, [0, 0])
        seen[0] += int(outcome.correct)
        seen[1] += 1

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def stderr(self) -> float:
        p = self.accuracy
        return math.sqrt(p * (1 - p) / self.n) if self.n else 0.0

    def as_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "accuracy": round(self.accuracy, 4),
                "reasoning_tokens": self.reasoning_tokens, "generated_tokens": self.generated_tokens}


def _score(name: str, table: Sequence[TaskOutcomes], choose: Any) -> PolicyScore:
    score = PolicyScore(name)
    for i, row in enumerate(table):
        roles, path = choose(i, row)
        score.add(row.kind, row.outcome(roles, path))
    return score


def _oracle(row: TaskOutcomes) -> Outcome:
    return min(row.outcomes.values(), key=lambda o: (not o.correct, o.generated_tokens, o.reasoning_tokens))


def score_policies(
    table: Sequence[TaskOutcomes],
    gate: Sequence[RouteDecision],
    supervised: Sequence[RouteDecision],
    role_paths: Mapping[str, Path_],
    roles: Sequence[str],
    top_k: int,
) -> tuple[list[PolicyScore], PolicyScore]:
    """Scores of the issue's policies (JSON order) and of the supervised-only gate."""
    policies = [
        _score("gate", table, lambda i, r: (gate[i].roles, gate[i].path)),
        _score("always-think", table, lambda i, r: (gate[i].roles, "think")),
        _score("never-think", table, lambda i, r: (gate[i].roles, "direct")),
    ]
    for role in roles:
        policies.append(_score(f"fixed:{role}", table, lambda i, r, role=role: ((role,), role_paths[role])))
    rng = random.Random(RANDOM_SEED)
    subsets = [s for s in role_subsets(roles, top_k) if len(s) == top_k]
    draws = [(rng.choice(subsets), rng.choice(PATHS)) for _ in table]
    policies.append(_score("random", table, lambda i, r: draws[i]))
    oracle = PolicyScore("oracle")
    for row in table:
        oracle.add(row.kind, _oracle(row))
    policies.append(oracle)
    return policies, _score("gate (supervised only)", table, lambda i, r: (supervised[i].roles, supervised[i].path))


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
    return {"policies": [p.as_json() for p in policies], "gate_overhead_share": round(overhead.share, 4)}


def write_report(
    out_dir: Path,
    policies: Sequence[PolicyScore],
    supervised: PolicyScore,
    overhead: Overhead,
    table: Sequence[TaskOutcomes],
    gate_info: Mapping[str, Any],
    command: str,
) -> tuple[Path, Path]:
    """reports/eval-gate.md and eval-gate.png."""
    from agentstack.offline.bench.report import markdown_table

    kinds = sorted({row.kind for row in table})
    rows = []
    for p in [*policies[:1], supervised, *policies[1:]]:
        rows.append([p.policy, f"{p.accuracy:.3f} ± {p.stderr:.3f}", p.reasoning_tokens, p.generated_tokens,
                     *(f"{p.by_kind.get(k, [0, 0])[0]}/{p.by_kind.get(k, [0, 0])[1]}" for k in kinds)])
    table_md = markdown_table(["policy", "accuracy ± s.e.", "reasoning tokens", "generated tokens", *kinds], rows)
    by_name = {p.policy: p for p in policies}
    fixed = [p for p in policies if p.policy.startswith("fixed:")]
    best_fixed = max(fixed, key=lambda p: p.accuracy)
    think = by_name["always-think"]
    saved = 1 - by_name["gate"].reasoning_tokens / think.reasoning_tokens if think.reasoning_tokens else 0.0
    targets = markdown_table(["target", "measured", "met"], [
        [f"accuracy ≥ best fixed ({best_fixed.policy})",
         f"{by_name['gate'].accuracy:.3f} vs {best_fixed.accuracy:.3f}",
         "yes" if by_name["gate"].accuracy >= best_fixed.accuracy - best_fixed.stderr else "no"],
        ["≥ 40% fewer reasoning tokens than always-think", f"{saved:.1%} fewer",
         "yes" if saved >= 0.4 else "no"],
        ["gate cost ≤ 5% of median latency", f"{overhead.share:.2%}", "yes" if overhead.share <= 0.05 else "no"],
    ])
    labels = sum(r.think_label for r in table)
    text = "\n".join([
        "# eval gate",
        "",
        f"Command: `{command}`",
        "",
        f"{len(table)} held-out prompts ({', '.join(f'{k}: {sum(r.kind == k for r in table)}' for k in kinds)}); "
        f"think helps (TWN label) on {labels}. Every policy is read from one table of "
        f"{len(table) * len(next(iter(table)).outcomes)} engine runs made in this command.",
        "",
        table_md,
        "",
        targets,
        "",
        f"Gate cost: median {statistics.median(overhead.gate_s) * 1000:.1f} ms per request "
        f"(features + head, {len(overhead.gate_s)} requests one at a time); median request latency "
        f"{statistics.median(overhead.request_s) * 1000:.0f} ms.",
        "",
        f"Gate: top_k={gate_info.get('top_k')}, roles {', '.join(gate_info.get('roles', []))}, "
        f"features from layer {gate_info.get('layer')}.",
        "",
    ])
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / "eval-gate.md"
    report.write_text(text, encoding="utf-8")
    shown = [*policies[:1], supervised, *policies[1:]]
    plot = _policy_chart(out_dir / "eval-gate.png", "eval gate (held-out prompts)", {
        "accuracy": {p.policy: p.accuracy for p in shown},
        "reasoning tokens": {p.policy: float(p.reasoning_tokens) for p in shown},
        "generated tokens": {p.policy: float(p.generated_tokens) for p in shown},
    })
    return report, plot


def _policy_chart(path: Path, title: str, panels: Mapping[str, Mapping[str, float]]) -> Path:
    """One horizontal-bar panel per metric: policy names are long, and there are many."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from agentstack.offline.bench.report import save_figure

    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False, sharey=True)
    for ax, (metric, values) in zip(axes[0], panels.items()):
        names = list(values)
        colors = ["#C44E52" if n == "gate" else "#DD8452" if n.startswith("gate") else "#4C72B0" for n in names]
        bars = ax.barh(names, list(values.values()), color=colors)
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
        ax.set_title(metric)
        ax.invert_yaxis()
        ax.margins(x=0.2)
    fig.suptitle(title)
    return save_figure(fig, path)
