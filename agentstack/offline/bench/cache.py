"""`agentstack bench cache`: the three prefix-cache modes side by side.

The workload is the tool agent on BFCL dev prompts (`cache_workload`): per prompt a
toolbox context of 1–2k tokens that the selector computes first, and the arguments writer
and the single writer then read.

- **Served** (vLLM CPU): the workload through the engine in each `cache.mode`: non-shared
  (vLLM alone), full-shared (the cache's KV connector) and decomposed (the
  decomposed-attention model plus the connector), one fresh engine process per mode. Each
  prompt runs under its own cache salt, so no prompt reuses another's context. Reported:
  prompt tokens the engine prefilled per prompt, TTFT p50/p99 over every request,
  workload throughput, BFCL checker accuracy of the calls written, and the readers' first
  token against non-shared (agreement, and KL over the top ``TOP_LOGPROBS``) on prompts
  identical in both modes, and a reader's TTFT on a context another role computed
  against its TTFT on one it computed itself (``reader_ttfts``), and the tokens prefilled
  when the three roles' requests on one toolbox arrive at once (``concurrent_prefill``).
- **Reference** (pure PyTorch, every mode, all layers): each reader's next-token
  distributions over the rest of its prompt and its ground-truth answer after (a) its own
  prefill of the context (non-shared), (b) the writer's K and V (full-shared), (c) the
  writer's K, V_base and x·A with the reader's own B (decomposed): KL(non-shared ‖ mode)
  and top-1 agreement.
- **Bytes** per shared context token (`cache.layout`; measured from the memory tier when
  served): vLLM's per-adapter copies against one shared block.

The engine for one mode runs in its own process, ``agentstack bench cache-served ...``
(hidden); its ``--probe`` workload (a short context, one-token answers) is what the cache
tests serve.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentstack.config import PACKAGE_DATA, Settings
from agentstack.offline.bench.cache_workload import (
    BFCL_ROLES,
    MIN_CONTEXT_TOKENS,
    RecordingCompleter,
    ReferenceCase,
    ToolboxPrompt,
    reference_case,
    run_prompt,
    toolbox_prompts,
)
from agentstack.chat.tool_prompts import arguments_messages, function_names, selector_messages, single_messages
from agentstack.chat.tool_roles import ARGUMENTS_ROLE
from agentstack.offline.bench.report import grouped_bar_chart, markdown_table
from cache.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS

if TYPE_CHECKING:
    from agentstack.engine import Adapter, Engine

PROBE_CONTEXT = """You are part of a team of agents that plan trips. Shared notes for every agent:

Tools available: search_flights(origin, destination, date) returns flights with prices;
book_flight(flight_id, passenger) books one; search_hotels(city, check_in, nights, budget)
returns hotels; book_hotel(hotel_id, guest) books one; convert_currency(amount, source,
target) converts money; get_weather(city, date) returns a forecast.

Customer: Maria Lopez, travelling alone from Madrid to Paris on 14 March, back on 18 March.
Budget: 900 euros in total for flights and hotel. She prefers morning flights, a hotel
near the Louvre, and she does not eat meat. She asked for a museum day and one evening
river cruise. Earlier today the planner found two flights: IB3402 at 07:35 for 120 euros
and AF1001 at 18:10 for 95 euros, and three hotels: Hotel du Louvre at 210 euros a night,
Le Relais at 140 euros a night and Hostel Seine at 60 euros a night. The weather service
expects rain on 15 March and sun on the other days.
"""

PROBE_QUESTIONS = (
    "Which flight fits Maria best? Answer with the flight id only.",
    "Which hotel keeps the whole trip under budget?",
    "Write the arguments to book the morning flight.",
)

SERVED_MODES = ("non-shared", "full-shared", "decomposed")
SERVED_COMMAND = (sys.executable, "-m", "agentstack.cli", "bench", "cache-served")
"""One mode's engine per process: the hidden CLI command around `served_mode`."""
SERVED_KV_CACHE_GIB = 3
"""Engine KV space: every role's copy of the whole workload fits, so the engine's block
count after it is not cut by eviction (non-shared holds k copies)."""
SERVED_MEMORY_BYTES = 4 << 30
"""The served memory tier holds the whole workload, so bytes per token are not cut by eviction."""


@dataclass(frozen=True, slots=True)
class CacheBenchConfig:
    prompts: int = 8
    """BFCL dev prompts served per mode (the trained categories in turn, `multiple` first)."""
    reference_prompts: int = 2
    """Of those, how many the pure-PyTorch reference also runs (it is slow on a CPU)."""
    min_context_tokens: int = MIN_CONTEXT_TOKENS
    """Distractor functions fill each toolbox up to this; 0: the entry's own functions only."""
    served: bool = True
    report_dir: Path = Path("reports")


@dataclass(slots=True)
class ModeRow:
    mode: str
    bytes_per_context_token: int
    """The cache's bytes per shared context token once all roles read it: vLLM's per-adapter
    copies (non-shared, from the layout), else the served memory tier's bytes over the
    tokens of the blocks the workload stored (the layout's figure when not served)."""
    paged_bytes_per_token: int
    """One copy of a token in vLLM's paged cache (the decomposed model pads heads to 80)."""
    ratio_to_non_shared: float
    reference_kl: float
    reference_top1: float
    served_prefill_tokens: int | None = None
    served_ttft_p50_s: float | None = None
    served_ttft_p99_s: float | None = None
    served_reader_ttft_s: float | None = None
    served_throughput_tok_s: float | None = None
    served_accuracy: float | None = None
    served_agent_accuracy: float | None = None
    served_single_accuracy: float | None = None
    served_first_token_agreement: float | None = None
    served_kl_top: float | None = None
    engine_blocks_per_prompt: float | None = None
    """Physical KV blocks the engine holds per prompt once every role has read it, read from
    its block pool: one copy of the context per role unless the roles share blocks."""
    engine_bytes_per_shared_token: float | None = None
    """Those blocks' paged bytes over the context tokens the writer read."""
    reader_ttft_cross_role_s: float | None = None
    reader_ttft_same_role_s: float | None = None
    concurrent_prefill_tokens: float | None = None
    """Tokens the engine prefilled per toolbox when the three roles' requests arrive at once
    (``concurrent_prefill``)."""
    concurrent_prefill_vs_non_shared: float | None = None
    reader_ttft_vs_same_role_hit: float | None = None
    """Median TTFT of a reader on a context another role computed over its median TTFT on
    one it computed itself (``reader_ttfts``): 1 when sharing across roles is as good as
    vLLM's own prefix cache within one."""


@dataclass(slots=True)
class CacheBenchResult:
    config: CacheBenchConfig
    context_tokens: float
    """Mean tokens of the shared context per prompt (the reference cases')."""
    rows: list[ModeRow] = field(default_factory=list)
    served: dict[str, Any] = field(default_factory=dict)
    report: Path | None = None

    def summary(self) -> dict[str, Any]:
        """The issue's JSON shape (``roles`` = k, one entry per mode), plus details.

        ``accuracy`` is the share of BFCL checks passed by the calls both writers produced
        (the agent's and single's, per prompt); ``kl`` is the reference's (whole
        vocabulary). Served figures are null when the run did not serve.
        """
        return {
            "roles": len(BFCL_ROLES),
            "modes": [
                {
                    "mode": row.mode,
                    "prefill_tokens": row.served_prefill_tokens,
                    "ttft_p50_s": row.served_ttft_p50_s,
                    "ttft_p99_s": row.served_ttft_p99_s,
                    "throughput_tok_s": row.served_throughput_tok_s,
                    "bytes_per_token": float(row.bytes_per_context_token),
                    "accuracy": row.served_accuracy,
                    "kl": row.reference_kl,
                    "engine_blocks_per_prompt": row.engine_blocks_per_prompt,
                    "engine_bytes_per_shared_token": row.engine_bytes_per_shared_token,
                    "reader_ttft_vs_same_role_hit": row.reader_ttft_vs_same_role_hit,
                    "concurrent_prefill_vs_non_shared": row.concurrent_prefill_vs_non_shared,
                    "details": asdict(row),
                }
                for row in self.rows
            ],
            "role_names": list(BFCL_ROLES),
            "prompts": self.config.prompts,
            "context_tokens": self.context_tokens,
            "served": self.served,
            "report": str(self.report) if self.report else None,
        }


def _adapter(role: str) -> Path:
    path = PACKAGE_DATA / "adapters" / role
    if not (path / ADAPTER_CONFIG).is_file():
        raise ValueError(f"no packaged adapter named {role!r}")
    return path


def _probe_adapter(entry: str) -> tuple[str, Path]:
    """A probe role: a packaged adapter's name, or ``name=directory`` for any other adapter."""
    name, _, directory = entry.partition("=")
    return name, Path(directory) if directory else _adapter(name)


def _reference(model_dir: Path, cases: list[ReferenceCase]) -> dict[str, dict[str, float]]:
    """KL(non-shared ‖ mode) and top-1 agreement per mode, averaged over every reader."""
    from cache.adapters import group_by_shared_a
    from cache.reference import ReferenceModel

    roles = list(dict.fromkeys(r for case in cases for r in (case.writer, *case.tails)))
    if len(group_by_shared_a(_adapter(r) for r in roles)) != 1:
        raise ValueError(f"roles {roles} do not share one v_proj lora_A: no decomposed cache")
    model = ReferenceModel(model_dir)
    loaded = {role: model.load_role(_adapter(role)) for role in roles}
    totals = {m: {"kl": 0.0, "top1": 0.0} for m in SERVED_MODES}
    readers = sum(len(case.tails) for case in cases)
    for case in cases:
        shared_a = [layer.v.a for layer in loaded[case.writer]]  # type: ignore[union-attr]
        _, full = model.forward(case.context, loaded[case.writer])
        _, decomposed = model.forward(case.context, loaded[case.writer], shared_a=shared_a)
        for reader, tail in case.tails.items():
            role = loaded[reader]
            own, _ = model.forward(case.context + tail, role)
            expected = own[len(case.context) :].double().log_softmax(-1)
            got = {
                "non-shared": expected,
                "full-shared": model.forward(tail, role, past=full)[0].double().log_softmax(-1),
                "decomposed": model.forward(tail, role, past=decomposed, shared_a=shared_a)[0].double().log_softmax(-1),
            }
            for mode, logp in got.items():
                kl = (expected.exp() * (expected - logp)).sum(-1).mean()
                top1 = (expected.argmax(-1) == logp.argmax(-1)).double().mean()
                totals[mode]["kl"] += float(kl) / readers
                totals[mode]["top1"] += float(top1) / readers
    return totals


@dataclass(frozen=True, slots=True)
class PeerSync:
    """When a served engine sends its probe, relative to another engine on the same Redis.

    ``ready`` is written once this engine is warm; the probe waits for every file in
    ``wait_for``, then (``after_peer_claim``) until some engine claims blocks in flight,
    so its requests arrive while that engine is still computing the context.
    """

    ready: Path | None = None
    wait_for: tuple[Path, ...] = ()
    after_peer_claim: bool = False
    timeout_s: float = 300.0

    async def before_probe(self, redis_url: str | None) -> None:
        if self.ready is not None:
            self.ready.write_text("ready")
        deadline = time.monotonic() + self.timeout_s
        while not all(path.exists() for path in self.wait_for):
            if time.monotonic() > deadline:
                raise TimeoutError(f"peers not ready: {self.wait_for}")
            await asyncio.sleep(0.05)
        if self.after_peer_claim:
            import redis

            from cache.modes import RedisTierConfig

            client = redis.Redis.from_url(str(redis_url))
            pattern = f"{{{RedisTierConfig().prefix}}}:inflight:*"
            while not next(iter(client.scan_iter(match=pattern, count=1000)), None):
                if time.monotonic() > deadline:
                    raise TimeoutError("no peer claimed blocks in flight")
                await asyncio.sleep(0.002)
            client.close()


def served_mode(
    mode: str, redis_url: str | None, out: Path, *, probe: tuple[str, ...] = (), prompts: int = 1,
    min_context_tokens: int = MIN_CONTEXT_TOKENS, isolate: bool = False, together: bool = False,
    context_repeats: int = 1, peer: PeerSync = PeerSync(),
) -> None:
    """One engine with `cache.mode = mode`: warm the adapters, then the measured workload.

    The BFCL workload by default; with ``probe`` roles, the probe: the first role reads
    the probe context (``context_repeats`` times over) then its question, then each other
    role, one token each; with ``together``, all roles' requests are sent at once (roles
    arriving concurrently). ``isolate`` gives every role its own cache salt, so none can
    reuse another's prefix. ``peer`` times the probe against another engine's.
    """
    from agentstack.engine import Engine, SchedulerSnapshot
    from agentstack.model_prep import prepare
    from cache.connector import STATS_INTERVAL_S

    cache_stats: dict[str, Any] = {}

    def on_stats(snapshot: SchedulerSnapshot) -> None:
        if snapshot.cache_stats:
            cache_stats.update(snapshot.cache_stats)

    settings = Settings(cache={"mode": mode, "memory_capacity_bytes": SERVED_MEMORY_BYTES}, redis_url=redis_url,
                        kv_cache_space_gib=SERVED_KV_CACHE_GIB)
    named = dict(map(_probe_adapter, probe)) if probe else {role: _adapter(role) for role in BFCL_ROLES}
    roles = tuple(named)
    engine = Engine(settings, prepare(settings.models_dir).path, on_scheduler_stats=on_stats)
    engine.start()
    result: dict[str, Any] = {"mode": mode, "rows": [], "outcomes": [], "stored_blocks": 0,
                              "block_size": settings.cache.block_size, "probe_prompts": []}

    async def run() -> None:
        adapters = {role: engine.new_adapter(role, path) for role, path in named.items()}
        warm = RecordingCompleter(engine, adapters, round=-1, block_size=settings.cache.block_size)
        for role in adapters:
            await engine.load_adapter(adapters[role])
            await warm.request(role, [1, 2, 3], 1)  # too short for a block: never cached
        completers = []
        toolboxes = [] if probe else toolbox_prompts(prompts, engine.tokenizer, min_context_tokens)
        blocks_before = await engine.cached_blocks()
        started = time.perf_counter()
        if probe:
            await peer.before_probe(redis_url)
            started = time.perf_counter()
            context = engine.text_prompt(PROBE_CONTEXT * context_repeats)
            completer = RecordingCompleter(engine, adapters, 0, settings.cache.block_size, isolate)
            prompts_of = {role: context + engine.text_prompt("\n" + PROBE_QUESTIONS[i % len(PROBE_QUESTIONS)])
                          for i, role in enumerate(roles)}
            if together:
                await asyncio.gather(*(completer.request(role, ids, 1) for role, ids in prompts_of.items()))
            else:
                for role, ids in prompts_of.items():
                    await completer.request(role, ids, 1)
            result["probe_prompts"] = list(prompts_of.values())
            completers.append(completer)
        else:
            for i, prompt in enumerate(toolboxes):
                completer = RecordingCompleter(engine, adapters, i, settings.cache.block_size, isolate)
                result["outcomes"].append(asdict(await run_prompt(completer, prompt)))
                completers.append(completer)
                _report_progress(mode, i + 1, len(toolboxes), time.perf_counter() - started)
        result["workload_s"] = time.perf_counter() - started
        result["engine_blocks"] = await engine.cached_blocks() - blocks_before
        # vLLM's own block size: the cache's in the shared modes, vLLM's default otherwise.
        result["engine_block_size"] = engine.llm.vllm_config.cache_config.block_size
        # The connector reports its counters at most once per interval: one more step
        # after it has passed carries the final figures.
        await asyncio.sleep(STATS_INTERVAL_S + 0.5)
        await warm.request(roles[0], [1, 2, 3], 1)
        result["cache_stats"] = copy.deepcopy(cache_stats)
        result["rows"] = [asdict(r) for c in completers for r in c.records]
        result["stored_blocks"] = len(set().union(*(c.blocks for c in completers)))
        if not probe:
            result["reader_ttfts"] = await reader_ttfts(engine, adapters, toolboxes[:READER_TTFT_ROUNDS],
                                                        settings.cache.block_size)
            result["concurrent"] = await concurrent_prefill(engine, adapters, toolboxes,
                                                            settings.cache.block_size)

    try:
        asyncio.run(run())
    finally:
        engine.shutdown()
    out.write_text(json.dumps(result))


PROGRESS_EVERY = 10


def _report_progress(mode: str, done: int, total: int, elapsed_s: float) -> None:
    """A line on stderr every `PROGRESS_EVERY` prompts: 100 prompts take 8 to 23 minutes a mode."""
    if done % PROGRESS_EVERY and done != total:
        return
    eta = elapsed_s / done * (total - done)
    print(f"bench cache {mode}: {done}/{total} prompts, {elapsed_s:.0f} s, about {eta:.0f} s left",
          file=sys.stderr, flush=True)


READER_TTFT_ROUNDS = 5
READER_TTFT_SALT_BASE = 10_000
"""Rounds of the reader TTFT probe are salted apart from the workload's rounds."""


async def reader_ttfts(engine: Engine, adapters: dict[str, Adapter], toolboxes: list[ToolboxPrompt],
                       block_size: int) -> list[dict[str, float]]:
    """Per toolbox, under a salt of its own: the selector computes the context (cold), then
    the argument writer reads it twice, each time for another function (its own suffix to
    prefill): first after the selector only (a cross-role read), then after itself (a
    same-role prefix-cache hit). Run after the workload, so its blocks are not counted."""
    ttfts = []
    for i, toolbox in enumerate(toolboxes):
        completer = RecordingCompleter(engine, adapters, READER_TTFT_SALT_BASE + i, block_size)
        messages, tools = toolbox.example.messages, toolbox.tools
        first, second = function_names(tools)[:2]
        for role, prompt in ((BFCL_ROLES[0], selector_messages(messages, tools)),
                             (ARGUMENTS_ROLE, arguments_messages(messages, tools, first)),
                             (ARGUMENTS_ROLE, arguments_messages(messages, tools, second))):
            await completer.request(role, engine.chat_prompt(prompt), 1)
        cold, cross, same = (r.ttft_s for r in completer.records)
        ttfts.append({"cold_s": cold, "cross_role_s": cross, "same_role_s": same})
    return ttfts


CONCURRENT_SALT_BASE = 20_000


async def concurrent_prefill(engine: Engine, adapters: dict[str, Adapter], toolboxes: list[ToolboxPrompt],
                             block_size: int) -> list[dict[str, int]]:
    """Per toolbox, under a salt of its own, the selector's, the argument writer's and the
    single writer's requests sent at once (roles arriving concurrently): the prompt tokens
    the engine prefilled for the three. Run after the workload, like ``reader_ttfts``."""
    counts = []
    for i, toolbox in enumerate(toolboxes):
        completer = RecordingCompleter(engine, adapters, CONCURRENT_SALT_BASE + i, block_size)
        messages, tools = toolbox.example.messages, toolbox.tools
        prompts = {BFCL_ROLES[0]: selector_messages(messages, tools),
                   ARGUMENTS_ROLE: arguments_messages(messages, tools, function_names(tools)[0]),
                   BFCL_ROLES[2]: single_messages(messages, tools)}
        await asyncio.gather(*(completer.request(role, engine.chat_prompt(m), 1) for role, m in prompts.items()))
        counts.append({"prompt_tokens": sum(r.prompt_tokens for r in completer.records),
                       "prefill_tokens": sum(r.prompt_tokens - r.cached_tokens for r in completer.records)})
    return counts


def _served_key(prompts: int, min_context_tokens: int) -> dict[str, Any]:
    """What a mode's served figures depend on: the workload and the roles' weights."""
    from agentstack.model_prep import sha256_file

    adapters = {role: sha256_file(_adapter(role) / ADAPTER_WEIGHTS) for role in BFCL_ROLES}
    return {"prompts": prompts, "min_context_tokens": min_context_tokens, "adapters": adapters}


def _run_served(prompts: int, min_context_tokens: int, keep_dir: Path) -> dict[str, Any]:
    """Each mode's engine in turn on one Redis. A mode's figures are kept in `keep_dir` as
    it finishes, and a rerun with the same workload and adapters reuses them: the three
    modes of a 200-check run take most of an hour."""
    from agentstack.redis_server import EmbeddedRedis

    key = _served_key(prompts, min_context_tokens)
    keep_dir.mkdir(parents=True, exist_ok=True)
    paths = {mode: keep_dir / f"{mode}.json" for mode in SERVED_MODES}
    results: dict[str, Any] = {}
    for mode, path in paths.items():
        if (kept := _kept_result(path, key)) is not None:
            print(f"bench cache {mode}: reusing {path}", file=sys.stderr, flush=True)
            results[mode] = kept
    if len(results) == len(SERVED_MODES):
        return results
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        for mode in (m for m in SERVED_MODES if m not in results):
            out = Path(tmp) / f"{mode}.json"
            subprocess.run(
                [*SERVED_COMMAND, mode, server.url, str(out),
                 "--prompts", str(prompts), "--min-context-tokens", str(min_context_tokens)],
                check=True,
            )
            results[mode] = json.loads(out.read_text())
            partial = paths[mode].with_suffix(".partial")  # a run killed mid-write leaves no half file
            partial.write_text(json.dumps({"key": key, "result": results[mode]}))
            partial.replace(paths[mode])
    return {mode: results[mode] for mode in SERVED_MODES}


def _kept_result(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """A mode's figures from an earlier run with the same key, else None."""
    if not path.is_file():
        return None
    stored = json.loads(path.read_text())
    return stored["result"] if stored.get("key") == key else None


def top_kl(expected: dict[str, float], got: dict[str, float]) -> float:
    """KL(expected ‖ got) over ``expected``'s top tokens, each side renormalised on them.

    A token missing from ``got``'s top list takes ``got``'s smallest finite listed
    log-probability (an upper bound on it), so the figure is an estimate of the
    full-vocabulary KL. Guided decoding lists tokens its grammar forbids at -inf: on the
    expected side they add nothing (0 log 0 = 0), on the other they take the same bound.
    """
    kept = {t: lp for t, lp in expected.items() if math.isfinite(lp)}
    finite = [lp for lp in got.values() if math.isfinite(lp)]
    if not kept or not finite:
        return 0.0
    floor = min(finite)
    other = {t: lp if math.isfinite(lp := got.get(t, floor)) else floor for t in kept}
    log_zp, log_zq = _log_sum_exp(kept.values()), _log_sum_exp(other.values())
    return sum(math.exp(lp - log_zp) * ((lp - log_zp) - (other[t] - log_zq)) for t, lp in kept.items())


def _log_sum_exp(values: Iterable[float]) -> float:
    values = list(values)
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _percentile(values: list[float], pct: float) -> float:
    """Linear-interpolated percentile (numpy's default) of a small sample."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _served_figures(row: ModeRow, served: dict[str, Any]) -> None:
    """Fill a mode's served columns from its engine's rows and non-shared's."""
    run = served[row.mode]
    rows = run["rows"]
    memory = run["cache_stats"].get("worker", {}).get("bytes", {}).get("memory")
    if memory and run["stored_blocks"]:
        row.bytes_per_context_token = round(memory / (run["stored_blocks"] * run["block_size"]))
    baseline = {(r["round"], r["role"], r["prompt_key"]): r for r in served["non-shared"]["rows"]}
    readers = [r for r in rows if r["role"] != BFCL_ROLES[0]]
    ttfts = [r["ttft_s"] for r in rows]
    rounds = len({r["round"] for r in rows})
    row.served_prefill_tokens = round(sum(r["prompt_tokens"] - r["cached_tokens"] for r in rows) / rounds)
    if "engine_blocks" in run:
        row.engine_blocks_per_prompt = run["engine_blocks"] / rounds
        context_tokens = sum(r["prompt_tokens"] for r in rows if r["role"] == BFCL_ROLES[0])
        row.engine_bytes_per_shared_token = round(
            run["engine_blocks"] * run["engine_block_size"] * row.paged_bytes_per_token / context_tokens, 1)
    row.served_ttft_p50_s = _percentile(ttfts, 50)
    row.served_ttft_p99_s = _percentile(ttfts, 99)
    if run.get("reader_ttfts"):
        row.reader_ttft_cross_role_s = _percentile([t["cross_role_s"] for t in run["reader_ttfts"]], 50)
        row.reader_ttft_same_role_s = _percentile([t["same_role_s"] for t in run["reader_ttfts"]], 50)
        row.reader_ttft_vs_same_role_hit = round(row.reader_ttft_cross_role_s / row.reader_ttft_same_role_s, 3)
    if run.get("concurrent"):
        prefilled = sum(c["prefill_tokens"] for c in run["concurrent"])
        row.concurrent_prefill_tokens = prefilled / len(run["concurrent"])
        alone = sum(c["prefill_tokens"] for c in served["non-shared"].get("concurrent", []))
        row.concurrent_prefill_vs_non_shared = round(prefilled / alone, 3) if alone else None
    row.served_reader_ttft_s = sum(r["ttft_s"] for r in readers) / len(readers)
    row.served_throughput_tok_s = sum(r["prompt_tokens"] + r["generated_tokens"] for r in rows) / run["workload_s"]
    outcomes = run["outcomes"]
    row.served_agent_accuracy = sum(o["agent_correct"] for o in outcomes) / len(outcomes)
    row.served_single_accuracy = sum(o["single_correct"] for o in outcomes) / len(outcomes)
    row.served_accuracy = (row.served_agent_accuracy + row.served_single_accuracy) / 2
    pairs = [(r, baseline[key]) for r in readers if (key := (r["round"], r["role"], r["prompt_key"])) in baseline]
    if pairs:
        row.served_first_token_agreement = sum(r["first_token"] == b["first_token"] for r, b in pairs) / len(pairs)
        row.served_kl_top = sum(top_kl(b["logprobs"], r["logprobs"]) for r, b in pairs) / len(pairs)


def run_cache_bench(settings: Settings, config: CacheBenchConfig) -> CacheBenchResult:
    from transformers import AutoTokenizer

    from agentstack.model_prep import prepare
    from cache.decomposed_model import decomposed_head_size
    from cache.layout import BlockLayout, ModelShape
    from cache.modes import CacheMode

    if not 1 <= config.reference_prompts <= config.prompts:
        raise ValueError("reference prompts must be between 1 and the number of prompts")
    model_dir = prepare(settings.models_dir).path
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    cases = [
        reference_case(p, tokenizer)
        for p in toolbox_prompts(config.reference_prompts, tokenizer, config.min_context_tokens)
    ]
    result = CacheBenchResult(config, sum(len(c.context) for c in cases) / len(cases))
    reference = _reference(model_dir, cases)
    served = (_run_served(config.prompts, config.min_context_tokens, config.report_dir / "served")
              if config.served else {})
    result.served = served
    shape = ModelShape.from_model_dir(model_dir)
    rank = json.loads((_adapter(BFCL_ROLES[0]) / ADAPTER_CONFIG).read_text())["r"]
    for mode in CacheMode:
        layout = BlockLayout(shape, mode, rank=rank if mode.stores_low_rank else 0)
        # The decomposed model pads each KV head to a kernel head size (64 + r -> 80).
        paged_head = decomposed_head_size(shape.head_dim, rank) if mode.stores_low_rank else shape.head_dim
        row = ModeRow(
            mode=mode.value,
            bytes_per_context_token=layout.bytes_per_context_token(len(BFCL_ROLES)),
            paged_bytes_per_token=shape.num_layers * 2 * shape.num_kv_heads * paged_head * shape.element_bytes,
            ratio_to_non_shared=0.0,
            reference_kl=reference[mode.value]["kl"],
            reference_top1=reference[mode.value]["top1"],
        )
        if mode.value in served:
            _served_figures(row, served)
        result.rows.append(row)
    for row in result.rows:
        row.ratio_to_non_shared = round(row.bytes_per_context_token / result.rows[0].bytes_per_context_token, 4)
    write_report(result)
    return result


def write_report(result: CacheBenchResult) -> None:
    out = result.config.report_dir
    out.mkdir(parents=True, exist_ok=True)

    def cell(value: float | int | None, fmt: str) -> str:
        return "not served" if value is None else format(value, fmt)

    rows = [
        [
            r.mode, cell(r.served_prefill_tokens, "d"), cell(r.served_ttft_p50_s, ".2f"),
            cell(r.served_ttft_p99_s, ".2f"), cell(r.served_reader_ttft_s, ".2f"),
            cell(r.served_throughput_tok_s, ".1f"), r.bytes_per_context_token, f"{r.ratio_to_non_shared:.3f}",
            r.paged_bytes_per_token, cell(r.served_accuracy, ".3f"), cell(r.served_agent_accuracy, ".3f"),
            cell(r.served_single_accuracy, ".3f"), f"{r.reference_kl:.3f}", f"{r.reference_top1:.3f}",
            cell(r.served_first_token_agreement, ".2f"), cell(r.served_kl_top, ".3f"),
            cell(r.engine_blocks_per_prompt, ".1f"), cell(r.engine_bytes_per_shared_token, ".0f"),
            cell(r.reader_ttft_cross_role_s, ".3f"), cell(r.reader_ttft_same_role_s, ".3f"),
            cell(r.reader_ttft_vs_same_role_hit, ".2f"),
            cell(r.concurrent_prefill_tokens, ".0f"), cell(r.concurrent_prefill_vs_non_shared, ".3f"),
        ]
        for r in result.rows
    ]
    plot = None
    if result.served:
        base = result.rows[0]
        plot = grouped_bar_chart(
            out / "bench-cache.png",
            "Shared-prefix cache modes, relative to non-shared (k = 3 roles)",
            {
                metric: {r.mode: value(r) / value(base) for r in result.rows}
                for metric, value in {
                    "prefill tokens": lambda r: float(r.served_prefill_tokens or 0),
                    "TTFT p50": lambda r: r.served_ttft_p50_s or 0.0,
                    "bytes per shared token": lambda r: float(r.bytes_per_context_token),
                }.items()
            },
            ylabel="ratio to non-shared",
        )
    text = "\n".join([
        "# bench cache",
        "",
        f"Command: `agentstack bench cache --prompts {result.config.prompts} "
        f"--reference-prompts {result.config.reference_prompts} "
        f"--min-context-tokens {result.config.min_context_tokens}{'' if result.served else ' --no-served'}`",
        "",
        f"Workload: the tool agent on {result.config.prompts} BFCL dev prompts (the four trained "
        f"categories in turn), each a toolbox context of {result.context_tokens:.0f} tokens on average "
        + ("(the entry's functions among others'). " if result.config.min_context_tokens
           else "(the entry's own functions). ")
        + f"The {BFCL_ROLES[0]} computes it; {', '.join(BFCL_ROLES[1:])} read it. One fresh engine per mode.",
        "",
        markdown_table(
            ["mode", "prefill tokens/prompt", "TTFT p50 s", "TTFT p99 s", "reader TTFT s", "throughput tok/s",
             "bytes/shared token", "vs non-shared", "paged bytes/token (1 copy)", "accuracy (BFCL checker)",
             "agent accuracy", "single accuracy", "KL vs non-shared (reference)", "top-1 agreement (reference)",
             "first-token agreement (served)", "first-token KL, top-20 (served)",
             "engine blocks/prompt (block pool)", "engine bytes/shared token",
             "reader TTFT, other role's context s", "reader TTFT, own context s", "cross-role / same-role",
             "prefill tokens, roles at once", "roles at once vs non-shared"],
            rows,
        ),
        "",
        "Accuracy: BFCL AST checks passed by the agent's calls (selector, then arguments) and by",
        "single's, over all prompts. Reference: the readers' next-token distributions over the rest",
        f"of their prompt and their ground-truth answer, against their own prefill (pure PyTorch, all "
        f"layers, float32, {result.config.reference_prompts} prompts). Served agreement and KL: the "
        "readers' first token against non-shared, on prompts identical in both modes. Engine",
        "blocks: physical KV blocks holding cached prompt blocks in the engine's block pool after",
        "the workload, per prompt (every role's copies), and their paged bytes per context token.",
        f"Reader TTFT (medians over {READER_TTFT_ROUNDS} toolboxes, each under its own salt): the argument",
        "writer on a context the selector computed, against the argument writer on a context it",
        "computed itself, each with a suffix of its own to prefill. Roles at once: per toolbox, under",
        "its own salt, the three roles' requests sent together; prompt tokens the engine prefilled.",
        "",
        *([f"![bench cache]({plot.name})", ""] if plot else []),
    ])
    result.report = out / "bench-cache.md"
    result.report.write_text(text)
    (out / "bench-cache.json").write_text(json.dumps(result.summary(), indent=1))
