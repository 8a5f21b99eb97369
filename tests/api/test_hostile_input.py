"""Input that JSON allows but the server cannot keep gets a 400 naming the problem, on the
real app without an engine (the checks run before any route's own code)."""

from __future__ import annotations

import httpx
import pytest

from agentstack.api.app import create_app
from agentstack.config import Settings
from agentstack.service import Service


@pytest.fixture
def client() -> httpx.AsyncClient:
    app = create_app(Service(Settings(max_body_bytes=2_000_000)), manage_lifecycle=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize(("path", "body", "expected"), [
    ("/v1/chat/completions", '{"model": "assistant", "messages": [{"role": "user", "content": "\\ud800"}]}',
     "valid Unicode"),
    ("/threads", '{"metadata": {"note": "\\ud800"}}', "valid Unicode"),
    ("/threads", '{"metadata": ' + nested(900) + "}", "nested deeper"),
    ("/v1/chat/completions", '{"model": "assistant", "messages": ' + "[" * 10_000 + "]" * 10_000 + "}", ""),
    ("/v1/load_lora_adapter", '{"lora_name": "x", "lora_path": "a\\u0000b"}', "lora_path"),
    ("/v1/load_lora_adapter", '{"lora_name": "x", "lora_path": "' + "a" * 5000 + '"}', "lora_path"),
])
async def test_unkeepable_json_is_a_400_naming_the_problem(client: httpx.AsyncClient, path: str, body: str,
                                                          expected: str) -> None:
    async with client:
        answer = await client.post(path, content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "BadRequestError" and expected in str(error["message"]) + str(error["param"])


def body_routes(document: dict) -> list[tuple[str, str]]:
    """Every route of the OpenAPI document that takes a JSON body, path ids filled in."""
    routes = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            content = (operation.get("requestBody") or {}).get("content", {})
            if "application/json" in content:
                routes.append((method, path.replace("{", "").replace("}", "")))
    return routes


async def test_every_body_route_refuses_unkeepable_json(client: httpx.AsyncClient) -> None:
    """Grows with the API: a new route with a body is in this table as soon as it exists."""
    async with client:
        document = (await client.get("/openapi.json")).json()
        routes = body_routes(document)
        assert len(routes) >= 20
        for method, path in routes:
            for body in ('{"model": "x", "metadata": {"a": "\\ud800"}}', '{"metadata": ' + nested(100) + "}"):
                answer = await client.request(method, path, content=body, headers={"content-type": "application/json"})
                assert answer.status_code == 400, (method, path, answer.text)
