"""Client mistakes get a 4xx with an OpenAI error body, and the service keeps serving."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

USER = [{"role": "user", "content": "hello"}]

CASES: list[tuple[str, str, Any, int, str]] = [
    # (id, path, body, expected status, expected error type)
    ("malformed-json", "/v1/chat/completions", b'{"model": "assistant", "messages": [', 400, "BadRequestError"),
    ("body-not-object", "/v1/chat/completions", b"[1, 2]", 400, "BadRequestError"),
    ("unknown-role", "/v1/chat/completions", {"model": "nobody", "messages": USER}, 404, "NotFoundError"),
    ("missing-model", "/v1/chat/completions", {"messages": USER}, 400, "BadRequestError"),
    ("messages-wrong-type", "/v1/chat/completions", {"model": "assistant", "messages": "hi"}, 400, "BadRequestError"),
    ("empty-messages", "/v1/chat/completions", {"model": "assistant", "messages": []}, 400, "BadRequestError"),
    ("only-empty-content", "/v1/chat/completions",
     {"model": "assistant", "messages": [{"role": "user", "content": ""}]}, 400, "BadRequestError"),
    ("bad-role", "/v1/chat/completions",
     {"model": "assistant", "messages": [{"role": "wizard", "content": "x"}]}, 400, "BadRequestError"),
    ("temperature-type", "/v1/chat/completions",
     {"model": "assistant", "messages": USER, "temperature": "hot"}, 400, "BadRequestError"),
    ("temperature-range", "/v1/chat/completions",
     {"model": "assistant", "messages": USER, "temperature": 7}, 400, "BadRequestError"),
    ("max-tokens-over-cap", "/v1/chat/completions",
     {"model": "assistant", "messages": USER, "max_tokens": 100000}, 400, "BadRequestError"),
    ("max-tokens-zero", "/v1/chat/completions",
     {"model": "assistant", "messages": USER, "max_tokens": 0}, 400, "BadRequestError"),
    ("n-above-one", "/v1/chat/completions", {"model": "assistant", "messages": USER, "n": 3}, 400, "BadRequestError"),
    ("tool-choice-without-tools", "/v1/chat/completions",
     {"model": "assistant", "messages": USER, "tool_choice": "required"}, 400, "BadRequestError"),
    ("tool-choice-unknown-function", "/v1/chat/completions",
     {"model": "assistant", "messages": USER,
      "tools": [{"type": "function", "function": {"name": "f"}}],
      "tool_choice": {"type": "function", "function": {"name": "g"}}}, 400, "BadRequestError"),
    ("tool-workflow-without-tools", "/v1/chat/completions",
     {"model": "tool-calling", "messages": USER}, 400, "BadRequestError"),
    ("tool-workflow-over-context", "/v1/chat/completions",
     {"model": "tool-calling", "messages": [{"role": "user", "content": "word " * 30_000}],
      "tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "BadRequestError"),
    ("oversize-body", "/v1/chat/completions",
     {"model": "assistant", "messages": [{"role": "user", "content": "x" * 300_000}]}, 413, "RequestEntityTooLarge"),
    ("prompt-over-context", "/v1/chat/completions",
     {"model": "assistant", "messages": [{"role": "user", "content": "word " * 30_000}]}, 400,
     "BadRequestError"),
    ("empty-prompt", "/v1/completions", {"model": "assistant", "prompt": ""}, 400, "BadRequestError"),
    ("unknown-role-completion", "/v1/completions", {"model": "nobody", "prompt": "x"}, 404, "NotFoundError"),
    ("adapter-path-traversal", "/v1/load_lora_adapter",
     {"lora_name": "evil", "lora_path": "../../etc"}, 400, "BadRequestError"),
    ("adapter-absolute-outside-root", "/v1/load_lora_adapter",
     {"lora_name": "evil", "lora_path": "/tmp"}, 400, "BadRequestError"),
    ("adapter-missing", "/v1/load_lora_adapter",
     {"lora_name": "ghost", "lora_path": "no-such-adapter"}, 400, "BadRequestError"),
    ("adapter-bad-name", "/v1/load_lora_adapter",
     {"lora_name": "../x", "lora_path": "selector-copy"}, 400, "BadRequestError"),
    ("adapter-duplicate", "/v1/load_lora_adapter",
     {"lora_name": "selector", "lora_path": "selector-copy"}, 400, "BadRequestError"),
    ("adapter-unwrapped-projection", "/v1/load_lora_adapter",
     {"lora_name": "mlp", "lora_path": "selector-mlp"}, 400, "BadRequestError"),
    ("unload-unknown", "/v1/unload_lora_adapter", {"lora_name": "ghost"}, 404, "NotFoundError"),
    ("wrong-method", "/v1/chat/completions", None, 405, "MethodNotAllowed"),
    ("unknown-path", "/v1/nothing-here", None, 404, "NotFoundError"),
]


@pytest.mark.parametrize(("path", "body", "status", "error_type"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(base_url: str, path: str, body: Any, status: int, error_type: str) -> None:
    with httpx.Client(base_url=base_url, timeout=60) as http:
        if body is None:
            response = http.get(path)
        elif isinstance(body, bytes):
            response = http.post(path, content=body, headers={"content-type": "application/json"})
        else:
            response = http.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == error_type
    assert error["code"] == status
    assert error["message"] and "Traceback" not in error["message"]


def test_service_still_serves_after_bad_input(base_url: str) -> None:
    response = httpx.post(f"{base_url}/v1/chat/completions", timeout=60,
                          json={"model": "assistant", "messages": USER, "max_tokens": 8})
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"]
    models = httpx.get(f"{base_url}/v1/models").json()["data"]
    assert "selector" in {m["id"] for m in models}, "a refused duplicate load must not disturb the role"
