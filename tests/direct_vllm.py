"""Answer chat prompts with a plain vLLM `LLM`, no agentstack in between (for parity tests).

Usage: python tests/direct_vllm.py MODEL_DIR PROMPTS_JSON -> prints a JSON list of texts.

The engine is built with the service's own engine arguments (LoRA enabled, same memory,
same seed), and the conversations run one at a time, as the parity test sends them to
the service: in bf16 on this CPU, a conversation batched with others can come out
differently from the same conversation run alone, so both sides keep one composition.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    from vllm import LLM, SamplingParams

    from agentstack.config import Settings
    from agentstack.engine import Engine

    model_dir, prompts_json = Path(sys.argv[1]), sys.argv[2]
    conversations = json.loads(prompts_json)
    args = Engine(Settings(model=model_dir, kv_cache_space_gib=1), model_dir).engine_args()
    args.pop("disable_log_stats", None)
    llm = LLM(**args)
    params = SamplingParams(temperature=0, max_tokens=32)
    texts = [llm.chat([conversation], params, use_tqdm=False)[0].outputs[0].text for conversation in conversations]
    print("RESULT " + json.dumps(texts))


if __name__ == "__main__":
    main()
