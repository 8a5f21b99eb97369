"""`agentstack bench fuzz`: schemathesis over the served OpenAPI document, with every check
schemathesis registers for OpenAPI, in three phases:

- coverage: schemathesis's deterministic boundary cases per operation (valid and invalid
  values, missing and unexpected properties, undeclared methods and media types), a
  sample of each operation's scenarios;
- fuzzing: hypothesis-generated valid (positive) and invalid (negative) requests per
  operation; valid requests to an operation with ids in its path use real ids (a fresh
  thread, a finished run on it, its checkpoint, a served assistant) half of the time;
- stateful: sequences that follow the document's links (`schema.as_state_machine()`), so
  the ids a request uses come from earlier responses: a created thread read, patched,
  run, deleted and read again; a run fetched, joined and cancelled; an assistant found
  and read. (Adapter load and unload are admin operations, refused to the tenant key the
  fuzzer uses, so no link joins them.)

Requests authenticate with the security scheme the document declares (HTTP bearer, with
the key passed in). Every failed check counts, not only server errors; a case whose
checks all pass counts as passed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from agentstack.offline.bench.reliability import require_loopback
from agentstack.offline.bench.report import markdown_table
from agentstack.offline.bench.server import bearer

PHASES = ("coverage", "fuzzing", "stateful")
NO_RESPONSE = "no_response"
"""Counted like a check: a request that got no response at all (connection error, timeout)."""
CASE_TIMEOUT_S = 120
STATEFUL_STEPS = 12
EXAMPLES = 20
SEED_RUN = {"assistant_id": "plan_act_reflect", "input": {"task": "Say hi.", "max_rounds": 1}}
"""A cheap real graph run, for the ids the fuzzer seeds (runs, checkpoints)."""
ID_PARAMETERS = ("thread_id", "run_id", "checkpoint_id", "assistant_id")
POSITIVE_STATUSES = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
"""schemathesis's default `positive_data_acceptance` statuses (5xx fail `not_a_server_error`)."""


@dataclass
class FuzzFailure:
    phase: str
    check: str
    method: str
    path: str
    status: int | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "check": self.check, "method": self.method, "path": self.path,
                "status": self.status, "message": self.message}

    def line(self) -> str:
        return f"{self.check} [{self.phase}] {self.method} {self.path} -> {self.status}: {self.message}"


@dataclass
class FuzzResult:
    cases: int = 0
    phases: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))
    checks: dict[str, int] = field(default_factory=dict)
    """Failures per check; every check that ran is here, with 0 when it never failed."""
    server_errors: int = 0
    stateful_links: int = 0
    """Stateful steps whose request took values from an earlier response through a link."""
    seeded_cases: int = 0
    """Fuzzing-phase cases whose path ids were real (a live thread, run, checkpoint, assistant)."""
    examples: list[FuzzFailure] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return sum(self.checks.values())

    def fail(self, failure: FuzzFailure) -> None:
        self.checks[failure.check] = self.checks.get(failure.check, 0) + 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(failure)

    def summary(self) -> dict[str, Any]:
        return {"cases": self.cases, "failures": self.failures, "server_errors": self.server_errors,
                "checks": dict(sorted(self.checks.items())), "phases": self.phases,
                "stateful_links": self.stateful_links, "seeded_cases": self.seeded_cases,
                "examples": [e.as_dict() for e in self.examples]}


def fuzz_table(result: FuzzResult) -> str:
    """One row per check class, then the totals."""
    rows: list[list[object]] = [[name, count] for name, count in sorted(result.checks.items())]
    rows.append(["**all checks** (failures)", result.failures])
    rows.append(["server errors (5xx)", result.server_errors])
    phases = ", ".join(f"{name} {count}" for name, count in result.phases.items())
    rows.append([f"cases ({phases})", result.cases])
    return markdown_table(["check", "failures"], rows)


def openapi_checks(schema: Any) -> list[Callable[..., Any]]:
    """Every check schemathesis registers (its registry, not a hand list): the function
    checks, and the per-response half of class-based ones."""
    from schemathesis.checks import CHECKS, build_response_checks, is_check_class, load_all_checks, run_checks_for

    load_all_checks()
    functions = [check for check in CHECKS.get_all() if not is_check_class(check)]
    return [*functions, *build_response_checks(run_checks_for(schema).for_responses())]


def fuzz_config(key: str) -> Any:
    """Credentials for the document's bearer scheme; every check at schemathesis's defaults."""
    from schemathesis.config import SchemathesisConfig

    return SchemathesisConfig.from_dict({"auth": {"openapi": {"HTTPBearer": {"bearer": key}}}})


class Fuzzer:
    """Sends cases, runs every check on each response, and counts."""

    def __init__(self, base_url: str, key: str, schema: Any, result: FuzzResult,
                 on_case: Callable[[], None] | None) -> None:
        self.base_url, self.key, self.schema, self.result, self.on_case = base_url, key, schema, result, on_case
        self.checks = openapi_checks(schema)
        for check in self.checks:
            result.checks.setdefault(check.__name__, 0)
        result.checks.setdefault(NO_RESPONSE, 0)

    def transport(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "timeout": CASE_TIMEOUT_S}

    def send(self, case: Any, phase: str) -> Any | None:
        """One case: the request, then every check. None when no response came."""
        import requests

        self.count(phase)
        try:
            response = case.call(**self.transport())
        except requests.RequestException as e:
            self.result.fail(FuzzFailure(phase, NO_RESPONSE, case.method, case.path, None, type(e).__name__))
            return None
        self.validate(case, response, phase)
        return response

    def count(self, phase: str) -> None:
        self.result.cases += 1
        self.result.phases[phase] += 1
        if self.on_case is not None:
            self.on_case()

    def validate(self, case: Any, response: Any, phase: str, recorder: Any = None) -> None:
        """Each check on its own, so each failure is counted against the check that found it."""
        from schemathesis.core.failures import Failure, FailureGroup

        if response.status_code >= 500:
            self.result.server_errors += 1
        for check in self.checks:
            try:
                case.validate_response(response, checks=[check], transport_kwargs=self.transport(),
                                       recorder=recorder)
            except FailureGroup as group:
                for failure in group.exceptions:
                    self.result.fail(FuzzFailure(phase, check.__name__, case.method, case.formatted_path,
                                                 response.status_code, _short(failure, response)))
            except Failure as failure:
                self.result.fail(FuzzFailure(phase, check.__name__, case.method, case.formatted_path,
                                             response.status_code, _short(failure, response)))
            except Exception as e:  # a check that re-sends a request and gets no answer
                self.result.fail(FuzzFailure(phase, check.__name__, case.method, case.formatted_path,
                                             response.status_code, f"check raised {type(e).__name__}: {e}"[:200]))


def _short(failure: Exception, response: Any) -> str:
    """The failure's title and first line, and the start of the response body."""
    title = getattr(failure, "title", "") or type(failure).__name__
    message = (getattr(failure, "message", "") or str(failure)).strip().splitlines()
    body = " ".join((response.text or "")[:160].split())
    return f"{title}: {message[0] if message else ''} | body: {body}"[:360]


# Real ids


def seed_ids(base_url: str, key: str, *, run: bool) -> dict[str, str]:
    """A fresh thread of this key (and, with `run`, a finished graph run on it and its
    latest checkpoint) plus a served assistant: path ids that exist."""
    with httpx.Client(base_url=base_url, headers=bearer(key), timeout=CASE_TIMEOUT_S) as client:
        ids: dict[str, str] = {}
        assistants = client.post("/assistants/search", json={"limit": 1})
        if assistants.status_code == 200 and assistants.json():
            ids["assistant_id"] = assistants.json()[0]["assistant_id"]
        thread = client.post("/threads", json={"metadata": {"fuzz": "seed"}})
        thread.raise_for_status()
        ids["thread_id"] = thread.json()["thread_id"]
        if run:
            done = client.post(f"/threads/{ids['thread_id']}/runs/wait", json=SEED_RUN)
            runs = client.get(f"/threads/{ids['thread_id']}/runs")
            if done.status_code == 200 and runs.status_code == 200 and runs.json():
                ids["run_id"] = runs.json()[0]["run_id"]
            state = client.get(f"/threads/{ids['thread_id']}/state")
            checkpoint = (state.json().get("checkpoint") or {}) if state.status_code == 200 else {}
            if checkpoint.get("checkpoint_id"):
                ids["checkpoint_id"] = checkpoint["checkpoint_id"]
        return ids


def path_ids(operation: Any) -> list[str]:
    from schemathesis.core.parameters import ParameterLocation

    return [p.name for p in operation.iter_parameters()
            if p.location == ParameterLocation.PATH and p.name in ID_PARAMETERS]


# Phases


def coverage_phase(fuzzer: Fuzzer, operations: list[Any], budget: int, seed: int) -> None:
    """Schemathesis's coverage cases, a sample per operation that spreads over its scenarios
    (undeclared methods, missing parameters, wrong types, boundaries...)."""
    from schemathesis.generation import GenerationMode
    from schemathesis.generation.drivers import CoverageGenerator
    from schemathesis.generation.feedback import FeedbackSources
    from schemathesis.generation.meta import coverage_scenario
    from schemathesis.generation.overrides import Override

    rng = random.Random(seed)
    per_operation = max(1, math.ceil(budget / len(operations)))
    sent = 0
    for operation in operations:
        generator = CoverageGenerator(
            operation=operation, generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
            generation_config=fuzzer.schema.config.generation_for(operation=operation, phase="coverage"),
            auth_storage=None, override=Override(), feedback=FeedbackSources())
        by_scenario: dict[str, list[Any]] = {}
        for case in generator:
            by_scenario.setdefault(str(coverage_scenario(case)), []).append(case)
        for cases in by_scenario.values():
            rng.shuffle(cases)
        for case in _round_robin(list(by_scenario.values()))[:per_operation]:
            if sent >= budget:
                return
            fuzzer.send(case, "coverage")
            sent += 1


def _round_robin(groups: list[list[Any]]) -> list[Any]:
    out: list[Any] = []
    for i in range(max((len(g) for g in groups), default=0)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


def fuzzing_phase(fuzzer: Fuzzer, operations: list[Any], budget: int, seed: int) -> None:
    """Hypothesis-generated cases per operation, valid and invalid, in rounds until `budget`
    were sent. Valid cases for an operation with ids in its path use real ids for half."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation import GenerationMode

    target = fuzzer.result.phases["fuzzing"] + budget
    round_no = 0
    while fuzzer.result.phases["fuzzing"] < target:
        before = fuzzer.result.phases["fuzzing"]
        left = target - fuzzer.result.phases["fuzzing"]
        per_strategy = max(1, math.ceil(left / (2 * len(operations))))
        for operation in operations:
            ids = path_ids(operation)
            seeded: dict[str, str] = {}
            if ids and fuzzer.result.phases["fuzzing"] < target:
                seeded = seed_ids(fuzzer.base_url, fuzzer.key, run=bool({"run_id", "checkpoint_id"} & set(ids)))
            strategies = [(GenerationMode.NEGATIVE, {}, per_strategy)]
            if ids and all(name in seeded for name in ids):
                real = {name: seeded[name] for name in ids}
                half = max(1, per_strategy // 2)
                strategies += [(GenerationMode.POSITIVE, real, half), (GenerationMode.POSITIVE, {}, half)]
            else:
                strategies.append((GenerationMode.POSITIVE, {}, per_strategy))
            for mode, pinned, examples in strategies:
                if fuzzer.result.phases["fuzzing"] >= target:
                    break
                real = bool(pinned)

                @hypothesis_seed(seed + round_no)
                @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
                          suppress_health_check=list(HealthCheck))
                @given(case=operation.as_strategy(generation_mode=mode, path_parameters=pinned or None))
                def one(case: Any) -> None:
                    if fuzzer.result.phases["fuzzing"] >= target:
                        return
                    if real:
                        fuzzer.result.seeded_cases += 1
                    fuzzer.send(case, "fuzzing")

                try:
                    one()
                except Unsatisfiable:
                    continue  # no request of this mode fits the operation (e.g. nothing to make invalid)
        round_no += 1
        if fuzzer.result.phases["fuzzing"] == before:
            break


def stateful_phase(fuzzer: Fuzzer, budget: int, seed: int) -> None:
    """`schema.as_state_machine()` under hypothesis: scenarios of linked requests, in batches
    sized so that no batch can pass `budget` steps. The machine records each step, so the
    stateful checks (`use_after_free`, `ensure_resource_availability`) see the history."""
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis.errors import Flaky, Unsatisfiable
    from schemathesis.generation.stateful import run_state_machine_as_test

    target = fuzzer.result.phases["stateful"] + budget
    machine = fuzzer.schema.as_state_machine()

    class Fuzzing(machine):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return fuzzer.transport()

        def step(self, input: Any) -> Any:
            if input.transition is not None:
                fuzzer.result.stateful_links += 1
            return super().step(input)

        def call(self, case: Any, **kwargs: Any) -> Any:
            fuzzer.count("stateful")
            return case.call(**kwargs)

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            fuzzer.validate(case, response, "stateful", recorder=self.recorder)

    batch = idle = 0
    while (left := target - fuzzer.result.phases["stateful"]) >= 2 and idle < 3:
        steps = min(STATEFUL_STEPS, left)
        Fuzzing._hypothesis_internal_use_seed = seed + batch  # what `hypothesis.seed` sets
        try:
            run_state_machine_as_test(Fuzzing, settings=settings(
                max_examples=max(1, left // steps), stateful_step_count=steps, deadline=None, database=None,
                phases=[Phase.generate], suppress_health_check=list(HealthCheck)))
        except (Flaky, Unsatisfiable):
            # The machine's preconditions read the live scenario (which links are open), so
            # hypothesis may see a replay draw differently and stop the batch; as
            # schemathesis's own engine does, start another batch with another seed.
            pass
        batch += 1
        idle = idle + 1 if target - fuzzer.result.phases["stateful"] == left else 0


def run_fuzz(base_url: str, *, cases: int, key: str, seed: int = 0, stateful_share: float = 0.3,
             coverage_share: float = 0.3, on_case: Callable[[], None] | None = None) -> FuzzResult:
    """Every operation of the served document, every check, `cases` requests in all: a
    `coverage_share` of them from the coverage phase, a `stateful_share` from linked
    sequences, the rest generated per operation."""
    import schemathesis

    require_loopback(base_url)
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=fuzz_config(key))
    operations = [result.ok() for result in schema.get_all_operations()]
    result = FuzzResult()
    fuzzer = Fuzzer(base_url, key, schema, result, on_case)
    coverage = int(cases * coverage_share)
    stateful = int(cases * stateful_share)
    coverage_phase(fuzzer, operations, coverage, seed)
    fuzzing_phase(fuzzer, _deletes_last(operations), cases - stateful - result.cases, seed)
    stateful_phase(fuzzer, max(0, cases - result.cases), seed)
    return result


def _deletes_last(operations: Iterable[Any]) -> list[Any]:
    return sorted(operations, key=lambda op: op.method.upper() == "DELETE")

