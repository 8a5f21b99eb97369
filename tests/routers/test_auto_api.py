"""`model: "auto"` through the OpenAI SDK against the live server with the shipped gate."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from routers.offline.train import GATE_ROLES

pytestmark = pytest.mark.slow

HARD = ("Zoe has 15 apples. Then Zoe gives away 5. Then Zoe doubles the number of apples. "
        "Zoe loses 7 of them. How many apples does Zoe have now?")


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=180)


def _route(raw: object) -> dict[str, object]:
    header = raw.headers.get("x-agentstack-route")  # type: ignore[attr-defined]
    assert header, "no route header"
    decision = json.loads(header)
    assert decision["path"] in ("think", "direct")
    assert set(decision["roles"]) <= set(GATE_ROLES) and decision["roles"]
    assert abs(sum(decision["weights"]) - 1) < 1e-3
    assert decision["reason"]
    return decision


def _decisions(base_url: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("agentstack:route_decisions_total{"))


def test_auto_non_stream(client: openai.OpenAI, base_url: str) -> None:
    before = _decisions(base_url)
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": HARD}], max_tokens=160)
    decision = _route(raw)
    reply = raw.parse()
    assert reply.model == "auto"
    message = reply.choices[0].message
    assert (message.content or "").strip() or getattr(message, "reasoning", None)
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert _decisions(base_url) == before + 1
    metrics = httpx.get(f"{base_url}/metrics", timeout=10).text
    counted = {(s.labels["role"], s.labels["path"]) for family in text_string_to_metric_families(metrics)
               for s in family.samples if s.name == "agentstack:route_decisions_total"}
    assert ("+".join(decision["roles"]), decision["path"]) in counted  # type: ignore[arg-type]


def test_auto_stream(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "What is the capital of Japan?"}],
        max_tokens=48, stream=True)
    _route(raw)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
    assert text.strip()


def test_route_explains_without_generating(base_url: str) -> None:
    before = _decisions(base_url)
    body = {"messages": [{"role": "user", "content": HARD}]}
    response = httpx.post(f"{base_url}/v1/route", json=body, timeout=60)
    assert response.status_code == 200, response.text
    decision = response.json()
    assert decision["object"] == "route" and decision["roles"] and decision["reason"]
    again = httpx.post(f"{base_url}/v1/route", json=body, timeout=60).json()
    assert {k: v for k, v in again.items() if k != "gate_ms"} == {k: v for k, v in decision.items() if k != "gate_ms"}
    assert _decisions(base_url) == before
