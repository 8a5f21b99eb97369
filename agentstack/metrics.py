"""Prometheus metrics, named in vLLM's style under an `agentstack:` prefix.

vLLM's own `vllm:` series live in prometheus-client's default registry; ours live in a
registry of their own (so several services can exist in one test process), and
`/metrics` serves both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from agentstack.engine import SchedulerSnapshot
from cache.stats import MirroredCache, register_cache_metrics

disable_created_metrics()

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "agentstack:requests", "Finished API requests by role and HTTP status.",
            ["role", "status"], registry=r,
        )
        self.requests_aborted = Counter(
            "agentstack:requests_aborted", "Engine requests aborted because the client left.",
            ["role"], registry=r,
        )
        self.time_to_first_token = Histogram(
            "agentstack:time_to_first_token_seconds", "Time from request to first token.",
            ["role"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.e2e_latency = Histogram(
            "agentstack:e2e_request_latency_seconds", "Time from request to last token.",
            ["role"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.prompt_tokens = Counter(
            "agentstack:prompt_tokens", "Prompt tokens processed.", ["role"], registry=r
        )
        self.generation_tokens = Counter(
            "agentstack:generation_tokens", "Tokens generated.", ["role"], registry=r
        )
        self.prefix_cache_hits = Counter(
            "agentstack:prefix_cache_hits", "Prompt tokens served from the prefix cache.",
            ["role"], registry=r,
        )
        self.prefix_cache_queries = Counter(
            "agentstack:prefix_cache_queries", "Prompt tokens looked up in the prefix cache.",
            ["role"], registry=r,
        )
        self.running = Gauge(
            "agentstack:num_requests_running", "Requests the engine is running.", registry=r
        )
        self.waiting = Gauge(
            "agentstack:num_requests_waiting", "Requests waiting for the engine.", registry=r
        )
        self.kv_cache_usage = Gauge(
            "agentstack:kv_cache_usage_perc", "Fraction of KV cache blocks in use.", registry=r
        )
        self.adapter_loaded = Gauge(
            "agentstack:adapter_loaded", "1 for each adapter loaded in the engine.",
            ["adapter"], registry=r,
        )
        self.workflow_runs = Counter(
            "agentstack:workflow_runs", "Finished workflow (LangGraph) runs by graph and status.",
            ["graph", "status"], registry=r,
        )
        self.workflow_run_latency = Histogram(
            "agentstack:workflow_run_seconds", "Time from the start of a workflow run to its end.",
            ["graph"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.requests_refused = Counter(
            "agentstack:requests_refused",
            "Requests refused before the route's own code ran, by reason (unauthenticated, forbidden, "
            "rate_limited, unavailable, too_large, timeout).",
            ["reason"], registry=r,
        )
        self.tenant_prefix_cache_hits = Counter(
            "agentstack:tenant_prefix_cache_hits",
            "Prompt tokens served from the prefix cache, by tenant (an opaque digest of the API key's name).",
            ["tenant"], registry=r,
        )
        self.tenant_prefix_cache_queries = Counter(
            "agentstack:tenant_prefix_cache_queries",
            "Prompt tokens looked up in the prefix cache, by tenant (an opaque digest of the API key's name).",
            ["tenant"], registry=r,
        )
        self.route_decisions = Counter(
            "agentstack:route_decisions",
            "Decisions of the learned gate (`model: auto`) by role set (roles joined by +) and path.",
            ["role", "path"], registry=r,
        )
        self.dependency_up = Gauge(
            "agentstack:dependency_up",
            "1 while a dependency answers its health check (engine, redis), else 0.",
            ["dependency"], registry=r,
        )

        # The shared prefix cache lives in the engine process; its counters arrive with
        # the scheduler stats and are exported as agentstack:kv_cache_* (see cache.stats).
        self.kv_cache = MirroredCache()
        register_cache_metrics(r, self.kv_cache.stats, self.kv_cache.tiers)

    def observe_scheduler(self, snapshot: SchedulerSnapshot) -> None:
        if snapshot.cache_stats:
            self.kv_cache.update(snapshot.cache_stats)
        self.running.set(snapshot.running)
        self.waiting.set(snapshot.waiting)
        self.kv_cache_usage.set(snapshot.kv_cache_usage)

    def render(self) -> bytes:
        return generate_latest(REGISTRY) + generate_latest(self.registry)
