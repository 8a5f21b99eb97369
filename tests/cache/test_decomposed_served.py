"""The served decomposed mode on the real vLLM CPU engine.

Without sharing (each role under its own cache salt), the decomposed-attention model must
answer as ordinary vLLM LoRA serving does, to bf16 tolerance: same greedy token, same
top next-token log-probabilities. With sharing, a reader loads the writer's
role-independent blocks and skips their prefill.

Each engine runs in its own process through `agentstack.bench.cache served`, the path
`agentstack bench cache` measures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cache.conftest import shipped_family

pytestmark = pytest.mark.slow

LOGPROB_TOLERANCE = 0.15
"""Largest |Δ log p| allowed on the top tokens: both engines run bf16, and the decomposed
model sums V_base and the low-rank term after attention instead of before it."""


def serve(mode: str, redis_url: str, out: Path, *extra: str) -> dict[str, Any]:
    roles = ",".join(p.name for p in shipped_family()[:2])
    subprocess.run(
        [sys.executable, "-m", "agentstack.bench.cache", "served", mode, redis_url, str(out), "--probe", roles, *extra],
        check=True, timeout=600,
    )
    return json.loads(out.read_text())


def test_decomposed_without_sharing_matches_lora_serving(tmp_path: Path, redis_url: str) -> None:
    ordinary = serve("non-shared", redis_url, tmp_path / "ordinary.json")["rows"]
    decomposed = serve("decomposed", redis_url, tmp_path / "decomposed.json", "--isolate")["rows"]
    for want, got in zip(ordinary, decomposed, strict=True):
        assert got["cached_tokens"] == 0, "isolated roles must compute everything themselves"
        assert got["first_token"] == want["first_token"], want["role"]
        top = sorted(want["logprobs"], key=want["logprobs"].__getitem__, reverse=True)[:5]
        diffs = [abs(want["logprobs"][t] - got["logprobs"][t]) for t in top]
        assert max(diffs) < LOGPROB_TOLERANCE, (want["role"], diffs)


def test_decomposed_reader_reuses_the_writers_prefix(tmp_path: Path, redis_url: str) -> None:
    served = serve("decomposed", redis_url, tmp_path / "shared.json")
    writer, reader = served["rows"]
    assert writer["cached_tokens"] == 0
    assert reader["cached_tokens"] >= 128, "the reader should load the writer's context blocks"
    assert reader["prompt_tokens"] - reader["cached_tokens"] < writer["prompt_tokens"] - 100
    assert served["cache_stats"]["worker"]["cross_role_reuses"]["decomposed"] == 1
