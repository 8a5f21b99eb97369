"""`agentstack bench graph`: end-to-end latency and tokens of the built-in workflows.

One process runs the service and the HTTP API (uvicorn on loopback). Each workflow
gets the same fixed inputs, sent one at a time as stateless `POST /runs/wait` calls,
so every run's tokens are the change of the per-role token counters across it:
prompt (prefill) tokens, of which prefix-cache hits, and generated tokens. Latency is
the wall time of the HTTP call, from request to final state.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry
from rich.progress import Progress
from rich.table import Table

from agentstack.config import Settings
from agentstack.offline.bench.in_process import service_over_http
from agentstack.offline.bench.report import bar_chart, markdown_table
from agentstack.service import Service

TASKS = [
    "Name two primary colors.",
    "Give one tip for learning a new language.",
    "Explain in one sentence why the sky is blue.",
    "Suggest a name for a pet turtle.",
    "List three fruits that are red.",
    "Say what a thermometer measures.",
    "Name the largest ocean on Earth.",
    "Give a synonym for happy.",
]
QUESTIONS = [
    "What is 12 times 7?",
    "Convert 5 km to miles.",
    "What is the capital of Japan?",
    "What is (3 + 4) * 15?",
    "How many pounds are 10 kg?",
    "What is the capital of Kenya?",
    "Convert 100 degrees celsius to fahrenheit.",
    "What is 2 to the power of 10?",
]
GRAPHS = ("plan_act_reflect", "tool_agent")
COUNTERS = {"prefill": "agentstack:prompt_tokens", "generated": "agentstack:generation_tokens",
            "cached": "agentstack:prefix_cache_hits"}


@dataclass(frozen=True, slots=True)
class GraphBenchConfig:
    runs: int = 4
    max_rounds: int = 2
    report_dir: Path = Path("reports")
    actor_role: str | None = None
    """plan_act_reflect's actor role (`auto`: the gate), passed in each run's config."""

    def run_config(self, graph_id: str) -> dict[str, Any] | None:
        if graph_id == "plan_act_reflect" and self.actor_role:
            return {"configurable": {"actor_role": self.actor_role}}
        return None

    @property
    def command(self) -> str:
        actor = f" --actor-role {self.actor_role}" if self.actor_role else ""
        return f"agentstack bench graph --runs {self.runs} --max-rounds {self.max_rounds}{actor}"


def inputs_for(graph_id: str, config: GraphBenchConfig) -> list[dict[str, Any]]:
    if graph_id == "plan_act_reflect":
        return [{"task": TASKS[i % len(TASKS)], "max_rounds": config.max_rounds} for i in range(config.runs)]
    return [{"messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]} for i in range(config.runs)]


def token_counts(registry: CollectorRegistry) -> dict[str, dict[str, float]]:
    """role -> {prefill, generated, cached} from the service's own counters."""
    counts: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(COUNTERS, 0.0))
    for family in registry.collect():
        for kind, name in COUNTERS.items():
            if family.name == name:
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        counts[sample.labels["role"]][kind] = sample.value
    return counts


def _delta(after: dict[str, dict[str, float]], before: dict[str, dict[str, float]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for role, values in after.items():
        diff = {k: int(v - before.get(role, {}).get(k, 0.0)) for k, v in values.items()}
        if any(diff.values()):
            out[role] = diff
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass(slots=True)
class GraphStats:
    latencies_s: list[float] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    per_role: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, latency_s: float, status: str, tokens: dict[str, dict[str, int]]) -> None:
        self.latencies_s.append(latency_s)
        self.statuses.append(status)
        for role, counts in tokens.items():
            totals = self.per_role.setdefault(role, dict.fromkeys(COUNTERS, 0))
            for kind, value in counts.items():
                totals[kind] += value

    def as_dict(self) -> dict[str, Any]:
        runs = len(self.latencies_s)
        total = {k: sum(c[k] for c in self.per_role.values()) for k in COUNTERS}
        return {
            "runs": runs,
            "errors": sum(s != "success" for s in self.statuses),
            "latency_p50_s": round(percentile(self.latencies_s, 0.5), 3),
            "latency_p99_s": round(percentile(self.latencies_s, 0.99), 3),
            "latency_mean_s": round(statistics.fmean(self.latencies_s), 3) if runs else 0.0,
            "prefill_tokens_per_run": round(total["prefill"] / runs, 1) if runs else 0.0,
            "generated_tokens_per_run": round(total["generated"] / runs, 1) if runs else 0.0,
            "cached_prefill_share": round(total["cached"] / total["prefill"], 4) if total["prefill"] else 0.0,
            "per_role": {role: {f"{k}_tokens": v for k, v in c.items()} for role, c in sorted(self.per_role.items())},
        }


@dataclass(slots=True)
class GraphBenchResult:
    config: GraphBenchConfig
    graphs: dict[str, GraphStats]
    report: Path | None = None
    plot: Path | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "runs_per_graph": self.config.runs,
            "max_rounds": self.config.max_rounds,
            "actor_role": self.config.actor_role or "actor",
            "graphs": {name: stats.as_dict() for name, stats in self.graphs.items()},
            "report": str(self.report) if self.report else None,
            "plot": str(self.plot) if self.plot else None,
        }

    def table(self) -> Table:
        table = Table("graph", "role", "prefill tok", "cached tok", "generated tok",
                      title=f"bench graph: {self.config.runs} runs per graph")
        for name, stats in self.summary()["graphs"].items():
            for role, counts in stats["per_role"].items():
                table.add_row(name, role, str(counts["prefill_tokens"]), str(counts["cached_tokens"]),
                              str(counts["generated_tokens"]))
            table.add_row(name, "[b]all[/]", f"{stats['prefill_tokens_per_run']}/run", "",
                          f"{stats['generated_tokens_per_run']}/run")
        table.caption = "; ".join(f"{n}: p50 {s['latency_p50_s']} s, p99 {s['latency_p99_s']} s, "
                                  f"errors {s['errors']}" for n, s in self.summary()["graphs"].items())
        return table


async def _run_graph(client: httpx.AsyncClient, service: Service, graph_id: str, inputs: list[dict[str, Any]],
                     stats: GraphStats, progress: Progress, task: Any, config: dict[str, Any] | None = None) -> None:
    for payload in inputs:
        before = token_counts(service.metrics.registry)
        started = time.perf_counter()
        body = {"assistant_id": graph_id, "input": payload, **({"config": config} if config else {})}
        response = await client.post("/runs/wait", json=body)
        latency = time.perf_counter() - started
        ok = response.status_code == 200 and "__error__" not in response.json()
        stats.add(latency, "success" if ok else "error", _delta(token_counts(service.metrics.registry), before))
        progress.advance(task)


async def _bench(settings: Settings, config: GraphBenchConfig, quiet: bool) -> GraphBenchResult:
    graphs = {name: GraphStats() for name in GRAPHS}
    async with service_over_http(settings) as (service, base_url), \
            httpx.AsyncClient(base_url=base_url, timeout=1800) as client:
        with Progress(disable=quiet, transient=True) as progress:
            await _run_graph(client, service, "tool_agent", inputs_for("tool_agent", config)[:1],
                             GraphStats(), progress, progress.add_task("warm-up", total=1))
            for name in GRAPHS:
                task = progress.add_task(name, total=config.runs)
                await _run_graph(client, service, name, inputs_for(name, config), graphs[name], progress, task,
                                 config.run_config(name))
    return GraphBenchResult(config=config, graphs=graphs)


def run_graph_bench(settings: Settings, config: GraphBenchConfig, *, quiet: bool = False) -> GraphBenchResult:
    result = asyncio.run(_bench(settings, config, quiet))
    write_report(result)
    return result


def write_report(result: GraphBenchResult) -> None:
    s = result.summary()["graphs"]
    out = result.config.report_dir
    out.mkdir(parents=True, exist_ok=True)
    result.plot = bar_chart(out / "bench-graph.png", "Workflows end to end (one run at a time)", {
        "latency p50 (s)": {n: v["latency_p50_s"] for n, v in s.items()},
        "latency p99 (s)": {n: v["latency_p99_s"] for n, v in s.items()},
        "prefill tokens / run": {n: v["prefill_tokens_per_run"] for n, v in s.items()},
        "generated tokens / run": {n: v["generated_tokens_per_run"] for n, v in s.items()},
    })
    graph_rows = [[n, v["runs"], v["errors"], v["latency_p50_s"], v["latency_p99_s"],
                   v["prefill_tokens_per_run"], v["generated_tokens_per_run"], v["cached_prefill_share"]]
                  for n, v in s.items()]
    role_rows = [[n, role, c["prefill_tokens"], c["cached_tokens"], c["generated_tokens"]]
                 for n, v in s.items() for role, c in v["per_role"].items()]
    text = "\n".join([
        "# bench graph",
        "",
        f"Command: `{result.config.command}`",
        "",
        "Stateless `POST /runs/wait` runs, one at a time, on fixed inputs; tokens are the change of "
        "the per-role counters across each run.",
        "",
        markdown_table(["graph", "runs", "errors", "latency p50 s", "latency p99 s", "prefill tok/run",
                        "generated tok/run", "cached prefill share"], graph_rows),
        "",
        "Tokens by role, all runs:",
        "",
        markdown_table(["graph", "role", "prefill tokens", "cached tokens", "generated tokens"], role_rows),
        "",
        "![bench graph](bench-graph.png)",
        "",
    ])
    result.report = out / "bench-graph.md"
    result.report.write_text(text)
