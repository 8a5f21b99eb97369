"""`agentstack bench serve` runs both sides in one run and reports them (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_bench_serve_prints_one_json_object_and_writes_report(tmp_path: Path, model_dir: Path) -> None:
    env = {**os.environ, "AGENTSTACK_CACHE_DIR": str(tmp_path / "cache"), "AGENTSTACK_MODEL": str(model_dir),
           "AGENTSTACK_KV_CACHE_SPACE_GIB": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "agentstack.cli", "bench", "serve", "--requests", "8", "--rounds", "2",
         "--concurrency", "4", "--max-tokens", "8", "--report-dir", str(tmp_path / "reports"), "--json"],
        capture_output=True, text=True, timeout=900, env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)  # stdout holds the JSON object and nothing else
    for side in ("http", "engine"):
        assert result[side]["requests"] == 8
        assert result[side]["output_tokens"] == 8 * 8, "ignore_eos makes both sides do the same work"
        assert result[side]["throughput_tok_s"] > 0
        assert 0 < result[side]["ttft_p50_s"] <= result[side]["ttft_p99_s"]
    assert {"selector", "arguments", "single"} <= set(result["roles"])
    assert result["throughput_ratio_http_over_engine"] > 0
    assert (tmp_path / "reports" / "bench-serve.md").read_text().startswith("# bench serve")
    assert (tmp_path / "reports" / "bench-serve.png").read_bytes()[:4] == b"\x89PNG"
