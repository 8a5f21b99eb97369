"""`agentstack bench engine` measures every request kind on one engine and reports the
issue's JSON shape (speed itself is read from the command, not asserted here)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_bench_engine_prints_one_json_object_and_writes_report(tmp_path: Path, model_dir: Path) -> None:
    env = {**os.environ, "AGENTSTACK_CACHE_DIR": str(tmp_path / "cache"), "AGENTSTACK_MODEL": str(model_dir),
           "AGENTSTACK_KV_CACHE_SPACE_GIB": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "agentstack.cli", "bench", "engine", "--prompts", "3", "--rounds", "2",
         "--prefill-tokens", "96", "--decode-tokens", "8", "--report-dir", str(tmp_path / "reports"), "--json"],
        capture_output=True, text=True, timeout=900, env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    for workload in ("prefill", "decode"):
        assert set(result[workload]) == {"base_tok_s", "lora_tok_s", "mixed_tok_s", "mixed_stock_tok_s"}
        assert all(v > 0 for v in result[workload].values())
        assert all(len(rounds) == 2 for rounds in result["rounds"][workload].values())
    assert set(result["ratios"]) == {"prefill_mixed_vs_base", "decode_mixed_vs_base",
                                     "prefill_grouped_vs_stock", "decode_grouped_vs_stock"}
    # Paired: the median over rounds of the ratio within each round.
    per_round = [a / b for a, b in zip(result["rounds"]["prefill"]["mixed"], result["rounds"]["prefill"]["mixed_stock"],
                                       strict=True)]
    assert result["ratios"]["prefill_grouped_vs_stock"] == pytest.approx(statistics.median(per_round), rel=0.01)
    assert (tmp_path / "reports" / "bench-engine.md").read_text().startswith("# bench engine")
    assert (tmp_path / "reports" / "bench-engine.png").read_bytes()[:4] == b"\x89PNG"
