"""`bench graph` bookkeeping: token deltas from the service's counters, percentiles, report.
(The full benchmark needs the engine; `agentstack bench graph` runs it.)"""

from __future__ import annotations

from pathlib import Path

from agentstack.metrics import Metrics
from agentstack.offline.bench.graph import (
    GraphBenchConfig,
    GraphBenchResult,
    GraphStats,
    _delta,
    inputs_for,
    percentile,
    token_counts,
    write_report,
)


def test_token_deltas_per_role_come_from_the_counters() -> None:
    metrics = Metrics()
    metrics.prompt_tokens.labels("planner").inc(100)
    before = token_counts(metrics.registry)
    metrics.prompt_tokens.labels("planner").inc(40)
    metrics.prefix_cache_hits.labels("planner").inc(16)
    metrics.generation_tokens.labels("actor").inc(7)
    assert _delta(token_counts(metrics.registry), before) == {
        "planner": {"prefill": 40, "generated": 0, "cached": 16},
        "actor": {"prefill": 0, "generated": 7, "cached": 0},
    }


def test_summary_and_report(tmp_path: Path) -> None:
    stats = GraphStats()
    for latency in (1.0, 2.0, 3.0, 10.0):
        stats.add(latency, "success", {"planner": {"prefill": 50, "generated": 10, "cached": 25}})
    stats.add(4.0, "error", {})
    summary = stats.as_dict()
    assert summary["runs"] == 5 and summary["errors"] == 1
    assert summary["latency_p50_s"] == 3.0 and summary["latency_p99_s"] == 10.0
    assert summary["prefill_tokens_per_run"] == 40.0 and summary["cached_prefill_share"] == 0.5
    config = GraphBenchConfig(runs=5, report_dir=tmp_path)
    result = GraphBenchResult(config=config, graphs={"plan_act_reflect": stats, "tool_agent": GraphStats()})
    write_report(result)
    assert result.plot is not None and result.plot.stat().st_size > 0
    assert result.report is not None and "| plan_act_reflect | planner | 200 | 100 | 40 |" in result.report.read_text()
    assert percentile([], 0.5) == 0.0
    assert [i["max_rounds"] for i in inputs_for("plan_act_reflect", config)] == [2] * 5
    assert len({i["messages"][0]["content"] for i in inputs_for("tool_agent", config)}) == 5


def test_the_actor_role_goes_into_plan_act_reflect_runs_only(tmp_path: Path) -> None:
    config = GraphBenchConfig(runs=1, report_dir=tmp_path, actor_role="auto")
    assert config.run_config("plan_act_reflect") == {"configurable": {"actor_role": "auto"}}
    assert config.run_config("tool_agent") is None and GraphBenchConfig().run_config("plan_act_reflect") is None
    result = GraphBenchResult(config=config, graphs={"plan_act_reflect": GraphStats()})
    write_report(result)
    assert result.report is not None
    assert "`agentstack bench graph --runs 1 --max-rounds 2 --actor-role auto`" in result.report.read_text()
    assert result.summary()["actor_role"] == "auto"
