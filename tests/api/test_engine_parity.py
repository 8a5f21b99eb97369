"""The base model through the service answers exactly what a direct vLLM call answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name three colours."}],
    [{"role": "user", "content": "Write one sentence about the sea."}],
]


def test_base_model_through_service_equals_direct_vllm(base_url: str, model_dir: Path) -> None:
    served = []
    for messages in CONVERSATIONS:
        reply = httpx.post(f"{base_url}/v1/chat/completions", timeout=120, json={
            "model": "smollm2-135m-instruct", "messages": messages, "temperature": 0, "max_tokens": 32,
        })
        assert reply.status_code == 200, reply.text
        served.append(reply.json()["choices"][0]["message"]["content"])

    script = Path(__file__).parents[1] / "direct_vllm.py"
    env = {**os.environ, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}  # as the service sets it
    run = subprocess.run([sys.executable, str(script), str(model_dir), json.dumps(CONVERSATIONS)],
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(out for out in run.stdout.splitlines() if out.startswith("RESULT "))
    direct = json.loads(line.removeprefix("RESULT "))
    assert served == [text.strip() for text in direct]
