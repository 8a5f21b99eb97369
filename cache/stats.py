"""Counters of the shared prefix cache, and their Prometheus export.

The store updates plain dataclass counters on its hot path (no label lookups, no locks
beyond the GIL); a collector turns them into ``agentstack:kv_cache_*`` series when
``/metrics`` is scraped, on the same per-service registry as ``agentstack.metrics``:

| series | labels | meaning |
|---|---|---|
| ``agentstack:kv_cache_hit_tokens_total`` | tier, mode | prompt tokens served from a tier |
| ``agentstack:kv_cache_miss_tokens_total`` | mode | prompt tokens looked up and not found |
| ``agentstack:kv_cache_cross_role_reuses_total`` | mode | tier lookups that reused another role's blocks (within one engine the shared modes' reuse is vLLM's own prefix-cache hit) |
| ``agentstack:kv_cache_peer_waits_total`` | mode | requests that waited for blocks another engine was computing, instead of computing them |
| ``agentstack:kv_cache_evictions_total`` | tier | blocks evicted for capacity |
| ``agentstack:kv_cache_tier_faults_total`` | tier | tier operations that failed (served as misses) |
| ``agentstack:kv_cache_bytes`` | tier | bytes of blocks held now |

Hit and miss tokens mirror vLLM's ``vllm:prefix_cache_hits`` / ``_queries`` (in tokens),
split by tier and mode so the three modes can be compared side by side.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


@dataclass(slots=True)
class TierStats:
    """What one tier did on its own: capacity evictions and failed operations."""

    evictions: int = 0
    faults: int = 0


@dataclass(slots=True)
class CacheStats:
    """Store-level counters, keyed by (tier, mode) or mode."""

    hit_tokens: Counter[tuple[str, str]] = field(default_factory=Counter)
    miss_tokens: Counter[str] = field(default_factory=Counter)
    cross_role_reuses: Counter[str] = field(default_factory=Counter)
    peer_waits: Counter[str] = field(default_factory=Counter)

    def hits(self, *, tier: str | None = None, mode: str | None = None) -> int:
        """Hit tokens, summed over whichever of tier and mode is left open."""
        return sum(
            n
            for (t, m), n in self.hit_tokens.items()
            if (tier is None or t == tier) and (mode is None or m == mode)
        )


@dataclass(frozen=True, slots=True)
class TierView:
    """What the collector needs from a tier, without importing the tier classes."""

    stats: TierStats
    bytes_held: Callable[[], int]


class CacheCollector(Collector):
    """Reads a store's counters at scrape time and yields ``agentstack:kv_cache_*`` series."""

    def __init__(self, stats: CacheStats, tiers: Mapping[str, TierView]) -> None:
        self._stats = stats
        self._tiers = tiers

    def collect(self) -> Iterator[Metric]:
        hits = CounterMetricFamily(
            "agentstack:kv_cache_hit_tokens",
            "Prompt tokens served from the shared KV cache, by tier and mode.",
            labels=["tier", "mode"],
        )
        for (tier, mode), n in sorted(self._stats.hit_tokens.items()):
            hits.add_metric([tier, mode], n)
        misses = CounterMetricFamily(
            "agentstack:kv_cache_miss_tokens",
            "Prompt tokens looked up in the shared KV cache and not found, by mode.",
            labels=["mode"],
        )
        for mode, n in sorted(self._stats.miss_tokens.items()):
            misses.add_metric([mode], n)
        reuses = CounterMetricFamily(
            "agentstack:kv_cache_cross_role_reuses",
            "Lookups that reused blocks another role computed, by mode.",
            labels=["mode"],
        )
        for mode, n in sorted(self._stats.cross_role_reuses.items()):
            reuses.add_metric([mode], n)
        peer_waits = CounterMetricFamily(
            "agentstack:kv_cache_peer_waits",
            "Requests that waited for blocks another engine was computing, by mode.",
            labels=["mode"],
        )
        for mode, n in sorted(self._stats.peer_waits.items()):
            peer_waits.add_metric([mode], n)
        evictions = CounterMetricFamily(
            "agentstack:kv_cache_evictions",
            "Blocks evicted from a tier to stay within its capacity.",
            labels=["tier"],
        )
        faults = CounterMetricFamily(
            "agentstack:kv_cache_tier_faults",
            "Tier operations that failed and were served as misses.",
            labels=["tier"],
        )
        held = GaugeMetricFamily(
            "agentstack:kv_cache_bytes", "Bytes of cached blocks a tier holds.", labels=["tier"]
        )
        for name, view in self._tiers.items():
            evictions.add_metric([name], view.stats.evictions)
            faults.add_metric([name], view.stats.faults)
            held.add_metric([name], view.bytes_held())
        yield from (hits, misses, reuses, peer_waits, evictions, faults, held)


_SEP = "|"


def stats_payload(stats: CacheStats, tiers: Mapping[str, TierView]) -> dict[str, Any]:
    """Cumulative counters as plain JSON-able dicts, to cross a process boundary."""
    # dict() copies in one step under the GIL: the connector's load thread may add keys
    # while this runs.
    return {
        "hit_tokens": {f"{t}{_SEP}{m}": n for (t, m), n in dict(stats.hit_tokens).items()},
        "miss_tokens": dict(stats.miss_tokens),
        "cross_role_reuses": dict(stats.cross_role_reuses),
        "peer_waits": dict(stats.peer_waits),
        "evictions": {name: view.stats.evictions for name, view in tiers.items()},
        "faults": {name: view.stats.faults for name, view in tiers.items()},
        "bytes": {name: view.bytes_held() for name, view in tiers.items()},
    }


@dataclass(slots=True)
class MirroredCache:
    """Another process's cache counters, for the API process's ``/metrics``.

    Payloads come keyed by the side that sent them (``{"worker": ..., "scheduler": ...}``,
    each a cumulative ``stats_payload``); a side's newer payload replaces its older one,
    and the series show the sum over sides (bytes: the largest figure, since both sides
    see the same Redis).
    """

    stats: CacheStats = field(default_factory=CacheStats)
    tiers: dict[str, TierView] = field(default_factory=dict)
    _sides: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    _bytes: dict[str, int] = field(default_factory=dict)

    def update(self, payload: Mapping[str, Mapping[str, Any]]) -> None:
        self._sides.update(payload)
        sides = list(self._sides.values())

        def total(name: str) -> Counter[str]:
            counts: Counter[str] = Counter()
            for side in sides:
                counts.update({k: int(n) for k, n in side.get(name, {}).items()})
            return counts

        self.stats.hit_tokens = Counter(
            {tuple(k.split(_SEP, 1)): n for k, n in total("hit_tokens").items()}  # type: ignore[misc]
        )
        self.stats.miss_tokens = total("miss_tokens")
        self.stats.cross_role_reuses = total("cross_role_reuses")
        self.stats.peer_waits = total("peer_waits")
        evictions, faults = total("evictions"), total("faults")
        held = {name for side in sides for name in side.get("bytes", {})}
        for name in held:
            self._bytes[name] = max(int(side.get("bytes", {}).get(name, 0)) for side in sides)
        for name in self._bytes:
            if name not in self.tiers:
                self.tiers[name] = TierView(TierStats(), lambda name=name: self._bytes[name])
            self.tiers[name].stats.evictions = evictions[name]
            self.tiers[name].stats.faults = faults[name]


def register_cache_metrics(
    registry: CollectorRegistry, stats: CacheStats, tiers: Mapping[str, TierView]
) -> CacheCollector:
    """Add the cache's series to ``registry`` (the service's ``Metrics.registry``)."""
    collector = CacheCollector(stats, tiers)
    registry.register(collector)
    return collector
