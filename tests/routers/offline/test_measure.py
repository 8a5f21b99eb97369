"""The outcome table: several runs per action, and tables measured with one still read."""

from __future__ import annotations

from pathlib import Path

import pytest

from routers.offline.measure import (
    MeasureConfig,
    Outcome,
    TaskOutcomes,
    n_actions,
    n_runs,
    read_outcomes,
    rescore,
    summary,
    twn_label,
    write_outcomes,
)
from routers.offline.tasks import Task
from routers.offline.train import GATE_ROLES
from routers.prompt import Path_

ONE_RUN_TABLE = Path(__file__).parent / "data" / "outcomes-one-run.jsonl"


def _run(path: Path_, correct: bool, tokens: int, seed: int | None = None) -> Outcome:
    return Outcome(roles=["a"], path=path, correct=correct, generated_tokens=tokens, reasoning_tokens=0,
                   latency_s=0.1, text="Answer: 1" if correct else "Answer: 0",
                   temperature=0.0 if seed is None else 0.7, seed=seed)


def _row() -> TaskOutcomes:
    """`a|direct`: greedy right, 1 of 3 samples right; `a|think`: greedy wrong, 3 of 3 right."""
    greedy = {"a|direct": _run("direct", True, 4), "a|think": _run("think", False, 90)}
    samples = {"a|direct": [_run("direct", c, t, i) for i, (c, t) in enumerate([(False, 8), (True, 4), (False, 12)])],
               "a|think": [_run("think", True, t, i) for i, t in enumerate([70, 80, 100])]}
    return TaskOutcomes(task_id="t:0", kind="arith-easy", outcomes=greedy, think_label=twn_label(greedy),
                        samples=samples)


def test_several_runs_per_action_round_trip(tmp_path: Path) -> None:
    row = _row()
    write_outcomes(tmp_path / "t.jsonl", [row])
    [again] = read_outcomes(tmp_path / "t.jsonl")
    assert again == row
    assert [o.seed for o in again.runs(["a"], "direct")] == [None, 0, 1, 2]
    assert again.runs(["a"], "think")[0] is again.outcomes["a|think"]  # the greedy run first
    assert again.p_correct(["a"], "direct") == pytest.approx(2 / 4)
    assert again.p_correct(["a"], "think") == pytest.approx(3 / 4)
    assert again.mean_tokens(["a"], "think") == pytest.approx((90 + 70 + 80 + 100) / 4)
    assert summary([again])["runs_per_action"] == [4]


def test_a_one_run_table_reads_as_one_sample_and_is_rewritten_unchanged(tmp_path: Path) -> None:
    """A table measured before samples existed (the first gate's, kept as test data): each
    action is its greedy run alone, and a rewrite (as `gate train` does after rescoring)
    leaves the file byte for byte."""
    table = read_outcomes(ONE_RUN_TABLE)
    row = table[0]
    assert row.samples == {}
    for outcome in row.outcomes.values():
        assert row.runs(outcome.roles, outcome.path) == [outcome]
        assert row.p_correct(outcome.roles, outcome.path) == float(outcome.correct)
        assert row.mean_tokens(outcome.roles, outcome.path) == outcome.generated_tokens
    write_outcomes(tmp_path / "t.jsonl", table)
    assert (tmp_path / "t.jsonl").read_bytes() == ONE_RUN_TABLE.read_bytes()
    assert summary(table)["runs_per_action"] == [1]


def test_samples_need_a_greedy_run() -> None:
    with pytest.raises(ValueError, match="without a greedy run"):
        TaskOutcomes(task_id="t", kind="chat", outcomes={}, think_label=False,
                     samples={"a|think": [_run("think", True, 3, 0)]})


def test_rescore_rescores_every_sample() -> None:
    task = Task(id="t:0", kind="arith-easy", messages=[{"role": "user", "content": "1?"}], answer="1")
    row = _row()
    lenient = row.model_copy(update={"samples": {k: [o.model_copy(update={"correct": True}) for o in runs]
                                                 for k, runs in row.samples.items()}})
    [strict] = rescore([lenient], [task])
    assert strict == row


def test_runs_per_measurement() -> None:
    """48 training prompts, 3 roles, role sets of up to 2, 4 samples besides the greedy run."""
    config = MeasureConfig(roles=GATE_ROLES, max_k=2, samples=4)
    assert n_actions(config) == 12 and config.runs_per_action == 5
    assert n_runs(config, 48) == 2880
    assert n_runs(MeasureConfig(roles=GATE_ROLES, max_k=1), 48) == 288
    with pytest.raises(ValueError, match="temperature"):
        MeasureConfig(roles=GATE_ROLES, samples=2, temperature=0.0)
