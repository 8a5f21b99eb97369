"""`agentstack bench cache`: the three prefix-cache modes side by side.

Several roles read one shared context and then ask their own question. The first role
(the writer) computes the context; the others (readers) may reuse it.

- **Reference** (pure PyTorch, every mode, all layers): the reader's next-token
  distributions over its question after (a) its own prefill of the context (non-shared),
  (b) the writer's K and V (full-shared), (c) the writer's K, V_base and x·A with the
  reader's own B (decomposed). Reported: KL(non-shared ‖ mode) and top-1 agreement with
  non-shared, averaged over question tokens and readers.
- **Served** (vLLM CPU): the same prompts through the engine in each `cache.mode`:
  non-shared (vLLM alone), full-shared (the cache's KV connector) and decomposed (the
  decomposed-attention model plus the connector), one fresh engine per mode. The workload
  (writer, then each reader) runs ``rounds`` times, each round under its own cache salt
  so no round reuses another's context. Reported: prompt tokens the engine prefilled per
  round, TTFT p50/p99 over every request, workload throughput, the readers' first token
  agreeing with non-shared, and the KL of the served first-token distribution (top
  ``TOP_LOGPROBS``) against non-shared.
- **Bytes** per context token held once all roles have read it (`cache.layout`): the
  shared cache's blocks, and the engine's paged working copy.

Each served mode runs in its own process (`python -m agentstack.bench.cache served ...`),
so no engine inherits another's cache or memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from agentstack.bench.report import markdown_table
from agentstack.config import PACKAGE_DATA, Settings

CONTEXT = """You are part of a team of agents that plan trips. Shared notes for every agent:

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

QUESTIONS = (
    "Which flight fits Maria best? Answer with the flight id only.",
    "Which hotel keeps the whole trip under budget?",
    "Write the arguments to book the morning flight.",
    "What should Maria pack for 15 March?",
)


@dataclass(frozen=True, slots=True)
class CacheBenchConfig:
    roles: tuple[str, ...] = ()
    """Role adapters in `agentstack/data/adapters`; the first writes the context. Empty:
    the largest shipped family sharing one v_proj lora_A."""
    served: bool = True
    rounds: int = 2
    """Served workload repetitions per mode (each under a fresh cache salt)."""
    report_dir: Path = Path("reports")


@dataclass(slots=True)
class ModeRow:
    mode: str
    bytes_per_context_token: int
    """The cache's bytes per context token once all roles read it: vLLM's per-adapter copies
    (non-shared, from the layout), else the served memory tier's bytes over the tokens it
    holds (the layout's figure when not served)."""
    paged_bytes_per_token: int
    """One copy of a token in vLLM's paged cache (the decomposed model pads heads to 80)."""
    ratio_to_non_shared: float
    reference_prefill_tokens: int
    reference_kl: float
    reference_top1: float
    served_prefill_tokens: int | None = None
    served_ttft_p50_s: float | None = None
    served_ttft_p99_s: float | None = None
    served_reader_ttft_s: float | None = None
    served_throughput_tok_s: float | None = None
    served_first_token_agreement: float | None = None
    served_kl_top: float | None = None


@dataclass(slots=True)
class CacheBenchResult:
    config: CacheBenchConfig
    context_tokens: int
    question_tokens: dict[str, int]
    rows: list[ModeRow] = field(default_factory=list)
    served: dict[str, Any] = field(default_factory=dict)
    report: Path | None = None

    def summary(self) -> dict[str, Any]:
        """The issue's JSON shape (``roles`` = k, one entry per mode), plus details.

        ``accuracy`` is None: no task checker runs on these one-token answers (the
        readers' first-token agreement with non-shared is ``first_token_agreement``).
        ``kl`` is the reference's (whole vocabulary, every question token); served
        figures are null for a mode the run did not serve.
        """
        return {
            "roles": len(self.config.roles),
            "modes": [
                {
                    "mode": row.mode,
                    "prefill_tokens": row.served_prefill_tokens,
                    "ttft_p50_s": row.served_ttft_p50_s,
                    "ttft_p99_s": row.served_ttft_p99_s,
                    "throughput_tok_s": row.served_throughput_tok_s,
                    "bytes_per_token": float(row.bytes_per_context_token),
                    "accuracy": None,
                    "kl": row.reference_kl,
                    "first_token_agreement": row.served_first_token_agreement,
                    "served_kl_top": row.served_kl_top,
                    "details": asdict(row),
                }
                for row in self.rows
            ],
            "role_names": list(self.config.roles),
            "context_tokens": self.context_tokens,
            "question_tokens": self.question_tokens,
            "served": self.served,
            "report": str(self.report) if self.report else None,
        }


def _prompts(tokenizer: Any, roles: tuple[str, ...]) -> tuple[list[int], dict[str, list[int]]]:
    context = list(tokenizer(CONTEXT, add_special_tokens=False)["input_ids"])
    questions = {
        role: list(tokenizer("\n" + QUESTIONS[i % len(QUESTIONS)], add_special_tokens=False)["input_ids"])
        for i, role in enumerate(roles)
    }
    return context, questions


def _adapter(role: str) -> Path:
    path = PACKAGE_DATA / "adapters" / role
    if not (path / "adapter_config.json").is_file():
        raise ValueError(f"no packaged adapter named {role!r}")
    return path


def shipped_roles() -> tuple[str, ...]:
    """The largest shipped adapter family that shares one v_proj lora_A (at most three)."""
    from cache.adapters import group_by_shared_a

    shipped = [p for p in (PACKAGE_DATA / "adapters").iterdir() if (p / "adapter_config.json").is_file()]
    return tuple(p.name for p in group_by_shared_a(shipped)[0][:3])


def _reference(model_dir: Path, roles: tuple[str, ...], context: list[int], questions: dict[str, list[int]]) -> dict[str, dict[str, float]]:
    """KL(non-shared ‖ mode) and top-1 agreement per mode, averaged over the readers."""
    from cache.adapters import group_by_shared_a
    from cache.reference import ReferenceModel

    if len(group_by_shared_a(_adapter(r) for r in roles)) != 1:
        raise ValueError(f"roles {roles} do not share one v_proj lora_A: no decomposed cache")
    model = ReferenceModel(model_dir)
    writer_role = model.load_role(_adapter(roles[0]))
    shared_a = [layer.v.a for layer in writer_role]  # type: ignore[union-attr]
    _, full = model.forward(context, writer_role)
    _, decomposed = model.forward(context, writer_role, shared_a=shared_a)
    totals = {m: {"kl": 0.0, "top1": 0.0} for m in ("non-shared", "full-shared", "decomposed")}
    readers = roles[1:]
    for reader in readers:
        role = model.load_role(_adapter(reader))
        q = questions[reader]
        own, _ = model.forward(context + q, role)
        expected = own[len(context) :].double().log_softmax(-1)
        got = {
            "non-shared": expected,
            "full-shared": model.forward(q, role, past=full)[0].double().log_softmax(-1),
            "decomposed": model.forward(q, role, past=decomposed, shared_a=shared_a)[0].double().log_softmax(-1),
        }
        for mode, logp in got.items():
            kl = (expected.exp() * (expected - logp)).sum(-1).mean()
            top1 = (expected.argmax(-1) == logp.argmax(-1)).double().mean()
            totals[mode]["kl"] += float(kl) / len(readers)
            totals[mode]["top1"] += float(top1) / len(readers)
    return totals


TOP_LOGPROBS = 20
"""Top next-token log-probabilities recorded per served answer (for comparing modes)."""

SERVED_MODES = ("non-shared", "full-shared", "decomposed")


def _served_mode(
    mode: str,
    roles: tuple[str, ...],
    redis_url: str | None,
    out: Path,
    *,
    isolate: bool = False,
    rounds: int = 1,
) -> None:
    """One engine with `cache.mode = mode`: warm the adapters, then the measured workload.

    Each round runs the writer, then every reader, under the round's own cache salt.
    ``isolate`` gives every role its own salt as well, so no role can reuse another's
    prefix: each computes everything itself (the served model without any sharing).
    """
    import asyncio

    from vllm import SamplingParams

    from agentstack.engine import Engine, SchedulerSnapshot
    from agentstack.model_prep import prepare
    from cache.connector import STATS_INTERVAL_S

    cache_stats: dict[str, Any] = {}

    def on_stats(snapshot: SchedulerSnapshot) -> None:
        if snapshot.cache_stats:
            cache_stats.update(snapshot.cache_stats)

    settings = Settings(cache={"mode": mode}, redis_url=redis_url, kv_cache_space_gib=1)
    engine = Engine(settings, prepare(settings.models_dir).path, on_scheduler_stats=on_stats)
    engine.start()
    tokenizer = engine.tokenizer
    context, questions = _prompts(tokenizer, roles)
    sampling = SamplingParams(max_tokens=1, temperature=0.0, logprobs=TOP_LOGPROBS)

    async def short_request(request_id: str, adapter: Any) -> None:
        """Too short for a full block: it never touches the cache."""
        async for _ in engine.generate([1, 2, 3], sampling, request_id=request_id, adapter=adapter):
            pass

    async def run() -> tuple[list[dict[str, Any]], float]:
        adapters = {role: engine.new_adapter(role, _adapter(role)) for role in roles}
        for adapter in adapters.values():
            await engine.load_adapter(adapter)
            await short_request(f"warm-{adapter.name}", adapter)
        rows = []
        workload_start = time.perf_counter()
        for round_ in range(rounds):
            for role in roles:
                ids = context + questions[role]
                salt = f"bench-{round_}" + (f"-{role}" if isolate else "")
                started = time.perf_counter()
                final = None
                async for output in engine.generate(
                    ids, sampling, request_id=f"bench-{round_}-{role}", adapter=adapters[role], cache_salt=salt
                ):
                    final = output
                assert final is not None
                top = final.outputs[0].logprobs[0] if final.outputs[0].logprobs else {}
                rows.append({
                    "round": round_,
                    "role": role,
                    "prompt_tokens": len(ids),
                    "cached_tokens": final.num_cached_tokens or 0,
                    "ttft_s": time.perf_counter() - started,
                    "first_token": final.outputs[0].token_ids[0],
                    "logprobs": {str(t): float(lp.logprob) for t, lp in top.items()},
                })
        workload_s = time.perf_counter() - workload_start
        # The connector reports its counters at most once per interval: one more step
        # after it has passed carries the final figures.
        await asyncio.sleep(STATS_INTERVAL_S + 0.5)
        await short_request("flush-stats", None)
        return rows, workload_s

    try:
        rows, workload_s = asyncio.run(run())
    finally:
        engine.shutdown()
    out.write_text(json.dumps({"mode": mode, "rows": rows, "workload_s": workload_s, "cache_stats": cache_stats}))


def _run_served(roles: tuple[str, ...], rounds: int) -> dict[str, Any]:
    from agentstack.redis_server import EmbeddedRedis

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        for mode in SERVED_MODES:
            out = Path(tmp) / f"{mode}.json"
            subprocess.run(
                [sys.executable, "-m", "agentstack.bench.cache", "served", mode, ",".join(roles), server.url,
                 str(out), "--rounds", str(rounds)],
                check=True,
            )
            results[mode] = json.loads(out.read_text())
    return results


def top_kl(expected: dict[str, float], got: dict[str, float]) -> float:
    """KL(expected ‖ got) over ``expected``'s top tokens, each side renormalised on them.

    A token missing from ``got``'s top list takes ``got``'s smallest listed log-probability
    (an upper bound on it), so the figure is an estimate of the full-vocabulary KL.
    """
    import math

    floor = min(got.values())
    p = {t: math.exp(lp) for t, lp in expected.items()}
    q = {t: math.exp(got.get(t, floor)) for t in expected}
    zp, zq = sum(p.values()), sum(q.values())
    return sum(pt / zp * math.log((pt / zp) / (q[t] / zq)) for t, pt in p.items())


def _percentile(values: list[float], pct: float) -> float:
    """Linear-interpolated percentile (numpy's default) of a small sample."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _stored_tokens(rows: list[dict[str, Any]], context_tokens: int, block_size: int) -> int:
    """Tokens in the distinct full blocks a shared-mode run saved: the context's blocks once
    per round, each prompt's blocks past the context once each."""
    shared = context_tokens // block_size
    blocks = sum(shared + max(0, r["prompt_tokens"] // block_size - shared) for r in rows if r["role"] == rows[0]["role"])
    blocks += sum(max(0, r["prompt_tokens"] // block_size - shared) for r in rows if r["role"] != rows[0]["role"])
    return blocks * block_size


def _served_figures(row: ModeRow, served: dict[str, Any], rounds: int, context_tokens: int, block_size: int) -> None:
    """Fill a mode's served columns from its engine's rows and non-shared's."""
    rows = served[row.mode]["rows"]
    memory = served[row.mode]["cache_stats"].get("worker", {}).get("bytes", {}).get("memory")
    if memory:
        row.bytes_per_context_token = round(memory / _stored_tokens(rows, context_tokens, block_size))
    baseline = {(r["round"], r["role"]): r for r in served["non-shared"]["rows"]}
    roles = list(dict.fromkeys(r["role"] for r in rows))
    readers = [r for r in rows if r["role"] != roles[0]]
    ttfts = [r["ttft_s"] for r in rows]
    row.served_prefill_tokens = round(sum(r["prompt_tokens"] - r["cached_tokens"] for r in rows) / rounds)
    row.served_ttft_p50_s = _percentile(ttfts, 50)
    row.served_ttft_p99_s = _percentile(ttfts, 99)
    row.served_reader_ttft_s = sum(r["ttft_s"] for r in readers) / len(readers)
    row.served_throughput_tok_s = sum(r["prompt_tokens"] + 1 for r in rows) / served[row.mode]["workload_s"]
    pairs = [(r, baseline[(r["round"], r["role"])]) for r in readers]
    row.served_first_token_agreement = sum(r["first_token"] == b["first_token"] for r, b in pairs) / len(pairs)
    row.served_kl_top = sum(top_kl(b["logprobs"], r["logprobs"]) for r, b in pairs) / len(pairs)


def run_cache_bench(settings: Settings, config: CacheBenchConfig) -> CacheBenchResult:
    from transformers import AutoTokenizer

    from agentstack.model_prep import prepare
    from cache.decomposed_model import decomposed_head_size
    from cache.layout import BlockLayout, ModelShape
    from cache.modes import CacheMode

    if not config.roles:
        config = replace(config, roles=shipped_roles())
    if len(config.roles) < 2:
        raise ValueError("the cache bench needs at least two roles: a writer and a reader")
    model_dir = prepare(settings.models_dir).path
    context, questions = _prompts(AutoTokenizer.from_pretrained(model_dir), config.roles)
    result = CacheBenchResult(config, len(context), {r: len(q) for r, q in questions.items()})
    reference = _reference(model_dir, config.roles, context, questions)
    served = _run_served(config.roles, config.rounds) if config.served else {}
    result.served = served
    shape = ModelShape.from_model_dir(model_dir)
    rank = json.loads((_adapter(config.roles[0]) / "adapter_config.json").read_text())["r"]
    k = len(config.roles)
    question_total = sum(len(q) for q in questions.values())
    for mode in CacheMode:
        layout = BlockLayout(shape, mode, rank=rank if mode.stores_low_rank else 0)
        prefill = k * len(context) + question_total if mode.keyed_by_adapter else len(context) + question_total
        # The decomposed model pads each KV head to a kernel head size (64 + r -> 80).
        paged_head = decomposed_head_size(shape.head_dim, rank) if mode.stores_low_rank else shape.head_dim
        row = ModeRow(
            mode=mode.value,
            bytes_per_context_token=layout.bytes_per_context_token(k),
            paged_bytes_per_token=shape.num_layers * 2 * shape.num_kv_heads * paged_head * shape.element_bytes,
            ratio_to_non_shared=round(layout.ratio_to_non_shared(k), 4),
            reference_prefill_tokens=prefill,
            reference_kl=reference[mode.value]["kl"],
            reference_top1=reference[mode.value]["top1"],
        )
        if mode.value in served:
            _served_figures(row, served, config.rounds, len(context), settings.cache.block_size)
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
            r.mode, r.bytes_per_context_token, f"{r.ratio_to_non_shared:.3f}", r.paged_bytes_per_token,
            r.reference_prefill_tokens, f"{r.reference_kl:.3f}", f"{r.reference_top1:.3f}",
            cell(r.served_prefill_tokens, "d"), cell(r.served_ttft_p50_s, ".2f"), cell(r.served_ttft_p99_s, ".2f"),
            cell(r.served_reader_ttft_s, ".2f"), cell(r.served_throughput_tok_s, ".1f"),
            cell(r.served_first_token_agreement, ".2f"), cell(r.served_kl_top, ".3f"),
        ]
        for r in result.rows
    ]
    roles = list(result.config.roles)
    text = "\n".join([
        "# bench cache",
        "",
        f"Command: `agentstack bench cache --roles {','.join(roles)}"
        f"{'' if result.served else ' --no-served'}`",
        "",
        f"Roles: {', '.join(roles)} (the first computes the shared context of "
        f"{result.context_tokens} tokens; each then asks its own question). Served: "
        f"{result.config.rounds} rounds per mode, one fresh engine per mode.",
        "",
        markdown_table(
            ["mode", "bytes/context token (shared cache)", "vs non-shared", "paged bytes/token (1 copy)",
             "prefill tokens (reference)", "KL vs non-shared (reference)", "top-1 agreement (reference)",
             "prefill tokens/round (served)", "TTFT p50 s", "TTFT p99 s", "reader TTFT s",
             "throughput tok/s", "first-token agreement (served)", "first-token KL, top-20 (served)"],
            rows,
        ),
        "",
        "Reference: the readers' next-token distributions over their question against their",
        "own prefill (pure PyTorch, all layers, float32). Served: one-token answers, greedy;",
        "agreement and KL of the readers' first token against non-shared.",
        "",
    ])
    result.report = out / "bench-cache.md"
    result.report.write_text(text)
    (out / "bench-cache.json").write_text(json.dumps(result.summary(), indent=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m agentstack.bench.cache")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="all modes, reference and served")
    run.add_argument("--roles", default="", help="comma-separated; default: the shipped family")
    run.add_argument("--no-served", action="store_true")
    run.add_argument("--rounds", type=int, default=CacheBenchConfig.rounds)
    run.add_argument("--report-dir", type=Path, default=Path("reports"))
    run.add_argument("--json", action="store_true", help="print the JSON summary")
    served = sub.add_parser("served", help="(internal) one engine in one mode")
    served.add_argument("mode")
    served.add_argument("roles")
    served.add_argument("redis_url")
    served.add_argument("out", type=Path)
    served.add_argument("--isolate", action="store_true", help="one cache salt per role: no sharing")
    served.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "served":
        _served_mode(
            args.mode, tuple(args.roles.split(",")), args.redis_url, args.out, isolate=args.isolate, rounds=args.rounds
        )
        return
    roles = tuple(r for r in args.roles.split(",") if r)
    config = CacheBenchConfig(roles=roles, served=not args.no_served, rounds=args.rounds, report_dir=args.report_dir)
    result = run_cache_bench(Settings(), config)
    if args.json or result.report is None:
        print(json.dumps(result.summary()))
    else:
        print(result.report.read_text())


if __name__ == "__main__":
    main()
