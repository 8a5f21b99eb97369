"""Answer chat prompts with a plain vLLM `LLM`, no agentstack in between (for parity tests).

Usage: python tests/direct_vllm.py MODEL_DIR PROMPTS_JSON -> prints a JSON list of texts.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    from vllm import LLM, SamplingParams

    model_dir, prompts_json = sys.argv[1], sys.argv[2]
    conversations = json.loads(prompts_json)
    llm = LLM(model=model_dir, dtype="bfloat16", max_model_len=2048, enforce_eager=True,
              kv_cache_memory_bytes=1 << 30, seed=0)
    outputs = llm.chat(conversations, SamplingParams(temperature=0, max_tokens=32), use_tqdm=False)
    print("RESULT " + json.dumps([o.outputs[0].text for o in outputs]))


if __name__ == "__main__":
    main()
