"""TWN labels come from real runs of both paths on the engine, never from the task kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentstack.config import Settings
from agentstack.service import Service
from routers.offline.commands import GATE_DIR, GATE_ENGINE_SETTINGS, OUTCOMES_FILE, resolver_for
from routers.offline.measure import PATHS, MeasureConfig, measure, read_outcomes, role_subsets, twn_label
from routers.offline.tasks import gate_tasks
from routers.offline.train import GATE_ROLES

pytestmark = pytest.mark.slow


async def test_both_paths_run_on_the_engine(model_dir: Path, tmp_path: Path) -> None:
    settings = Settings(model=model_dir, cache_dir=tmp_path, kv_cache_space_gib=1, **GATE_ENGINE_SETTINGS)
    service = Service(settings, gate_dir=None)
    await service.start()
    try:
        train = gate_tasks("train")
        tasks = [next(t for t in train if t.kind == kind) for kind in ("arith-easy", "arith-hard", "chat")]
        table = await measure(service, resolver_for(service), tasks, MeasureConfig(roles=GATE_ROLES))
    finally:
        await service.stop()
    subsets = role_subsets(GATE_ROLES, 2)
    for task, row in zip(tasks, table):
        assert row.task_id == task.id
        assert len(row.outcomes) == len(subsets) * len(PATHS)
        for subset in subsets:
            for path in PATHS:
                outcome = row.outcome(subset, path)
                assert outcome.generated_tokens > 0 and outcome.text
                assert outcome.correct == task.score(outcome.text)
                if path == "direct":
                    assert outcome.reasoning_tokens == 0 or outcome.text.lstrip().startswith("<think>")
        assert row.think_label == twn_label(row.outcomes)
    hard = table[1].outcome(("reasoner",), "think")
    assert hard.text.lstrip().startswith("<think>") and hard.reasoning_tokens > 0
    assert table[1].outcome(("reasoner",), "direct").reasoning_tokens == 0


def test_shipped_labels_are_measured_outcomes() -> None:
    """The shipped label file holds both paths of every measured role set for each of its
    training prompts, and each label is what those measured outcomes imply."""
    table = read_outcomes(GATE_DIR / OUTCOMES_FILE)
    train = [t.id for t in gate_tasks("train")]
    ids = [row.task_id for row in table]
    assert ids == [i for i in train if i in set(ids)]
    tasks = {t.id: t for t in gate_tasks("train")}
    measured_k = max(len(o.roles) for o in table[0].outcomes.values())
    for row in table:
        expected = {f"{'+'.join(s)}|{p}" for s in role_subsets(GATE_ROLES, measured_k) for p in PATHS}
        assert set(row.outcomes) == expected
        assert row.think_label == twn_label(row.outcomes)
        assert all(o.correct == tasks[row.task_id].score(o.text) for o in row.outcomes.values())
    assert 0 < sum(row.think_label for row in table) < len(table)
