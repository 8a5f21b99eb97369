"""`agentstack bench engine`: what role adapters cost on the engine, base model alongside.

One engine, one process, the service's engine settings. Two workloads, each under four
request kinds, alternated over rounds so that warm-up and drift hit every kind alike:

- prefill-heavy: N prompts of 1,000 tokens, 1 output token (prefill tokens/s);
- decode-heavy: N prompts of 32 tokens, 128 output tokens with ``ignore_eos`` (output tokens/s);

under: the base model; one role adapter; three roles mixed in one batch; and that mix
again with vLLM's own LoRA ops (the grouped ops switched off in the worker, same engine).
Prompts are fresh random token ids each time, so no kind reads another's prefix cache.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import Progress
from rich.table import Table

from agentstack.config import PACKAGE_DATA, Settings
from agentstack.engine import Adapter, Engine
from agentstack.offline.bench.report import grouped_bar_chart, markdown_table

KINDS = ("base", "lora", "mixed", "mixed_stock")
KIND_TITLES = {
    "base": "base model",
    "lora": "one role",
    "mixed": "three roles mixed",
    "mixed_stock": "three roles mixed, vLLM's ops",
}


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    prompt_tokens: int
    output_tokens: int

    @property
    def counts_prompt(self) -> bool:
        """Prefill-heavy throughput counts prompt tokens; decode-heavy counts output tokens."""
        return self.output_tokens == 1


@dataclass(frozen=True, slots=True)
class EngineBenchConfig:
    prompts: int = 8
    prefill_tokens: int = 1000
    decode_prompt_tokens: int = 32
    decode_tokens: int = 128
    rounds: int = 5
    roles: tuple[str, ...] = ("selector", "arguments", "single")
    report_dir: Path = Path("reports")
    seed: int = 0
    kinds: tuple[str, ...] = KINDS
    """A subset runs faster (settings comparisons); ratios without their kinds are null."""

    @property
    def workloads(self) -> tuple[Workload, Workload]:
        return (Workload("prefill", self.prefill_tokens, 1),
                Workload("decode", self.decode_prompt_tokens, self.decode_tokens))


@dataclass(slots=True)
class Measured:
    tokens: int = 0
    wall_s: float = 0.0

    @property
    def tok_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0


@dataclass(slots=True)
class Rounds:
    """One request kind's batches, a throughput per round. The throughput reported is the
    median round: a shared 2-core machine has slow outlier rounds that a sum would carry."""

    measured: list[Measured] = field(default_factory=list)

    @property
    def tok_s(self) -> float:
        return statistics.median(m.tok_s for m in self.measured) if self.measured else 0.0

    @property
    def per_round(self) -> list[float]:
        return [round(m.tok_s, 1) for m in self.measured]


@dataclass(slots=True)
class EngineBenchResult:
    config: EngineBenchConfig
    settings: dict[str, Any]
    measured: dict[str, dict[str, Rounds]] = field(default_factory=dict)
    report: Path | None = None
    plot: Path | None = None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            w: {f"{k}_tok_s": round(kinds[k].tok_s, 1) if k in kinds else None for k in KINDS}
            for w, kinds in self.measured.items()
        }
        pairs = (("mixed_vs_base", "mixed", "base"), ("grouped_vs_stock", "mixed", "mixed_stock"))
        out["ratios"] = {
            f"{workload}_{name}": _paired_ratio(self.measured.get(workload, {}), kind, reference)
            for workload in ("prefill", "decode")
            for name, kind, reference in pairs
        }
        out["rounds"] = {w: {k: r.per_round for k, r in kinds.items()} for w, kinds in self.measured.items()}
        out["config"] = {"prompts": self.config.prompts, "prefill_tokens": self.config.prefill_tokens,
                         "decode_prompt_tokens": self.config.decode_prompt_tokens,
                         "decode_tokens": self.config.decode_tokens, "rounds": self.config.rounds,
                         "roles": list(self.config.roles), "engine": self.settings}
        out["report"] = str(self.report) if self.report else None
        out["plot"] = str(self.plot) if self.plot else None
        return out

    def table(self) -> Table:
        s = self.summary()
        table = Table("requests", "prefill tok/s", "decode tok/s",
                      title=f"bench engine: {self.config.prompts} prompts per batch, {self.config.rounds} rounds")
        for kind in self.config.kinds:
            table.add_row(KIND_TITLES[kind], f"{s['prefill'][f'{kind}_tok_s']:.1f}", f"{s['decode'][f'{kind}_tok_s']:.1f}")
        r = s["ratios"]
        table.caption = (
            f"paired ratios, mixed/base: prefill {r['prefill_mixed_vs_base']}, "
            f"decode {r['decode_mixed_vs_base']}; grouped/stock: prefill "
            f"{r['prefill_grouped_vs_stock']}, decode {r['decode_grouped_vs_stock']}")
        return table


def _paired_ratio(kinds: dict[str, Rounds], kind: str, reference: str) -> float | None:
    """The median over rounds of ``kind``'s throughput over ``reference``'s in the same round.

    A round runs every kind back to back, so a ratio within a round cancels the drift of
    this shared machine's speed between rounds (±30 %), which a ratio of two medians from
    different rounds would carry."""
    if kind not in kinds or reference not in kinds:
        return None
    pairs = [a.tok_s / b.tok_s for a, b in zip(kinds[kind].measured, kinds[reference].measured, strict=True)
             if a.tok_s and b.tok_s]
    return round(statistics.median(pairs), 3) if pairs else None


class EngineBench:
    """Runs the workloads on one started engine with the roles' adapters loaded."""

    def __init__(self, engine: Engine, adapters: list[Adapter], config: EngineBenchConfig) -> None:
        self.engine = engine
        self.adapters = adapters
        self.config = config
        self._rng = random.Random(config.seed)
        vocab = len(engine.tokenizer)
        # Ordinary tokens only: skip the special ids at the start of the vocabulary.
        self._token_range = (min(1000, vocab // 2), vocab - 1)

    def _prompt(self, length: int) -> list[int]:
        return [self._rng.randint(*self._token_range) for _ in range(length)]

    def _adapter_for(self, kind: str, index: int) -> Adapter | None:
        if kind == "base":
            return None
        if kind == "lora":
            return self.adapters[0]
        return self.adapters[index % len(self.adapters)]

    async def run_batch(self, workload: Workload, kind: str) -> Measured:
        from vllm import SamplingParams

        await self.engine.llm.collective_rpc("grouped_lora", args=(kind != "mixed_stock",))
        params = SamplingParams(temperature=0, max_tokens=workload.output_tokens, ignore_eos=True)
        prompts = [self._prompt(workload.prompt_tokens) for _ in range(self.config.prompts)]

        async def one(index: int) -> int:
            final = None
            async for output in self.engine.generate(prompts[index], params, request_id=f"bench-{uuid.uuid4().hex}",
                                                     adapter=self._adapter_for(kind, index)):
                final = output
            assert final is not None
            return len(final.prompt_token_ids or ()) if workload.counts_prompt else len(final.outputs[0].token_ids)

        started = time.perf_counter()
        counts = await asyncio.gather(*(one(i) for i in range(self.config.prompts)))
        return Measured(tokens=sum(counts), wall_s=time.perf_counter() - started)


async def _bench(settings: Settings, model_dir: Path, config: EngineBenchConfig, quiet: bool) -> EngineBenchResult:
    engine = Engine(settings, model_dir)
    await asyncio.to_thread(engine.start)
    try:
        adapters = []
        for role in config.roles:
            adapter = engine.new_adapter(role, PACKAGE_DATA / "adapters" / role)
            await engine.load_adapter(adapter)
            adapters.append(adapter)
        bench = EngineBench(engine, adapters, config)
        warm = EngineBenchConfig(prompts=2, prefill_tokens=64, decode_prompt_tokens=8, decode_tokens=4)
        for workload in warm.workloads:
            for kind in config.kinds:
                await bench.run_batch(workload, kind)
        result = EngineBenchResult(config=config, settings=_engine_settings(settings))
        result.measured = {w.name: {k: Rounds() for k in config.kinds} for w in config.workloads}
        with Progress(disable=quiet, transient=True) as progress:
            task = progress.add_task("bench engine", total=config.rounds * 2 * len(config.kinds))
            for round_index in range(config.rounds):
                # Rotate the order each round: no kind always runs first or last.
                shift = round_index % len(config.kinds)
                order = config.kinds[shift:] + config.kinds[:shift]
                for workload in config.workloads:
                    for kind in order:
                        progress.update(task, description=f"round {round_index + 1}: {workload.name}, {kind}")
                        result.measured[workload.name][kind].measured.append(await bench.run_batch(workload, kind))
                        progress.advance(task)
        await engine.llm.collective_rpc("grouped_lora", args=(settings.grouped_lora,))
        return result
    finally:
        engine.shutdown()


def _engine_settings(settings: Settings) -> dict[str, Any]:
    return {"dtype": settings.dtype, "enforce_eager": settings.enforce_eager,
            "max_num_batched_tokens": settings.max_num_batched_tokens, "max_loras": settings.max_loras,
            "max_lora_rank": settings.max_lora_rank, "cache_mode": settings.cache.mode.value}


def run_engine_bench(settings: Settings, model_dir: Path, config: EngineBenchConfig, *,
                     quiet: bool = False) -> EngineBenchResult:
    result = asyncio.run(_bench(settings, model_dir, config, quiet))
    write_report(result)
    return result


def write_report(result: EngineBenchResult) -> None:
    s = result.summary()
    c = result.config
    out = c.report_dir
    out.mkdir(parents=True, exist_ok=True)
    result.plot = grouped_bar_chart(
        out / "bench-engine.png", "bench engine: throughput by request kind (tok/s)",
        {w: {KIND_TITLES[k]: s[w][f"{k}_tok_s"] for k in c.kinds} for w in ("prefill", "decode")},
        ylabel="tokens/s",
    )
    rows = [[KIND_TITLES[k], s["prefill"][f"{k}_tok_s"], s["decode"][f"{k}_tok_s"]] for k in c.kinds]
    r = s["ratios"]
    text = "\n".join([
        "# bench engine",
        "",
        f"Command: `agentstack bench engine --prompts {c.prompts} --rounds {c.rounds}"
        + (f" --kinds {','.join(c.kinds)}" if c.kinds != KINDS else "") + "`",
        "",
        f"One engine ({', '.join(f'{k}={v}' for k, v in s['config']['engine'].items())}); roles "
        f"{', '.join(c.roles)}. Prefill-heavy: {c.prompts} x {c.prefill_tokens}-token prompts, 1 output token. "
        f"Decode-heavy: {c.prompts} x {c.decode_prompt_tokens}-token prompts, {c.decode_tokens} output tokens.",
        "",
        markdown_table(["requests", "prefill tok/s", "decode tok/s"], rows),
        "",
        "Median round of each kind; every round, in order: "
        + "; ".join(f"{w} {KIND_TITLES[k]} {v}" for w, kinds in s["rounds"].items() for k, v in kinds.items()) + ".",
        "",
        "Ratios are the median over rounds of the ratio within each round (paired: a round runs "
        "every kind back to back, so the machine's drift between rounds cancels).",
        "",
        f"Three roles mixed vs base model: prefill **{r['prefill_mixed_vs_base']}**, decode "
        f"**{r['decode_mixed_vs_base']}** (target >= 0.8).",
        f"Grouped ops vs vLLM's own on the mix: prefill **{r['prefill_grouped_vs_stock']}x**, decode "
        f"**{r['decode_grouped_vs_stock']}x**.",
        "",
        "![bench engine](bench-engine.png)",
        "",
    ])
    result.report = out / "bench-engine.md"
    result.report.write_text(text)
