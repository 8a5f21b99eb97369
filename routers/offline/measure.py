"""Outcomes measured on the real engine: every task under every routing action.

An action is a set of roles (served as their uniform mixture) and a path. Running every
action once per prompt gives the outcome table that the gate learns from and that every
policy is scored against:

- TWN labels: a prompt is labelled `think` only where the best think outcome is correct
  and no direct outcome is (thinking changes the outcome);
- ReMix rewards: each role subset's correctness, looked up while RLOO samples subsets;
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
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

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


def action_key(roles: Sequence[str], path: Path_) -> str:
    return f"{'+'.join(sorted(roles))}|{path}"


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


class TaskOutcomes(BaseModel):
    """All actions measured on one task, and the TWN label they imply."""

    model_config = ConfigDict(extra="forbid")

    task_id: str
    kind: str
    outcomes: dict[str, Outcome]
    think_label: bool = Field(description="Thinking is correct where no direct action is.")
    prompt_digest: str | None = Field(
        default=None, description="`prompt_digest` of the task measured, so a reread table is "
        "checked against today's prompts (absent in tables measured before it existed).")

    def outcome(self, roles: Sequence[str], path: Path_) -> Outcome:
        return self.outcomes[action_key(roles, path)]


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
        rows.append(row.model_copy(update={"outcomes": outcomes, "think_label": twn_label(outcomes)}))
    return rows


@dataclass(frozen=True, slots=True)
class MeasureConfig:
    roles: tuple[str, ...]
    max_k: int = 2
    concurrency: int = 24


async def run_action(service: Service, role: Role, task: Task, path: Path_) -> Outcome:
    """Serve one task greedily under `role` and `path`, exactly as `model: auto` serves it."""
    from vllm import SamplingParams

    assert service.engine is not None
    messages = route_messages(task.messages, task.tools, think=path == "think")
    prompt_ids = service.engine.chat_prompt(messages)
    room = service.settings.max_model_len - len(prompt_ids)
    params = SamplingParams(temperature=0.0, max_tokens=max(1, min(max_tokens_for(path), room)))
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
                   latency_s=round(latency, 4), text=completion.text)


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
    """Run every task under every action (role subset x path) on the engine, concurrently."""
    subsets = role_subsets(config.roles, config.max_k)
    served = {s: await resolver.role_for(service, s) for s in subsets}
    semaphore = asyncio.Semaphore(config.concurrency)

    async def one(task: Task, subset: tuple[str, ...], path: Path_) -> tuple[str, str, Outcome]:
        async with semaphore:
            outcome = await run_action(service, served[subset], task, path)
        outcome.roles = list(subset)
        if on_done is not None:
            on_done()
        return task.id, action_key(subset, path), outcome

    jobs = [one(t, s, p) for t in tasks for s in subsets for p in PATHS]
    results = await asyncio.gather(*jobs)
    by_task: dict[str, dict[str, Outcome]] = {t.id: {} for t in tasks}
    for task_id, key, outcome in results:
        by_task[task_id][key] = outcome
    return [TaskOutcomes(task_id=t.id, kind=t.kind, outcomes=by_task[t.id], think_label=twn_label(by_task[t.id]),
                         prompt_digest=prompt_digest(t))
            for t in tasks]


def n_actions(config: MeasureConfig) -> int:
    return len(role_subsets(config.roles, config.max_k)) * len(PATHS)


def write_outcomes(path: Path, table: Sequence[TaskOutcomes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(t.model_dump_json() + "\n" for t in table), encoding="utf-8")


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
    """Per action: accuracy over the table; and how many prompts are labelled think."""
    actions: dict[str, list[bool]] = {}
    for row in table:
        for key, outcome in row.outcomes.items():
            actions.setdefault(key, []).append(outcome.correct)
    return {"prompts": len(table), "think_labels": sum(r.think_label for r in table),
            "accuracy": {k: round(sum(v) / len(v), 4) for k, v in sorted(actions.items())}}


def dumps(obj: object) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
