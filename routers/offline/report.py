"""`reports/eval-gate.md` and its plots: the numbers `routers.offline.evaluate` computes,
laid out so the gate can be read against every baseline overall, per part of the
held-out set (in-template, out-of-template) and per kind."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from routers.offline.evaluate import KindRule, Overhead, PolicyScore, Tally, best_fixed, paired_vs
from routers.offline.heldout import template_part
from routers.offline.measure import TaskOutcomes, action_key

REPORT_FILE = "eval-gate.md"
BARS_FILE = "eval-gate.png"
TRADEOFF_FILE = "eval-gate-tokens.png"
PARTS = ("in-template", "out-of-template")


@dataclass(frozen=True, slots=True)
class ReportFiles:
    report: Path
    plots: tuple[Path, ...]


def _accuracy(tally: Tally) -> str:
    return f"{tally.accuracy:.3f} ± {tally.stderr:.3f}" if tally.n else "-"


def _parts(kinds: Sequence[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {part: [] for part in PARTS}
    for kind in kinds:
        groups[template_part(kind)].append(kind)
    return {part: members for part, members in groups.items() if members}


def _tables(shown: Sequence[PolicyScore], kinds: Sequence[str]) -> list[str]:
    from agentstack.offline.bench.report import markdown_table

    groups: dict[str, list[str] | None] = {"all": None, **_parts(kinds)}
    header = ["policy"] + [f"{g}: {m}" for g in groups for m in ("accuracy ± s.e.", "reasoning", "generated")]
    overall = []
    for p in shown:
        cells: list[object] = [p.policy]
        for members in groups.values():
            tally = p.tally(members)
            cells += [_accuracy(tally), tally.reasoning_tokens, tally.generated_tokens]
        overall.append(cells)
    accuracy = [[p.policy, *(_accuracy(p.tally([k])) for k in kinds)] for p in shown]
    tokens = [[p.policy, *(f"{p.tally([k]).reasoning_tokens} / {p.tally([k]).generated_tokens}" for k in kinds)]
              for p in shown]
    return [
        "## Overall and by part", "", markdown_table(header, overall), "",
        "## Accuracy ± s.e. by kind", "", markdown_table(["policy", *kinds], accuracy), "",
        "## Reasoning / generated tokens by kind", "", markdown_table(["policy", *kinds], tokens), "",
    ]


def _targets(policies: Sequence[PolicyScore], overhead: Overhead) -> list[str]:
    from agentstack.offline.bench.report import markdown_table

    by_name = {p.policy: p for p in policies}
    gate, think, fixed = by_name["gate"], by_name["always-think"], best_fixed(policies)
    share = gate.think_path_tokens / think.think_path_tokens if think.think_path_tokens else 0.0
    paired = paired_vs(policies, "gate", "always-think")
    rows: list[list[object]] = [
        ["accuracy ≥ always-think", f"{gate.accuracy:.3f} vs {think.accuracy:.3f}",
         "yes" if gate.accuracy >= think.accuracy else "no"],
        ["think-path tokens ≤ 60% of always-think's (every token generated where a policy reasoned)",
         f"{gate.think_path_tokens} vs {think.think_path_tokens} ({share:.1%})",
         "yes" if think.think_path_tokens and share <= 0.6 else "no"],
        [f"accuracy ≥ best fixed role × path ({fixed.policy}) + 2 s.e.",
         f"{gate.accuracy:.3f} vs {fixed.accuracy + 2 * fixed.stderr:.3f}",
         "yes" if gate.accuracy >= fixed.accuracy + 2 * fixed.stderr else "no"],
        ["gate cost ≤ 5% of median latency", f"{overhead.share:.2%}", "yes" if overhead.share <= 0.05 else "no"],
    ]
    if "per-kind rule" in by_name:
        rule = by_name["per-kind rule"]
        rows.append(["accuracy ≥ per-kind rule", f"{gate.accuracy:.3f} vs {rule.accuracy:.3f}",
                     "yes" if gate.accuracy >= rule.accuracy else "no"])
    return [
        "## Targets", "", markdown_table(["target", "measured", "met"], rows), "",
        (f"Gate vs always-think, McNemar's exact test paired on {gate.tally().n} prompts: the gate alone "
         f"is right on {paired.only_first}, always-think alone on {paired.only_second}; two-sided "
         f"p = {paired.p_value:.4f}."),
        "",
    ]


def _rule_lines(rule: KindRule | None, rule_source: str | None) -> list[str]:
    if rule is None:
        return ["Per-kind rule: left out (no training outcome table was given).", ""]
    chosen = ", ".join(f"{kind} → `{action_key(*action)}`" for kind, action in rule.by_kind.items())
    return [(f"Per-kind rule, chosen on the training outcomes ({rule_source}) only: {chosen}; any other "
             f"kind → `{action_key(*rule.fallback)}` (best over all training prompts)."), ""]


def write_report(
    out_dir: Path,
    policies: Sequence[PolicyScore],
    supervised: PolicyScore,
    overhead: Overhead,
    table: Sequence[TaskOutcomes],
    gate_info: Mapping[str, Any],
    command: str,
    *,
    rule: KindRule | None = None,
    rule_source: str | None = None,
) -> ReportFiles:
    """The markdown report, a bar chart per metric and accuracy against reasoning tokens."""
    kinds = list(dict.fromkeys(row.kind for row in table))
    shown = [*policies[:1], supervised, *policies[1:]]
    counts = {part: ", ".join(f"{k}: {sum(r.kind == k for r in table)}" for k in members)
              for part, members in _parts(kinds).items()}
    text = "\n".join([
        "# eval gate",
        "",
        f"Command: `{command}`",
        "",
        (f"{len(table)} held-out prompts ({'; '.join(f'{part}: {c}' for part, c in counts.items())}); "
         f"think helps (TWN label) on {sum(r.think_label for r in table)}. Every policy is read from one "
         f"table of {sum(len(r.outcomes) for r in table)} engine runs made in this command; replies are "
         f"scored strictly, from their answer field only."),
        "",
        *_tables(shown, kinds),
        *_targets(policies, overhead),
        *_rule_lines(rule, rule_source),
        (f"Gate cost: median {statistics.median(overhead.gate_s) * 1000:.1f} ms per request "
         f"(features + head, {len(overhead.gate_s)} requests one at a time); median request latency "
         f"{statistics.median(overhead.request_s) * 1000:.0f} ms."),
        "",
        (f"Gate: top_k={gate_info.get('top_k')}, roles {', '.join(gate_info.get('roles', []))}, "
         f"features from layer {gate_info.get('layer')}."),
        "",
    ])
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / REPORT_FILE
    report.write_text(text, encoding="utf-8")
    bars = _policy_chart(out_dir / BARS_FILE, "eval gate (held-out prompts)", {
        "accuracy": {p.policy: p.accuracy for p in shown},
        "reasoning tokens": {p.policy: float(p.reasoning_tokens) for p in shown},
        "generated tokens": {p.policy: float(p.generated_tokens) for p in shown},
    })
    return ReportFiles(report, (bars, tradeoff_chart(out_dir / TRADEOFF_FILE, shown)))


GATE_COLORS = ("#C44E52", "#DD8452", "#4C72B0")  # the gate, its comparison gate, the rest


def _color(policy: str) -> str:
    return GATE_COLORS[0] if policy == "gate" else GATE_COLORS[1] if policy.startswith("gate") else GATE_COLORS[2]


def _policy_chart(path: Path, title: str, panels: Mapping[str, Mapping[str, float]]) -> Path:
    """One horizontal-bar panel per metric: policy names are long, and there are many."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from agentstack.offline.bench.report import save_figure

    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 0.3 * max(map(len, panels.values())) + 2),
                             squeeze=False, sharey=True)
    for ax, (metric, values) in zip(axes[0], panels.items()):
        names = list(values)
        bars = ax.barh(names, list(values.values()), color=[_color(n) for n in names])
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
        ax.set_title(metric)
        ax.invert_yaxis()
        ax.margins(x=0.2)
    fig.suptitle(title)
    return save_figure(fig, path)


def tradeoff_chart(path: Path, policies: Sequence[PolicyScore]) -> Path:
    """Accuracy (± one standard error) against reasoning tokens, one point per policy:
    the gate should sit up and to the left of always-think."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from agentstack.offline.bench.report import save_figure

    # Policies that land on the same point (often: a fixed role and always-think) share one label.
    points: dict[tuple[int, float], list[PolicyScore]] = {}
    for p in policies:
        points.setdefault((p.reasoning_tokens, round(p.accuracy, 6)), []).append(p)
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    for (tokens, accuracy), group in points.items():
        color = min((_color(p.policy) for p in group), key=GATE_COLORS.index)
        ax.errorbar(tokens, accuracy, yerr=group[0].stderr, fmt="o", color=color, capsize=3)
        ax.annotate(", ".join(p.policy for p in group), (tokens, accuracy), textcoords="offset points",
                    xytext=(5, 4), fontsize=7)
    ax.set_xlabel("reasoning tokens (all held-out prompts)")
    ax.set_ylabel("accuracy (strict scoring)")
    ax.set_title("eval gate: accuracy against reasoning tokens")
    ax.margins(x=0.15, y=0.1)
    return save_figure(fig, path)
