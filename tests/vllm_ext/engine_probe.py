"""Engine-side checks of the grouped LoRA ops, each in its own process (one engine each).

    python -m tests.vllm_ext.engine_probe roles MODEL_DIR   -> agentstack's engine: the three
        roles and the base model in one batch, greedy, with the grouped ops and with vLLM's
    python -m tests.vllm_ext.engine_probe plain MODEL_DIR   -> a plain `vllm.LLM` with LoRA on:
        does its worker run the grouped ops?
Prints one line `RESULT <json>`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path

QUESTIONS = [
    "What is the capital of France?",
    "Name three colours.",
    "Write one sentence about the sea.",
    "What's the weather in Paris right now?",
    "Convert 10 euros to dollars.",
    "Why is the sky blue?",
    "Give me two tips for better sleep.",
]
ROLES = ("selector", "arguments", "single", None)


async def roles(model_dir: Path) -> dict[str, object]:
    from vllm import SamplingParams

    from agentstack.config import PACKAGE_DATA, Settings
    from agentstack.engine import Engine

    engine = Engine(Settings(model=model_dir, kv_cache_space_gib=1), model_dir)
    engine.start()
    try:
        adapters = {}
        for name in ROLES[:-1]:
            adapters[name] = engine.new_adapter(name, PACKAGE_DATA / "adapters" / name)
            await engine.load_adapter(adapters[name])
        default = (await engine.llm.collective_rpc("grouped_lora"))[0]
        # The two most likely tokens at each step: where the runs part, was it a tie?
        params = SamplingParams(temperature=0, max_tokens=24, logprobs=2)
        prompts = [engine.chat_prompt([{"role": "user", "content": q}]) for q in QUESTIONS]

        async def batch(grouped: bool) -> list[list[tuple[int, float]]]:
            await engine.llm.collective_rpc("grouped_lora", args=(grouped,))

            async def one(i: int) -> list[tuple[int, float]]:
                role = ROLES[i % len(ROLES)]
                final = None
                # A salt per run: the second run must compute, not read the first's cache.
                async for output in engine.generate(prompts[i], params, request_id=uuid.uuid4().hex,
                                                    adapter=adapters.get(role) if role else None,
                                                    cache_salt=f"grouped-{grouped}"):
                    final = output
                assert final is not None
                out = final.outputs[0]
                assert out.logprobs is not None
                return [(token, _margin(step)) for token, step in zip(out.token_ids, out.logprobs, strict=True)]

            # All requests wait in the paused scheduler, so the first step holds them all in
            # both runs: a different split of the batch would change the base model's
            # products in their last bits, which can flip a greedy token whatever the ops.
            await engine.llm.pause_generation(mode="keep", clear_cache=False)
            runs = [asyncio.ensure_future(one(i)) for i in range(len(prompts))]
            while engine.llm.output_processor.get_num_unfinished_requests() < len(prompts):
                await asyncio.sleep(0.01)
            await engine.llm.resume_generation()
            return list(await asyncio.gather(*runs))

        return {"default_grouped": default, "roles": [ROLES[i % len(ROLES)] for i in range(len(prompts))],
                "grouped": await batch(True), "stock": await batch(False)}
    finally:
        engine.shutdown()


def _margin(step: dict[int, object]) -> float:
    """How far the chosen token's log-probability is ahead of the next one's."""
    first, second = sorted((lp.logprob for lp in step.values()), reverse=True)[:2]  # type: ignore[attr-defined]
    return first - second


def _worker_uses_grouped_lora(worker: object) -> bool:
    from agentstack.vllm_ext.plugin import grouped_lora_in_use

    return grouped_lora_in_use()


def plain(model_dir: Path) -> dict[str, object]:
    from vllm import LLM

    llm = LLM(model=str(model_dir), enable_lora=True, max_lora_rank=16, enforce_eager=True,
              kv_cache_memory_bytes=1 << 30, max_model_len=1024)
    return {"worker_grouped": llm.collective_rpc(_worker_uses_grouped_lora)}


if __name__ == "__main__":
    check, model = sys.argv[1], Path(sys.argv[2])
    result = asyncio.run(roles(model)) if check == "roles" else plain(model)
    print("RESULT " + json.dumps(result), flush=True)
