"""`agentstack bench cache`: its BFCL tool-agent workload and the figures it reports.

The workload tests read only the tokenizer; the served test runs the real engine in the
decomposed mode on one prompt, as the bench does for each of its prompts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from agentstack.engine import chat_prompt_ids
from agentstack.offline.bench.cache import (
    SERVED_COMMAND,
    SERVED_MODES,
    ModeRow,
    _run_served,
    _served_figures,
    _served_key,
    top_kl,
)
from agentstack.offline.bfcl.dataset import TRAIN_CATEGORIES, examples
from agentstack.offline.bench.cache_workload import (
    MAX_CONTEXT_TOKENS,
    MIN_CONTEXT_TOKENS,
    dev_prompts,
    reference_case,
    toolbox_prompts,
)
from agentstack.redis_server import EmbeddedRedis
from agentstack.chat.tool_prompts import function_names, selector_messages


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(model_dir)


def test_each_prompt_is_a_1_to_2k_token_toolbox_holding_its_own_functions(tokenizer: Any) -> None:
    prompts = toolbox_prompts(4, tokenizer)
    assert len({p.example.id for p in prompts}) == 4
    for prompt in prompts:
        names = function_names(prompt.tools)
        assert set(function_names(prompt.example.functions)) <= set(names)
        assert len(names) == len(set(names)), "a function listed twice"
        tokens = len(chat_prompt_ids(tokenizer, selector_messages(prompt.example.messages, prompt.tools)))
        assert MIN_CONTEXT_TOKENS <= tokens <= MAX_CONTEXT_TOKENS


def test_the_workload_takes_the_trained_categories_in_turn() -> None:
    """Enough prompts for hundreds of accuracy checks per mode, and any first few mix the
    categories, `multiple` first."""
    pool = dev_prompts()
    assert len(pool) == len({e.id for e in pool}) == sum(len(examples(c, "dev")) for c in TRAIN_CATEGORIES)
    assert pool[0].category == "multiple" and {e.category for e in pool[:4]} == set(TRAIN_CATEGORIES)


def test_own_functions_are_not_always_listed_first(tokenizer: Any) -> None:
    firsts = [function_names(p.tools)[0] in function_names(p.example.functions) for p in toolbox_prompts(8, tokenizer)]
    assert not all(firsts)


def test_reference_readers_continue_the_writers_context(tokenizer: Any) -> None:
    prompt = toolbox_prompts(1, tokenizer)[0]
    case = reference_case(prompt, tokenizer)
    writer = chat_prompt_ids(tokenizer, selector_messages(prompt.example.messages, prompt.tools))
    assert case.writer == "selector" and writer[: len(case.context)] == case.context
    assert len(case.context) >= MIN_CONTEXT_TOKENS - 32
    assert set(case.tails) == {"arguments", "single"}
    answer = tokenizer.decode(case.tails["single"])
    assert prompt.example.reference_calls()[0]["name"] in answer


def _record(round_: int, role: str, key: str, cached: int, first: int) -> dict[str, Any]:
    return {"round": round_, "role": role, "prompt_key": key, "prompt_tokens": 1000, "cached_tokens": cached,
            "generated_tokens": 10, "ttft_s": 1.0 if cached else 10.0, "first_token": first,
            "logprobs": {str(first): -0.1, "7": -2.5}}


def test_served_figures_pair_readers_only_on_identical_prompts() -> None:
    """A reader whose prompt differs from non-shared's (another function was selected) is
    left out of agreement, not counted as a disagreement."""
    baseline = [_record(0, "selector", "s", 0, 1), _record(0, "arguments", "a", 0, 2), _record(0, "single", "s", 0, 3)]
    shared = [_record(0, "selector", "s", 0, 1), _record(0, "arguments", "other", 960, 9),
              _record(0, "single", "s", 992, 3)]
    run = {"rows": shared, "workload_s": 20.0, "cache_stats": {}, "stored_blocks": 0, "block_size": 32,
           "outcomes": [{"agent_correct": False, "single_correct": True}]}
    served = {"non-shared": {**run, "rows": baseline}, "full-shared": run}
    row = ModeRow("full-shared", 23040, 23040, 0.333, 0.1, 0.9)
    _served_figures(row, served)
    assert row.served_prefill_tokens == 3000 - 960 - 992
    assert row.served_first_token_agreement == 1.0 and row.served_kl_top == 0.0
    assert row.served_agent_accuracy == 0.0 and row.served_single_accuracy == 1.0 and row.served_accuracy == 0.5
    assert row.bytes_per_context_token == 23040, "no memory-tier figure: the layout's stays"
    assert row.reader_ttft_vs_same_role_hit is None, "no reader TTFT probe in this run"


def test_kl_reads_tokens_a_grammar_forbids_as_no_probability() -> None:
    """Guided decoding lists forbidden tokens at -inf; the KL stays finite and is 0 on
    identical distributions, positive on different ones."""
    inf = float("inf")
    same = {"a": -0.1, "b": -2.5, "c": -inf}
    assert top_kl(same, dict(same)) == pytest.approx(0.0, abs=1e-12)
    assert 0 < top_kl(same, {"a": -2.5, "b": -0.1, "c": -inf}) < inf
    assert top_kl({"a": -0.01, "b": -5.0}, {"a": -0.01, "b": -inf, "z": -7.0}) > 0


def test_a_rerun_reuses_the_modes_already_served_with_the_same_adapters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that failed after serving keeps each mode's figures; the rerun serves nothing
    again and starts no Redis. Another workload has another key, so its figures are not
    taken for this one."""

    def no_redis(*_: object) -> None:
        raise AssertionError("a rerun with every mode kept started Redis")

    monkeypatch.setattr("agentstack.redis_server.EmbeddedRedis", no_redis)
    for mode in SERVED_MODES:
        (tmp_path / f"{mode}.json").write_text(json.dumps({"key": _served_key(3, 0), "result": {"mode": mode}}))
    assert _run_served(3, 0, tmp_path) == {mode: {"mode": mode} for mode in SERVED_MODES}
    assert _served_key(4, 0) != _served_key(3, 0)


def test_reader_ttft_ratio_is_of_medians() -> None:
    """One slow toolbox does not move the cross-role / same-role figure."""
    rows = [_record(0, "selector", "s", 0, 1), _record(0, "arguments", "a", 960, 2)]
    probe = [{"cold_s": 2.0, "cross_role_s": c, "same_role_s": s} for c, s in ((0.2, 0.1), (0.3, 0.2), (9.0, 0.2))]
    run = {"rows": rows, "workload_s": 5.0, "cache_stats": {}, "stored_blocks": 0, "block_size": 32,
           "outcomes": [{"agent_correct": True, "single_correct": True}], "reader_ttfts": probe}
    row = ModeRow("decomposed", 23040, 23040, 0.333, 0.1, 0.9)
    _served_figures(row, {"non-shared": run, "decomposed": run})
    assert (row.reader_ttft_cross_role_s, row.reader_ttft_same_role_s) == (0.3, 0.2)
    assert row.reader_ttft_vs_same_role_hit == 1.5


def test_concurrent_prefill_is_compared_with_non_shared() -> None:
    rows = [_record(0, "selector", "s", 0, 1), _record(0, "arguments", "a", 960, 2)]
    run = {"rows": rows, "workload_s": 5.0, "cache_stats": {}, "stored_blocks": 0, "block_size": 32,
           "outcomes": [{"agent_correct": True, "single_correct": True}]}
    alone = {**run, "concurrent": [{"prompt_tokens": 3000, "prefill_tokens": 3000}] * 2}
    shared = {**run, "concurrent": [{"prompt_tokens": 3000, "prefill_tokens": 1100},
                                    {"prompt_tokens": 3000, "prefill_tokens": 1000}]}
    row = ModeRow("decomposed", 23040, 23040, 0.333, 0.1, 0.9)
    _served_figures(row, {"non-shared": alone, "decomposed": shared})
    assert row.concurrent_prefill_tokens == 1050
    assert row.concurrent_prefill_vs_non_shared == 0.35


@pytest.mark.slow
def test_decomposed_readers_reuse_the_selectors_toolbox(tmp_path: Path, redis_server: EmbeddedRedis) -> None:
    out = tmp_path / "decomposed.json"
    subprocess.run(
        [*SERVED_COMMAND, "decomposed", redis_server.url, str(out), "--prompts", "1"],
        check=True, timeout=900,
    )
    served = json.loads(out.read_text())
    writer, *readers = served["rows"]
    assert writer["role"] == "selector" and writer["cached_tokens"] == 0
    assert {r["role"] for r in readers} >= {"single"}
    for reader in readers:
        assert reader["cached_tokens"] >= MIN_CONTEXT_TOKENS - 32, reader["role"]
    assert [o["id"] for o in served["outcomes"]] == [dev_prompts()[0].id]
    writer_blocks = writer["prompt_tokens"] // served["engine_block_size"]
    assert served["engine_blocks"] < 2 * writer_blocks, "the readers read the selector's engine blocks in place"
    [ttft] = served["reader_ttfts"]
    assert ttft["cross_role_s"] < ttft["cold_s"] / 2, "the argument writer read the selector's context"
    [together] = served["concurrent"]
    # Three roles arriving at once prefill the toolbox once (plus each role's own tail).
    assert together["prefill_tokens"] < together["prompt_tokens"] / 3 + 3 * 64
