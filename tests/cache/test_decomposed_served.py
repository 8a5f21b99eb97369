"""The served decomposed mode on the real vLLM CPU engine.

Without sharing (each role under its own cache salt), the decomposed-attention model must
answer as ordinary vLLM LoRA serving does: same greedy token, and top next-token
log-probabilities about as close to the fp64 reference as stock serving's are. With
sharing, a reader reads the writer's role-independent blocks in engine memory and skips
their prefill.

Each engine runs in its own process through `agentstack bench cache-served`, the path
`agentstack bench cache` measures.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from agentstack.offline.bench.cache import SERVED_COMMAND
from cache.adapters import SharedA
from cache.reference import ReferenceModel
from tests.cache.conftest import shipped_family

pytestmark = pytest.mark.slow

NOISE_FACTOR = 2.0
"""How far the decomposed engine may stray from the fp64 reference, in units of how far
stock vLLM LoRA serving strays from it on the same prompts in the same run. Both engines
run bf16, with kernels that differ by CPU (head size 64 takes AMX where 80 takes a vector
kernel), so a fixed tolerance fails on one machine and hides errors on another; the stock
engine's own error is the bf16 noise floor. A missing or wrong B moves these log-probs by
3-12 nats on the shipped roles; the noise is about 0.1."""

STOCK_SANITY = 0.5
"""The stock engine must itself be close to the reference, or the reference is wrong."""


def serve(mode: str, redis_url: str, out: Path, *extra: str, roles: str = "") -> dict[str, Any]:
    roles = roles or ",".join(p.name for p in shipped_family()[:2])
    subprocess.run(
        [*SERVED_COMMAND, mode, redis_url, str(out), "--probe", roles, *extra],
        check=True, timeout=600,
    )
    return json.loads(out.read_text())


def test_decomposed_without_sharing_matches_lora_serving(tmp_path: Path, redis_url: str, model_dir: Path) -> None:
    ordinary = serve("non-shared", redis_url, tmp_path / "ordinary.json")
    decomposed = serve("decomposed", redis_url, tmp_path / "decomposed.json", "--isolate")
    assert ordinary["probe_prompts"] == decomposed["probe_prompts"]
    reference = ReferenceModel(model_dir, dtype=torch.float64)
    stock_errors, decomposed_errors = [], []
    for adapter, prompt, want, got in zip(
        shipped_family()[:2], ordinary["probe_prompts"], ordinary["rows"], decomposed["rows"], strict=True
    ):
        assert got["cached_tokens"] == 0, "isolated roles must compute everything themselves"
        assert got["first_token"] == want["first_token"], want["role"]
        expected = reference.forward(prompt, reference.load_role(adapter))[0][-1].log_softmax(-1)
        top = expected.topk(5).indices.tolist()
        stock_errors.append(_largest_error(expected, want["logprobs"], top))
        decomposed_errors.append(_largest_error(expected, got["logprobs"], top))
    noise = max(stock_errors)
    assert noise < STOCK_SANITY, stock_errors
    assert max(decomposed_errors) <= NOISE_FACTOR * noise, (decomposed_errors, stock_errors)


def test_a_served_cross_role_read_is_the_references(tmp_path: Path, redis_url: str, model_dir: Path) -> None:
    """The reader's next-token distribution after reading the writer's blocks in the engine
    is the reference's decomposed read (the writer's K, V_base and x·A; the reader's own B
    after attention), as close as stock serving is to its own reference."""
    from agentstack.redis_server import EmbeddedRedis

    with EmbeddedRedis(tmp_path / "redis") as redis:  # no earlier test's blocks to load
        served = serve("decomposed", redis.url, tmp_path / "shared.json")
    ordinary = serve("non-shared", redis_url, tmp_path / "ordinary.json")
    (writer_dir, reader_dir), (writer_prompt, reader_prompt) = shipped_family()[:2], served["probe_prompts"]
    read = served["rows"][1]
    shared = read["cached_tokens"]
    assert shared >= 128 and reader_prompt[:shared] == writer_prompt[:shared]
    reference = ReferenceModel(model_dir, dtype=torch.float64)
    writer, reader = reference.load_role(writer_dir), reference.load_role(reader_dir)
    shared_a = [layer.v.a for layer in writer]  # type: ignore[union-attr]
    _, past = reference.forward(writer_prompt[:shared], writer, shared_a=shared_a)
    via_writer, _ = reference.forward(reader_prompt[shared:], reader, past=past, shared_a=shared_a)
    expected = via_writer[-1].log_softmax(-1)
    own = reference.forward(reader_prompt, reader)[0][-1].log_softmax(-1)
    noise = _largest_error(own, ordinary["rows"][1]["logprobs"], own.topk(5).indices.tolist())
    assert noise < STOCK_SANITY
    top = expected.topk(5).indices.tolist()
    assert _largest_error(expected, read["logprobs"], top) <= NOISE_FACTOR * noise


def test_an_adapter_outside_the_family_gets_blocks_of_its_own(
    tmp_path: Path, redis_url: str, model_dir: Path
) -> None:
    """A role whose v_proj lora_A is not the shared A (here a shipped role with A doubled and
    B halved in every layer: the same LoRA, another A) is served as plain LoRA from blocks
    keyed by its adapter: it never reads the family's blocks, and it answers as the role
    it copies does under ordinary serving."""
    writer, role = shipped_family()[:2]
    outside = _rescaled_copy(role, tmp_path / "outside")
    assert not SharedA.of(writer).is_member(outside)
    from agentstack.redis_server import EmbeddedRedis

    ordinary = serve("non-shared", redis_url, tmp_path / "ordinary.json")
    with EmbeddedRedis(tmp_path / "redis") as redis:  # no earlier test's blocks to load
        served = serve("decomposed", redis.url, tmp_path / "decomposed.json", roles=f"{writer.name},outside={outside}")
    assert ordinary["probe_prompts"] == served["probe_prompts"]
    written, read = served["rows"]
    assert written["cached_tokens"] == 0 and read["cached_tokens"] == 0, "no block shared across the family's edge"
    context_blocks = written["prompt_tokens"] // served["engine_block_size"]
    assert served["engine_blocks"] >= 2 * context_blocks - 1, "each keeps its own engine copy"
    want = ordinary["rows"][1]
    assert read["first_token"] == want["first_token"]
    reference = ReferenceModel(model_dir, dtype=torch.float64)
    expected = reference.forward(served["probe_prompts"][1], reference.load_role(role))[0][-1].log_softmax(-1)
    top = expected.topk(5).indices.tolist()
    noise = _largest_error(expected, want["logprobs"], top)
    assert noise < STOCK_SANITY
    assert _largest_error(expected, read["logprobs"], top) <= NOISE_FACTOR * noise


def _rescaled_copy(adapter: Path, target: Path) -> Path:
    """The same LoRA with another A: every v_proj lora_A doubled, lora_B halved (exact in bf16)."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(adapter, target)
    weights = load_file(str(target / "adapter_model.safetensors"))
    for key in weights:
        if ".v_proj.lora_A." in key:
            weights[key] = weights[key] * 2
        elif ".v_proj.lora_B." in key:
            weights[key] = weights[key] / 2
    save_file(weights, str(target / "adapter_model.safetensors"))
    return target


def _largest_error(expected: torch.Tensor, served: dict[str, float], tokens: list[int]) -> float:
    """Largest |Δ log p| over ``tokens``; a token the engine did not list counts as infinite."""
    return max(abs(float(expected[t]) - served[str(t)]) if str(t) in served else math.inf for t in tokens)


def test_decomposed_reader_reuses_the_writers_prefix(tmp_path: Path, redis_url: str) -> None:
    served = serve("decomposed", redis_url, tmp_path / "shared.json")
    writer, reader = served["rows"]
    assert writer["cached_tokens"] == 0
    assert reader["cached_tokens"] >= 128, "the reader should load the writer's context blocks"
    assert reader["prompt_tokens"] - reader["cached_tokens"] < writer["prompt_tokens"] - 100
    context_blocks = writer["prompt_tokens"] // served["engine_block_size"]
    assert served["engine_blocks"] <= context_blocks + 2, "the reader reads the writer's blocks in place"


def test_roles_arriving_together_prefill_the_context_once(tmp_path: Path) -> None:
    """Two roles of the family sent at once: the context is prefilled once, and the other
    role reads those blocks in engine memory in the same step (vLLM caches a block when it
    allocates it, and the shared modes key blocks by family and salt, not adapter). Under
    a salt per role, each role prefills its own copy. A Redis of its own, so that no
    earlier test's stored blocks can be loaded instead."""
    from agentstack.redis_server import EmbeddedRedis

    with EmbeddedRedis(tmp_path / "redis") as redis:
        together = serve("decomposed", redis.url, tmp_path / "together.json", "--together")
        apart = serve("decomposed", redis.url, tmp_path / "apart.json", "--together", "--isolate")

    def prefilled(served: dict[str, Any]) -> int:
        return sum(row["prompt_tokens"] - row["cached_tokens"] for row in served["rows"])

    assert all(row["cached_tokens"] == 0 for row in apart["rows"])
    first, second = sorted(together["rows"], key=lambda row: row["cached_tokens"])
    assert second["sent_s"] < first["done_s"], "both requests were in the engine at once"
    assert first["cached_tokens"] == 0
    context_blocks = (first["prompt_tokens"] - 40) // together["engine_block_size"]  # questions < 40 tokens
    assert second["cached_tokens"] >= context_blocks * together["engine_block_size"]
    assert prefilled(together) < 0.6 * prefilled(apart)
    assert together["engine_blocks"] < apart["engine_blocks"]
