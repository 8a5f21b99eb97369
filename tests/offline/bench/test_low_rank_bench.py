"""`bench low-rank`: the per-role B compiles as one graph and agrees with eager, and the
report carries both timings."""

from __future__ import annotations

from pathlib import Path

from agentstack.offline.bench.low_rank import LowRankBenchConfig, run_low_rank_bench, write_report


def test_compiled_per_role_b_agrees_with_eager_and_is_reported(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    # The packaged model's head layout: 9 query heads over 3 KV heads of 64.
    (model_dir / "config.json").write_text(
        '{"num_attention_heads": 9, "num_key_value_heads": 3, "hidden_size": 576}'
    )
    result = run_low_rank_bench(model_dir, 16, LowRankBenchConfig(tokens=(1, 40), slots=3, repeats=2))
    assert [r.tokens for r in result.rows] == [1, 40]
    assert (result.heads, result.kv_heads, result.head_dim) == (9, 3, 64)
    for row in result.rows:
        assert row.max_abs_diff == 0.0, "the compiled graph computes what eager does"
        assert row.eager_ms > 0 and row.compiled_ms > 0
    report = write_report(result, tmp_path / "reports")
    assert "| 40 |" in report.read_text()
    assert (tmp_path / "reports" / "bench_low_rank.png").stat().st_size > 0
