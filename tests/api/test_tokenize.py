"""vLLM's /tokenize and /detokenize, which vLLM's benchmark client calls to align prompts."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.slow


def test_tokenize_detokenize_round_trip(base_url: str) -> None:
    text = "The capital of France is Paris."
    reply = httpx.post(f"{base_url}/tokenize", timeout=30,
                       json={"model": "smollm2-135m-instruct", "prompt": text, "add_special_tokens": False})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["count"] == len(body["tokens"]) > 3 and body["max_model_len"] >= 128
    back = httpx.post(f"{base_url}/detokenize", timeout=30, json={"model": "selector", "tokens": body["tokens"]})
    assert back.status_code == 200 and back.json()["prompt"] == text


def test_tokenize_chat_counts_the_served_prompt(base_url: str) -> None:
    """The chat form counts what a chat request would prefill: template and role prompt."""
    messages = [{"role": "user", "content": "hello"}]
    chat = httpx.post(f"{base_url}/tokenize", timeout=30, json={"model": "selector", "messages": messages}).json()
    served = httpx.post(f"{base_url}/v1/chat/completions", timeout=120,
                        json={"model": "selector", "messages": messages, "max_tokens": 1}).json()
    assert chat["count"] == served["usage"]["prompt_tokens"]


@pytest.mark.parametrize("body", [
    {"prompt": "a", "messages": [{"role": "user", "content": "b"}]},
    {},
    {"model": "nobody", "prompt": "a"},
    {"tokens": [-1]},
    {"tokens": [10**9]},
], ids=["both-inputs", "no-input", "unknown-model", "negative-token", "token-beyond-vocabulary"])
def test_bad_tokenize_requests_get_4xx(base_url: str, body: dict) -> None:
    path = "/detokenize" if "tokens" in body else "/tokenize"
    reply = httpx.post(f"{base_url}{path}", timeout=30, json=body)
    assert 400 <= reply.status_code < 500, reply.text
    assert "error" in reply.json()
