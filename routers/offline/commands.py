"""The work behind `agentstack gate train` and `agentstack eval gate`, on a started service."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agentstack.config import PACKAGE_DATA
from routers.features import DEFAULT_LAYER, DEFAULT_POOLING, FeatureExtractor, Pooling
from routers.gate import GATE_FILE, SUPERVISED_GATE_FILE, RouteDecision, load_gate
from routers.mixture import MixtureCache
from routers.offline.evaluate import (
    EXACT_OBJECTIVE,
    SUPERVISED_ONLY,
    KindRule,
    Overhead,
    PolicyScore,
    kind_rule,
    score_policies,
    table_actions,
)
from routers.offline.heldout import heldout_tasks
from routers.offline.measure import (
    MeasureConfig,
    TaskOutcomes,
    measure,
    n_runs,
    read_outcomes,
    rescore,
    run_action,
    write_outcomes,
)
from routers.offline.tasks import Task, first_per_kind, gate_tasks
from routers.offline.train import GATE_ROLES, GateTrainConfig, measured_k, train_gate
from routers.serving import RoleResolver

if TYPE_CHECKING:
    from agentstack.service import Service

GATE_DIR = PACKAGE_DATA / "gate"
OUTCOMES_FILE = "outcomes-train.jsonl"
# The engine settings the gate's measurements run under: rank 32 holds a 2-role mixture.
GATE_ENGINE_SETTINGS: dict[str, Any] = {"max_lora_rank": 32, "max_loras": 8}
OVERHEAD_REQUESTS = 24
# `heldout`: the held-out set with its out-of-template part (the default); `test`: the
# earlier in-template-only test prompts, kept to compare with figures measured on them.
EvalSet = Literal["heldout", "test"]
EVAL_SETS: tuple[EvalSet, ...] = ("heldout", "test")


def eval_tasks(name: EvalSet) -> list[Task]:
    return heldout_tasks() if name == "heldout" else gate_tasks("test")


def training_table(path: Path) -> list[TaskOutcomes]:
    """A measured training table, every stored reply scored again with today's strict scorer."""
    return rescore(read_outcomes(path), gate_tasks("train"))


@contextmanager
def progress_bars(enabled: bool) -> Iterator[Callable[[str, int], Callable[[], None]]]:
    """`start(description, total)` returns the callback that advances that bar by one."""
    console = Console(stderr=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, disable=not enabled) as progress:
        def start(description: str, total: int) -> Callable[[], None]:
            task = progress.add_task(description, total=total)
            return lambda: progress.advance(task)

        yield start


def resolver_for(service: Service) -> RoleResolver:
    return RoleResolver(MixtureCache(service.settings.cache_dir / "mixtures"))


def parse_lambdas(text: str) -> tuple[float, ...]:
    """`--lambdas 0,0.0005,0.001`: token prices to select from, each >= 0.

    Raises:
        ValueError: not a comma-separated list of numbers >= 0."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise ValueError(f"not a comma-separated list of numbers: {text!r}") from e
    if not values or any(v < 0 for v in values):
        raise ValueError(f"token prices must be one or more numbers >= 0: {text!r}")
    return values


async def measure_train(service: Service, out: Path, *, show: bool, max_k: int = 2,
                        per_kind: int | None = None, samples: int = 0,
                        temperature: float = MeasureConfig.temperature) -> list[TaskOutcomes]:
    """Every action (role set of at most `max_k` roles x path) on each training prompt,
    greedily and `samples` times sampled: the policy's labels and rewards."""
    tasks = first_per_kind(gate_tasks("train"), per_kind)
    config = MeasureConfig(roles=GATE_ROLES, max_k=max_k, samples=samples, temperature=temperature)
    with progress_bars(show) as start:
        tick = start("measure train prompts", n_runs(config, len(tasks)))
        table = await measure(service, resolver_for(service), tasks, config, on_done=tick)
    write_outcomes(out, table)
    return table


def train_from_outcomes(outcomes: Path, model_dir: Path, out_dir: Path, base_model: str, *,
                        show: bool, layer: int = DEFAULT_LAYER, pooling: Pooling = DEFAULT_POOLING,
                        lambdas: tuple[float, ...] | None = None) -> dict[str, Any]:
    """Train on a measured table; its replies are rescored (and the table rewritten), so
    labels follow the strict scorer even where the table was measured under an older one.
    k is selected among the role-set sizes the table measured; lam among `lambdas`."""
    table = training_table(outcomes)
    write_outcomes(outcomes, table)
    extractor = FeatureExtractor(model_dir, layer=layer, pooling=pooling).load()
    defaults = GateTrainConfig()
    config = GateTrainConfig(ks=tuple(range(1, measured_k(table) + 1)), lambdas=lambdas or defaults.lambdas)
    with progress_bars(show) as start:
        return train_gate(table, gate_tasks("train"), extractor, out_dir, config,
                          base_model=base_model, progress=start)


@dataclass(slots=True)
class GateEval:
    policies: list[PolicyScore]
    supervised: PolicyScore
    overhead: Overhead
    table: list[TaskOutcomes]
    gate_info: dict[str, Any]
    rule: KindRule | None


async def evaluate_gate(service: Service, gate_dir: Path, *, show: bool,
                        overhead_requests: int = OVERHEAD_REQUESTS, per_kind: int | None = None,
                        task_set: EvalSet = "heldout", rule_from: Path | None = None) -> GateEval:
    """Measure the held-out table, decide with the gate and its comparison gate
    (`gate-supervised.json`), then time the served path.

    `rule_from` is the training outcome table the per-kind rule is chosen on (never the
    held-out one); without it that baseline is left out."""
    gate = load_gate(gate_dir / GATE_FILE)
    supervised_gate = load_gate(gate_dir / SUPERVISED_GATE_FILE)
    tasks = first_per_kind(eval_tasks(task_set), per_kind)
    config = MeasureConfig(roles=tuple(gate.spec.roles), max_k=gate.spec.top_k)
    resolver = resolver_for(service)
    extractor = FeatureExtractor(service.model_dir(), layer=gate.spec.features.layer,
                                 pooling=gate.spec.features.pooling).load()
    # Read (and rescore) the training table before the long measurement: a table that no
    # longer matches the training prompts fails here, not after it.
    trained = training_table(rule_from) if rule_from is not None else None
    with progress_bars(show) as start:
        tick = start("measure held-out prompts", n_runs(config, len(tasks)))
        table = await measure(service, resolver, tasks, config, on_done=tick)
        tick = start("gate decisions", len(tasks))
        decisions: list[RouteDecision] = []
        supervised: list[RouteDecision] = []
        for task in tasks:
            vector = extractor.features(task.messages, task.tools)
            decisions.append(gate.decide_features(vector))
            supervised.append(supervised_gate.decide_features(vector))
            tick()
        tick = start("served path, one at a time", overhead_requests)
        gate_s: list[float] = []
        request_s: list[float] = []
        count = min(overhead_requests, len(tasks))
        for task in [tasks[i * len(tasks) // count] for i in range(count)]:  # spread over every kind
            started = time.perf_counter()
            vector = extractor.features(task.messages, task.tools)
            decision = gate.decide_features(vector)
            gate_done = time.perf_counter()
            role = await resolver.role_for(service, decision.roles)
            await run_action(service, role, task, decision.path)
            gate_s.append(gate_done - started)
            request_s.append(time.perf_counter() - started)
            tick()
    rule = kind_rule(trained, table_actions(table)) if trained is not None else None
    comparison = EXACT_OBJECTIVE if supervised_gate.spec.is_policy else SUPERVISED_ONLY
    policies, supervised_score = score_policies(table, tasks, decisions, supervised, gate.spec.roles,
                                                gate.spec.top_k, rule, comparison)
    info = {"top_k": gate.spec.top_k, "roles": gate.spec.roles, "layer": gate.spec.features.layer}
    return GateEval(policies, supervised_score, Overhead(gate_s, request_s), table, info, rule)
