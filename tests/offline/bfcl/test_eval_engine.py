"""A small BFCL evaluation through the real engine and bfcl-eval's checker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentstack.redis_server import EmbeddedRedis
from tests.conftest import server_env

pytestmark = pytest.mark.slow


def test_eval_bfcl_cli_scores_trained_and_untrained_categories(
    tmp_path: Path, model_dir: Path, redis_server: EmbeddedRedis
) -> None:
    env = {**os.environ, **server_env(model_dir, redis_server.url, tmp_path, tmp_path),
           "AGENTSTACK_REDIS_PREFIX": "eval-test"}
    command = [sys.executable, "-m", "agentstack.cli", "eval", "bfcl",
               "--category", "simple_python", "--category", "irrelevance",
               "--mode", "base", "--mode", "roles", "--limit", "3",
               "--report-dir", str(tmp_path / "reports"), "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["category"], r["mode"]) for r in results] == [
        ("simple_python", "base"), ("simple_python", "roles"), ("irrelevance", "base"), ("irrelevance", "roles"),
    ]
    for r in results:
        assert set(r) == {"category", "mode", "listing", "n", "correct", "accuracy", "by_position",
                          "position_spread", "misses"}
        if r["category"] == "simple_python":  # every miss of a calling entry gets its kind
            assert sum(r["misses"].values()) == r["n"] - r["correct"]
        else:
            assert r["misses"] == {}
        assert r["listing"] == "as given"
        assert r["n"] == 3 and 0 <= r["correct"] <= 3
        assert r["accuracy"] == pytest.approx(r["correct"] / 3, abs=1e-4)
    by = {(r["category"], r["mode"]): r for r in results}
    assert by[("simple_python", "roles")]["correct"] >= 2, "the trained roles should solve simple calls"
    report = (tmp_path / "reports" / "eval-bfcl.md").read_text()
    assert "simple_python" in report and (tmp_path / "reports" / "eval-bfcl.png").stat().st_size > 0


def test_eval_bfcl_shuffles_and_pads_listings_and_scores_by_position(
    tmp_path: Path, model_dir: Path, redis_server: EmbeddedRedis
) -> None:
    env = {**os.environ, **server_env(model_dir, redis_server.url, tmp_path, tmp_path),
           "AGENTSTACK_REDIS_PREFIX": "eval-listing-test"}
    command = [sys.executable, "-m", "agentstack.cli", "eval", "bfcl", "--category", "multiple",
               "--mode", "roles", "--limit", "4", "--shuffle", "5", "--toolbox", "400",
               "--report-dir", str(tmp_path / "reports"), "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    [result] = [json.loads(line) for line in done.stdout.splitlines()]
    assert result["listing"] == "shuffled (seed 5), toolbox 400 tokens" and result["n"] == 4
    assert sum(n for n, _ in result["by_position"].values()) == 4
    assert sum(c for _, c in result["by_position"].values()) == result["correct"]
    assert max(int(p) for p in result["by_position"]) >= 2, "distractors should push answers down the list"


def test_eval_bfcl_refuses_an_unknown_category() -> None:
    done = subprocess.run([sys.executable, "-m", "agentstack.cli", "eval", "bfcl", "--category", "nonsense"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "simple_python" in done.stdout + done.stderr
