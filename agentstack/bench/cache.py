"""`agentstack bench cache`: the three prefix-cache modes side by side.

Several roles read one shared context and then ask their own question. The first role
(the writer) computes the context; the others (readers) may reuse it.

- **Reference** (pure PyTorch, every mode, all layers): the reader's next-token
  distributions over its question after (a) its own prefill of the context (non-shared),
  (b) the writer's K and V (full-shared), (c) the writer's K, V_base and x·A with the
  reader's own B (decomposed). Reported: KL(non-shared ‖ mode) and top-1 agreement with
  non-shared, averaged over question tokens and readers.
- **Served** (vLLM CPU): the same prompts through the engine with `cache.mode`
  non-shared (vLLM alone) and full-shared (the cache's KV connector), one fresh engine
  per mode. Reported: prompt tokens the engine prefilled, time to first token of the
  readers, and the readers' first token agreeing with non-shared. Decomposed is not
  served yet, so it has no served row.
- **Bytes** per context token held once all roles have read it (`cache.layout`).

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
    report_dir: Path = Path("reports")


@dataclass(slots=True)
class ModeRow:
    mode: str
    bytes_per_context_token: int
    ratio_to_non_shared: float
    reference_prefill_tokens: int
    reference_kl: float
    reference_top1: float
    served_prefill_tokens: int | None = None
    served_reader_ttft_s: float | None = None
    served_first_token_agreement: float | None = None


@dataclass(slots=True)
class CacheBenchResult:
    config: CacheBenchConfig
    context_tokens: int
    question_tokens: dict[str, int]
    rows: list[ModeRow] = field(default_factory=list)
    served: dict[str, Any] = field(default_factory=dict)
    report: Path | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "roles": list(self.config.roles),
            "context_tokens": self.context_tokens,
            "question_tokens": self.question_tokens,
            "modes": [asdict(row) for row in self.rows],
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


def _served_mode(mode: str, roles: tuple[str, ...], redis_url: str | None, out: Path) -> None:
    """One engine with `cache.mode = mode`: warm the adapters, then the measured prompts."""
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
    sampling = SamplingParams(max_tokens=1, temperature=0.0)

    async def short_request(request_id: str, adapter: Any) -> None:
        """Too short for a full block: it never touches the cache."""
        async for _ in engine.generate([1, 2, 3], sampling, request_id=request_id, adapter=adapter):
            pass

    async def run() -> list[dict[str, Any]]:
        adapters = {role: engine.new_adapter(role, _adapter(role)) for role in roles}
        for adapter in adapters.values():
            await engine.load_adapter(adapter)
            await short_request(f"warm-{adapter.name}", adapter)
        rows = []
        for role in roles:
            ids = context + questions[role]
            started = time.perf_counter()
            final = None
            async for output in engine.generate(ids, sampling, request_id=f"bench-{role}", adapter=adapters[role]):
                final = output
            assert final is not None
            rows.append({
                "role": role,
                "prompt_tokens": len(ids),
                "cached_tokens": final.num_cached_tokens or 0,
                "ttft_s": time.perf_counter() - started,
                "first_token": final.outputs[0].token_ids[0],
            })
        # The connector reports its counters at most once per interval: one more step
        # after it has passed carries the final figures.
        await asyncio.sleep(STATS_INTERVAL_S + 0.5)
        await short_request("flush-stats", None)
        return rows

    try:
        rows = asyncio.run(run())
    finally:
        engine.shutdown()
    out.write_text(json.dumps({"mode": mode, "rows": rows, "cache_stats": cache_stats}))


def _run_served(roles: tuple[str, ...]) -> dict[str, Any]:
    from agentstack.redis_server import EmbeddedRedis

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        for mode in ("non-shared", "full-shared"):
            out = Path(tmp) / f"{mode}.json"
            subprocess.run(
                [sys.executable, "-m", "agentstack.bench.cache", "served", mode, ",".join(roles), server.url, str(out)],
                check=True,
            )
            results[mode] = json.loads(out.read_text())["rows"]
    return results


def run_cache_bench(settings: Settings, config: CacheBenchConfig) -> CacheBenchResult:
    from transformers import AutoTokenizer

    from agentstack.model_prep import prepare
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
    served = _run_served(config.roles) if config.served else {}
    result.served = served
    shape = ModelShape.from_model_dir(model_dir)
    rank = json.loads((_adapter(config.roles[0]) / "adapter_config.json").read_text())["r"]
    k = len(config.roles)
    question_total = sum(len(q) for q in questions.values())
    for mode in CacheMode:
        layout = BlockLayout(shape, mode, rank=rank if mode.stores_low_rank else 0)
        prefill = k * len(context) + question_total if mode.keyed_by_adapter else len(context) + question_total
        row = ModeRow(
            mode=mode.value,
            bytes_per_context_token=layout.bytes_per_context_token(k),
            ratio_to_non_shared=round(layout.ratio_to_non_shared(k), 4),
            reference_prefill_tokens=prefill,
            reference_kl=reference[mode.value]["kl"],
            reference_top1=reference[mode.value]["top1"],
        )
        if mode.value in served:
            rows = served[mode.value]
            baseline = {r["role"]: r["first_token"] for r in served["non-shared"]}
            readers = rows[1:]
            row.served_prefill_tokens = sum(r["prompt_tokens"] - r["cached_tokens"] for r in rows)
            row.served_reader_ttft_s = sum(r["ttft_s"] for r in readers) / len(readers)
            row.served_first_token_agreement = sum(r["first_token"] == baseline[r["role"]] for r in readers) / len(readers)
        result.rows.append(row)
    write_report(result)
    return result


def write_report(result: CacheBenchResult) -> None:
    out = result.config.report_dir
    out.mkdir(parents=True, exist_ok=True)

    def cell(value: float | int | None, fmt: str) -> str:
        return "not served" if value is None else format(value, fmt)

    rows = [
        [
            r.mode, r.bytes_per_context_token, f"{r.ratio_to_non_shared:.3f}", r.reference_prefill_tokens,
            f"{r.reference_kl:.2e}", f"{r.reference_top1:.3f}", cell(r.served_prefill_tokens, "d"),
            cell(r.served_reader_ttft_s, ".2f"), cell(r.served_first_token_agreement, ".2f"),
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
        f"{result.context_tokens} tokens; each then asks its own question).",
        "",
        markdown_table(
            ["mode", "bytes/context token", "vs non-shared", "prefill tokens (reference)",
             "KL vs non-shared", "top-1 agreement", "prefill tokens (served)",
             "reader TTFT s (served)", "first-token agreement (served)"],
            rows,
        ),
        "",
        "KL and top-1 agreement: the readers' next-token distributions over their question,",
        "against their own prefill (pure-PyTorch reference, all layers, float32).",
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
    run.add_argument("--report-dir", type=Path, default=Path("reports"))
    served = sub.add_parser("served", help="(internal) one engine in one mode")
    served.add_argument("mode")
    served.add_argument("roles")
    served.add_argument("redis_url")
    served.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "served":
        _served_mode(args.mode, tuple(args.roles.split(",")), args.redis_url, args.out)
        return
    roles = tuple(r for r in args.roles.split(",") if r)
    config = CacheBenchConfig(roles=roles, served=not args.no_served, report_dir=args.report_dir)
    result = run_cache_bench(Settings(), config)
    print(result.report.read_text() if result.report else json.dumps(result.summary()))


if __name__ == "__main__":
    main()
