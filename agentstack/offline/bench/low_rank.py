"""`agentstack bench low-rank`: the decomposed model's per-role B, eager against compiled.

In decomposed mode every attention layer adds, per token, its role's ``s·(P·x·A)·B_jᵀ``
(``cache.decomposed_model.low_rank_values``). It is written with fixed shapes and no
host sync so that a compiled graph can hold it; this bench checks that claim where it
matters (``torch.compile(fullgraph=True)`` succeeds, the results agree) and measures what
compiling buys on this CPU, per step size, at the served model's head layout and the
shared A's rank.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from agentstack.offline.bench.report import grouped_bar_chart, markdown_table
from cache.decomposed_model import low_rank_values


@dataclass(frozen=True, slots=True)
class LowRankBenchConfig:
    tokens: tuple[int, ...] = (1, 8, 64, 512, 2048)
    """Tokens per engine step: decode batches up to a prefill chunk."""
    slots: int = 4
    """Adapter slots the engine holds (the roles in one batch)."""
    repeats: int = 30
    report_dir: Path = Path("reports")


@dataclass(frozen=True, slots=True)
class LowRankRow:
    tokens: int
    eager_ms: float
    compiled_ms: float
    compile_s: float
    max_abs_diff: float

    @property
    def speedup(self) -> float:
        return self.eager_ms / self.compiled_ms


@dataclass(slots=True)
class LowRankBenchResult:
    heads: int
    kv_heads: int
    head_dim: int
    rank: int
    slots: int
    rows: list[LowRankRow] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k != "rows"},
                "rows": [{**asdict(r), "speedup": r.speedup} for r in self.rows]}


def _median_ms(fn: Callable[[], torch.Tensor], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def run_low_rank_bench(model_dir: Path, rank: int, config: LowRankBenchConfig) -> LowRankBenchResult:
    """Eager and compiled ``low_rank_values`` on the same random bf16 inputs, per step size."""
    hf = json.loads((model_dir / "config.json").read_text())
    heads, kv_heads = int(hf["num_attention_heads"]), int(hf["num_key_value_heads"])
    head_dim = int(hf.get("head_dim") or hf["hidden_size"] // heads)
    result = LowRankBenchResult(heads, kv_heads, head_dim, rank, config.slots)
    g = torch.Generator().manual_seed(0)
    # vLLM's stacked B is [slots, 1, kv_heads·d, max_rank] in the model's dtype.
    b_stacked = torch.randn(config.slots, 1, kv_heads * head_dim, rank, generator=g).to(torch.bfloat16)
    for tokens in config.tokens:
        pxa = torch.randn(tokens, heads, rank, generator=g).to(torch.bfloat16)
        slots = torch.randint(-1, config.slots, (tokens,), generator=g)
        torch._dynamo.reset()
        compiled = torch.compile(low_rank_values, fullgraph=True, dynamic=False)
        started = time.perf_counter()
        expected = low_rank_values(pxa, slots, b_stacked, kv_heads, head_dim)
        got = compiled(pxa, slots, b_stacked, kv_heads, head_dim)
        compile_s = time.perf_counter() - started
        result.rows.append(LowRankRow(
            tokens=tokens,
            eager_ms=_median_ms(lambda: low_rank_values(pxa, slots, b_stacked, kv_heads, head_dim), config.repeats),
            compiled_ms=_median_ms(lambda: compiled(pxa, slots, b_stacked, kv_heads, head_dim), config.repeats),
            compile_s=compile_s,
            max_abs_diff=float((expected.float() - got.float()).abs().max()),
        ))
    return result


def write_report(result: LowRankBenchResult, report_dir: Path) -> Path:
    """Markdown table and a bar chart of eager and compiled milliseconds per step size."""
    report_dir.mkdir(parents=True, exist_ok=True)
    plot = grouped_bar_chart(
        report_dir / "bench_low_rank.png",
        f"per-role B (heads {result.heads}/{result.kv_heads}, d {result.head_dim}, r {result.rank}, "
        f"{result.slots} slots)",
        {f"{r.tokens} tokens": {"eager": r.eager_ms, "compiled": r.compiled_ms} for r in result.rows},
        ylabel="ms per layer call (median)",
    )
    table = markdown_table(
        ["tokens", "eager ms", "compiled ms", "eager / compiled", "compile s", "max |Δ|"],
        [[r.tokens, r.eager_ms, r.compiled_ms, r.speedup, r.compile_s, r.max_abs_diff] for r in result.rows],
    )
    path = report_dir / "bench_low_rank.md"
    path.write_text(
        "# Per-role B in decomposed mode: eager against compiled\n\n"
        "`agentstack bench low-rank`: `cache.decomposed_model.low_rank_values` eager and under "
        "`torch.compile(fullgraph=True)` (one graph per step size), same bf16 inputs.\n\n"
        f"{table}\n\n![eager and compiled]({plot.name})\n"
    )
    return path
