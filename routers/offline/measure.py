"""Outcomes measured on the real engine: every task under every routing action.

An action is a set of roles (served as their uniform mixture) and a path. Running every
action on every prompt gives the outcome table that the gate learns from and that every
policy is scored against:

- one greedy run per action (`TaskOutcomes.outcomes`): what evaluation reads, and the TWN
  label (a prompt is labelled `think` only where some think outcome is correct and no
  direct outcome is);
- optionally N sampled runs per action besides it (`TaskOutcomes.samples`, temperature
  > 0, seeded): with them the policy's target is P(correct | prompt, action), the mean
  over all of an action's runs, rather than one greedy coin flip. A table without
  samples (every table measured before them) reads as one run per action;
- evaluation: the gate and every baseline are read from the same table of one run, side
  by side.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from routers.gate import action_key
from routers.offline.scoring import reasoning_text
from routers.offline.tasks import Task
from routers.prompt import Path_, max_tokens_for, route_messages

if TYPE_CHECKING:
    from agentstack.roles import Role
    from agentstack.service import Service
    from routers.serving import RoleResolver

PATHS: tuple[Path_, ...] = ("direct", "think")


def role_subsets(roles: Sequence[str], max_k: int) -> list[tuple[str, ...]]:
    """Every set of 1..max_k roles, each sorted, in a fixed order."""
    return [tuple(sorted(c)) for k in range(1, max_k + 1) for c in itertools.combinations(sorted(roles), k)]


class Outcome(BaseModel):
    """One measured run: a task under one role set and path."""

    model_config = ConfigDict(extra="forbid")

    roles: list[str]
    path: Path_
    correct: bool
    generated_tokens: int = Field(ge=0)
    reasoning_tokens: int = Field(ge=0)
    latency_s: float = Field(ge=0)
    text: str
    temperature: float = Field(default=0.0, ge=0, description="0: the greedy run.")
    seed: int | None = Field(default=None, description="The sampling seed of a run at temperature > 0.")


class TaskOutcomes(BaseModel):
    """All actions measured on one task, and the TWN label they imply."""

    model_config = ConfigDict(extra="forbid")

    task_id: str
    kind: str
    outcomes: dict[str, Outcome] = Field(description="The greedy run of each action.")
    think_label: bool = Field(description="Thinking is correct where no direct action is.")
    prompt_digest: str | None = Field(
        default=None, description="`prompt_digest` of the task measured, so a reread table is "
        "checked against today's prompts (absent in tables measured before it existed).")
    samples: dict[str, list[Outcome]] = Field(
        default_factory=dict, description="Sampled runs of each action besides its greedy one "
        "(absent in tables measured with none).")

    @model_validator(mode="after")
    def _samples_of_measured_actions(self) -> TaskOutcomes:
        stray = sorted(set(self.samples) - set(self.outcomes))
        if stray:
            raise ValueError(f"samples of actions without a greedy run: {', '.join(stray)}")
        return self

    def outcome(self, roles: Sequence[str], path: Path_) -> Outcome:
        """The greedy run of an action."""
        return self.outcomes[action_key(roles, path)]

    def runs(self, roles: Sequence[str], path: Path_) -> list[Outcome]:
        """Every run of an action: the greedy one first, then its samples."""
        key = action_key(roles, path)
        return [self.outcomes[key], *self.samples.get(key, [])]

    def p_correct(self, roles: Sequence[str], path: Path_) -> float:
        """P(correct | prompt, action) as measured: the share of the action's runs that are right."""
        runs = self.runs(roles, path)
        return sum(o.correct for o in runs) / len(runs)

    def mean_tokens(self, roles: Sequence[str], path: Path_) -> float:
        """Expected generated tokens of the action: the mean over its runs."""
        runs = self.runs(roles, path)
        return sum(o.generated_tokens for o in runs) / len(runs)


def twn_label(outcomes: dict[str, Outcome]) -> bool:
    """Think only where it changes the outcome: some think action is correct, no direct one is."""
    think = any(o.correct for o in outcomes.values() if o.path == "think")
    direct = any(o.correct for o in outcomes.values() if o.path == "direct")
    return think and not direct


def prompt_digest(task: Task) -> str:
    """What the task asks, as one digest (its messages and tools)."""
    return hashlib.sha256(json.dumps([task.messages, task.tools], sort_keys=True).encode()).hexdigest()[:16]


class StaleOutcomes(ValueError):
    """A measured table names prompts that today's task list no longer has."""


def rescore(table: Sequence[TaskOutcomes], tasks: Sequence[Task]) -> list[TaskOutcomes]:
    """The table with every stored reply scored again by its task, and labels to match:
    a table measured under an older scorer is read with today's (strict) one.

    Raises:
        StaleOutcomes: a row's task is gone or asks something else now; measure again."""
    by_id = {t.id: t for t in tasks}
    rows = []
    for row in table:
        task = by_id.get(row.task_id)
        if task is None or (row.prompt_digest is not None and row.prompt_digest != prompt_digest(task)):
            raise StaleOutcomes(f"the measured table's task {row.task_id!r} is not today's; "
                                "measure the table again (`agentstack gate train`)")
        outcomes = {k: o.model_copy(update={"correct": task.score(o.text)}) for k, o in row.outcomes.items()}
        samples = {k: [o.model_copy(update={"correct": task.score(o.text)}) for o in runs]
                   for k, runs in row.samples.items()}
        rows.append(row.model_copy(update={"outcomes": outcomes, "samples": samples,
                                           "think_label": twn_label(outcomes)}))
    return rows


@dataclass(frozen=True, slots=True)
class MeasureConfig:
    """Which actions run, and how many times each.

    `samples` runs at `temperature` come besides the greedy one; sample i is seeded
    `seed + i`, the same for every prompt and action, so a table can be measured again."""

    roles: tuple[str, ...]
    max_k: int = 2
    concurrency: int = 24
    samples: int = 0
    temperature: float = 0.7
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples < 0:
            raise ValueError(f"samples must be >= 0, not {self.samples}")
        if self.samples and self.temperature <= 0:
            raise ValueError("sampled runs need a temperature > 0")

    @property
    def runs_per_action(self) -> int:
        return 1 + self.samples


async def run_action(service: Service, role: Role, task: Task, path: Path_, *, temperature: float = 0.0,
                     seed: int | None = None) -> Outcome:
    """Serve one task under `role` and `path`, exactly as `model: auto` serves it: greedily,
    or sampled at `temperature` with `seed`."""
    from vllm import SamplingParams

    assert service.engine is not None
    messages = route_messages(task.messages, task.tools, think=path == "think")
    prompt_ids = service.engine.chat_prompt(messages)
    room = service.settings.max_model_len - len(prompt_ids)
    params = SamplingParams(temperature=temperature, seed=seed if temperature > 0 else None,
                            max_tokens=max(1, min(max_tokens_for(path), room)))
    started = time.perf_counter()
    final = None
    async for output in service.stream(role, prompt_ids, params, request_id=f"gate-{uuid.uuid4().hex}"):
        final = output
    latency = time.perf_counter() - started
    assert final is not None
    completion = final.outputs[0]
    reasoning = reasoning_text(completion.text)
    reasoning_tokens = len(service.engine.text_prompt(reasoning)) if reasoning else 0
    return Outcome(roles=sorted(role_names(role)), path=path, correct=task.score(completion.text),
                   generated_tokens=len(completion.token_ids),
                   reasoning_tokens=min(reasoning_tokens, len(completion.token_ids)),
                   latency_s=round(latency, 4), text=completion.text, temperature=temperature,
                   seed=seed if temperature > 0 else None)


def role_names(role: Role) -> list[str]:
    """The roles a served role stands for: a mixture's parts, or the role itself."""
    return list(getattr(role, "parts", None) or [role.name])


async def measure(
    service: Service,
    resolver: RoleResolver,
    tasks: Sequence[Task],
    config: MeasureConfig,
    *,
    on_done: Callable[[], None] | None = None,
) -> list[TaskOutcomes]:
    """Run every task under every action (role subset x path) on the engine, concurrently:
    once greedily, then `config.samples` times sampled."""
    subsets = role_subsets(config.roles, config.max_k)
    served = {s: await resolver.role_for(service, s) for s in subsets}
    semaphore = asyncio.Semaphore(config.concurrency)

    async def one(task: Task, subset: tuple[str, ...], path: Path_, sample: int | None
                  ) -> tuple[str, str, int | None, Outcome]:
        async with semaphore:
            if sample is None:
                outcome = await run_action(service, served[subset], task, path)
            else:
                outcome = await run_action(service, served[subset], task, path, temperature=config.temperature,
                                           seed=config.seed + sample)
        outcome.roles = list(subset)
        if on_done is not None:
            on_done()
        return task.id, action_key(subset, path), sample, outcome

    draws: list[int | None] = [None, *range(config.samples)]
    jobs = [one(t, s, p, d) for t in tasks for s in subsets for p in PATHS for d in draws]
    results = await asyncio.gather(*jobs)
    greedy: dict[str, dict[str, Outcome]] = {t.id: {} for t in tasks}
    sampled: dict[str, dict[str, list[Outcome]]] = {t.id: {} for t in tasks}
    for task_id, key, sample, outcome in results:  # gather keeps job order: samples stay in seed order
        if sample is None:
            greedy[task_id][key] = outcome
        else:
            sampled[task_id].setdefault(key, []).append(outcome)
    return [TaskOutcomes(task_id=t.id, kind=t.kind, outcomes=greedy[t.id], think_label=twn_label(greedy[t.id]),
                         prompt_digest=prompt_digest(t), samples=sampled[t.id])
            for t in tasks]


def n_actions(config: MeasureConfig) -> int:
    return len(role_subsets(config.roles, config.max_k)) * len(PATHS)


def n_runs(config: MeasureConfig, n_tasks: int) -> int:
    """Engine runs `measure` makes for `n_tasks` prompts."""
    return n_tasks * n_actions(config) * config.runs_per_action


def _row_json(row: TaskOutcomes) -> str:
    """A row as one line; a greedy run's sampling fields (always 0 and none) and an empty
    `samples` are left out, so a table without samples is written as before they existed."""
    exclude: dict[str, Any] = {"outcomes": {key: {"temperature", "seed"} for key in row.outcomes}}
    if not row.samples:
        exclude["samples"] = True
    return row.model_dump_json(exclude=exclude)


def write_outcomes(path: Path, table: Sequence[TaskOutcomes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(_row_json(t) + "\n" for t in table), encoding="utf-8")


def read_outcomes(path: Path) -> list[TaskOutcomes]:
    """Read and validate an outcomes file (one `TaskOutcomes` per line)."""
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(TaskOutcomes.model_validate_json(line))
            except ValueError as e:
                raise ValueError(f"{path.name}:{lineno}: {e}") from e
    return rows


def summary(table: Sequence[TaskOutcomes]) -> dict[str, object]:
    """Per action: greedy accuracy and mean P(correct) over the table; runs per action; and
    how many prompts are labelled think."""
    greedy: dict[str, list[bool]] = {}
    soft: dict[str, list[float]] = {}
    for row in table:
        for key, outcome in row.outcomes.items():
            greedy.setdefault(key, []).append(outcome.correct)
            soft.setdefault(key, []).append(row.p_correct(outcome.roles, outcome.path))
    runs = sorted({1 + len(row.samples.get(key, [])) for row in table for key in row.outcomes})
    return {"prompts": len(table), "think_labels": sum(r.think_label for r in table), "runs_per_action": runs,
            "accuracy": {k: round(sum(v) / len(v), 4) for k, v in sorted(greedy.items())},
            "p_correct": {k: round(sum(v) / len(v), 4) for k, v in sorted(soft.items())}}


def dumps(obj: object) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
