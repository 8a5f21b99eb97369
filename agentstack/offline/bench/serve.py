"""`agentstack bench serve`: what the HTTP service costs on top of the vLLM engine.

One engine, one process. The same mixed-role chat requests are sent (a) through the
HTTP service (streamed, via httpx against uvicorn on loopback) and (b) straight to
vLLM's `AsyncLLM.generate` with the same token ids and LoRA request. Rounds alternate
between the two sides so warm-up and drift hit both equally. Every request generates
exactly `max_tokens` tokens (`ignore_eos`), so both sides do the same work.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.progress import Progress
from rich.table import Table

from agentstack.api.schemas import ChatMessage
from agentstack.config import Settings
from agentstack.offline.bench.in_process import service_over_http
from agentstack.offline.bench.report import bar_chart, markdown_table
from agentstack.chat.template import render_messages
from agentstack.service import Service

QUESTIONS = [
    "What is the capital of France?",
    "Give me two tips for better sleep.",
    "What does a plant need to grow?",
    "Name a famous painter and one painting.",
    "Why is the sky blue?",
    "What is 12 times 7?",
    "Describe a cat in one sentence.",
    "What is the largest ocean?",
]


@dataclass(frozen=True, slots=True)
class ServeBenchConfig:
    requests: int = 64
    concurrency: int = 8
    max_tokens: int = 32
    rounds: int = 4
    report_dir: Path = Path("reports")


@dataclass(slots=True)
class SideStats:
    wall_s: float = 0.0
    tokens: int = 0
    ttft_s: list[float] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.ttft_s)
        if not ordered:
            return 0.0
        index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
        return ordered[index]

    def as_dict(self) -> dict[str, float]:
        return {
            "requests": len(self.ttft_s),
            "wall_s": round(self.wall_s, 3),
            "output_tokens": self.tokens,
            "throughput_tok_s": round(self.throughput, 3),
            "ttft_p50_s": round(self.percentile(0.5), 4),
            "ttft_p99_s": round(self.percentile(0.99), 4),
            "ttft_mean_s": round(statistics.fmean(self.ttft_s), 4) if self.ttft_s else 0.0,
        }


@dataclass(slots=True)
class ServeBenchResult:
    config: ServeBenchConfig
    roles: list[str]
    http: SideStats
    engine: SideStats
    report: Path | None = None
    plot: Path | None = None

    def summary(self) -> dict[str, Any]:
        http, engine = self.http.as_dict(), self.engine.as_dict()
        ratio = http["throughput_tok_s"] / engine["throughput_tok_s"] if engine["throughput_tok_s"] else 0.0
        return {
            "requests_per_side": len(self.http.ttft_s),
            "concurrency": self.config.concurrency,
            "max_tokens": self.config.max_tokens,
            "roles": self.roles,
            "http": http,
            "engine": engine,
            "throughput_ratio_http_over_engine": round(ratio, 4),
            "service_overhead": round(1 - ratio, 4),
            "ttft_p50_ratio_http_over_engine": _ratio(http["ttft_p50_s"], engine["ttft_p50_s"]),
            "ttft_p99_ratio_http_over_engine": _ratio(http["ttft_p99_s"], engine["ttft_p99_s"]),
            "target_overhead_max": 0.10,
            "report": str(self.report) if self.report else None,
            "plot": str(self.plot) if self.plot else None,
        }

    def table(self) -> Table:
        s = self.summary()
        table = Table("side", "throughput tok/s", "TTFT p50 s", "TTFT p99 s", "wall s",
                      title=f"bench serve: {s['requests_per_side']} mixed-role requests per side, "
                            f"concurrency {s['concurrency']}")
        for side in ("engine", "http"):
            d = s[side]
            table.add_row(side, f"{d['throughput_tok_s']:.1f}", f"{d['ttft_p50_s']:.3f}",
                          f"{d['ttft_p99_s']:.3f}", f"{d['wall_s']:.1f}")
        table.caption = (f"throughput ratio http/engine {s['throughput_ratio_http_over_engine']:.3f} "
                         f"(overhead {s['service_overhead']:+.1%}, target <= 10%); "
                         f"TTFT p50 ratio {s['ttft_p50_ratio_http_over_engine']:.3f}")
        return table


def _ratio(a: float, b: float) -> float:
    return round(a / b, 4) if b else 0.0


@dataclass(frozen=True, slots=True)
class BenchRequest:
    role: str
    question: str


def _workload(roles: list[str], count: int) -> list[BenchRequest]:
    return [BenchRequest(roles[i % len(roles)], QUESTIONS[i % len(QUESTIONS)]) for i in range(count)]


async def _run_http(base_url: str, work: list[BenchRequest], config: ServeBenchConfig, stats: SideStats) -> None:
    gate = asyncio.Semaphore(config.concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:

        async def one(req: BenchRequest) -> None:
            body = {"model": req.role, "messages": [{"role": "user", "content": req.question}],
                    "max_tokens": config.max_tokens, "temperature": 0, "ignore_eos": True,
                    "stream": True, "stream_options": {"include_usage": True}}
            async with gate:
                started = time.perf_counter()
                first: float | None = None
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    response.raise_for_status()
                    async for line in response.aiter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        chunk = json.loads(line[6:])
                        if first is None and any(c["delta"].get("content") for c in chunk["choices"]):
                            first = time.perf_counter() - started
                        if chunk.get("usage"):
                            stats.tokens += chunk["usage"]["completion_tokens"]
                stats.ttft_s.append(first if first is not None else time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(one(r) for r in work))
        stats.wall_s += time.perf_counter() - started


async def _run_engine(service: Service, work: list[BenchRequest], config: ServeBenchConfig, stats: SideStats) -> None:
    from vllm import SamplingParams

    assert service.engine is not None
    llm = service.engine.llm
    gate = asyncio.Semaphore(config.concurrency)

    async def one(req: BenchRequest) -> None:
        role = service.resolve(req.role)
        turns = render_messages([ChatMessage(role="user", content=req.question)],
                                system_prompt=role.spec.system_prompt, tools=None, think=False)
        prompt_ids = service.engine.chat_prompt(turns)  # type: ignore[union-attr]
        params = SamplingParams(temperature=0, max_tokens=config.max_tokens, ignore_eos=True)
        lora = role.adapter.lora_request() if role.adapter else None
        async with gate:
            started = time.perf_counter()
            first: float | None = None
            final = None
            async for output in llm.generate({"prompt_token_ids": prompt_ids}, params,
                                             f"bench-{uuid.uuid4().hex}", lora_request=lora):
                if first is None and output.outputs[0].token_ids:
                    first = time.perf_counter() - started
                final = output
            assert final is not None
            stats.tokens += len(final.outputs[0].token_ids)
            stats.ttft_s.append(first if first is not None else time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one(r) for r in work))
    stats.wall_s += time.perf_counter() - started


async def _bench(settings: Settings, config: ServeBenchConfig, quiet: bool) -> ServeBenchResult:
    async with service_over_http(settings) as (service, base_url):
        roles = list(service.model_names())
        per_round = max(1, config.requests // config.rounds)
        work = _workload(roles, per_round)
        http, engine = SideStats(), SideStats()
        await _run_engine(service, _workload(roles, min(4, per_round)), config, SideStats())  # warm-up
        with Progress(disable=quiet, transient=True) as progress:
            task = progress.add_task("bench serve", total=2 * config.rounds)
            for round_index in range(config.rounds):
                order = ("engine", "http") if round_index % 2 == 0 else ("http", "engine")
                for side in order:
                    progress.update(task, description=f"round {round_index + 1}: {side}")
                    if side == "http":
                        await _run_http(base_url, work, config, http)
                    else:
                        await _run_engine(service, work, config, engine)
                    progress.advance(task)
    return ServeBenchResult(config=config, roles=roles, http=http, engine=engine)


def run_serve_bench(settings: Settings, config: ServeBenchConfig, *, quiet: bool = False) -> ServeBenchResult:
    result = asyncio.run(_bench(settings, config, quiet))
    write_report(result)
    return result


def write_report(result: ServeBenchResult) -> None:
    s = result.summary()
    out = result.config.report_dir
    out.mkdir(parents=True, exist_ok=True)
    result.plot = bar_chart(out / "bench-serve.png", "HTTP service vs direct engine", {
        "throughput (tok/s)": {"engine": s["engine"]["throughput_tok_s"], "http": s["http"]["throughput_tok_s"]},
        "TTFT p50 (s)": {"engine": s["engine"]["ttft_p50_s"], "http": s["http"]["ttft_p50_s"]},
        "TTFT p99 (s)": {"engine": s["engine"]["ttft_p99_s"], "http": s["http"]["ttft_p99_s"]},
    })
    rows = [[side, s[side]["throughput_tok_s"], s[side]["ttft_p50_s"], s[side]["ttft_p99_s"],
             s[side]["output_tokens"], s[side]["wall_s"]] for side in ("engine", "http")]
    text = "\n".join([
        "# bench serve",
        "",
        f"Command: `agentstack bench serve --requests {result.config.requests} "
        f"--concurrency {s['concurrency']} --max-tokens {s['max_tokens']} --rounds {result.config.rounds}`",
        "",
        f"Roles (round-robin): {', '.join(s['roles'])}.",
        "",
        markdown_table(["side", "throughput tok/s", "TTFT p50 s", "TTFT p99 s", "output tokens", "wall s"], rows),
        "",
        f"Throughput ratio http/engine: **{s['throughput_ratio_http_over_engine']}** "
        f"(service overhead {s['service_overhead']:.1%}; target ≤ 10%).",
        f"TTFT p50 ratio http/engine: {s['ttft_p50_ratio_http_over_engine']}; "
        f"p99 ratio: {s['ttft_p99_ratio_http_over_engine']}.",
        "",
        "![bench serve](bench-serve.png)",
        "",
    ])
    result.report = out / "bench-serve.md"
    result.report.write_text(text)
