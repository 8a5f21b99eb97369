"""API keys, permissions and limits on the real ASGI app without an engine: everything
refused is refused before the route's own code (and so before the engine) runs."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest

from agentstack.api.app import create_app
from agentstack.api.security import Admission
from agentstack.errors import RateLimited
from agentstack.auth import AuthConfigError, digest_of, load_keyring, parse_key_file
from agentstack.config import Settings
from agentstack.service import Service

KEY_A = "sk-tenant-a-0123456789"
KEY_B = "sk-tenant-b-0123456789"
KEY_FILE = f"""
keys:
  - name: tenant-a
    key: {KEY_A}
    admin: true
  - name: tenant-b
    sha256: {digest_of(KEY_B)}
    roles: [selector]
    graphs: [tool_agent]
"""


def test_plain_key_file_is_one_key_per_line_with_full_access() -> None:
    entries = parse_key_file(f"# keys\n{KEY_A}\n\nsha256:{digest_of(KEY_B)}\n")
    assert [e.digest for e in entries] == [digest_of(KEY_A), digest_of(KEY_B)]
    assert all(e.admin and e.roles is None and e.graphs is None for e in entries)


def test_keys_are_kept_hashed_and_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keys = tmp_path / "api-keys"
    keys.write_text(KEY_FILE)
    with caplog.at_level(logging.INFO):
        ring = load_keyring(Settings(api_keys_file=keys, host="0.0.0.0"))
    assert ring.enabled
    assert set(ring.by_digest) == {digest_of(KEY_A), digest_of(KEY_B)}
    assert KEY_A not in repr(ring) and KEY_A not in caplog.text and "tenant-a" in caplog.text
    a, b = ring.authenticate(KEY_A), ring.authenticate(KEY_B)
    assert a is not None and b is not None and ring.authenticate("sk-wrong") is None
    assert a.cache_salt and b.cache_salt and a.cache_salt != b.cache_salt
    assert b.may_use_role("selector") and not b.may_use_role("arguments")
    assert b.may_use_graph("tool_agent") and not b.may_use_graph("plan_act_reflect")
    assert KEY_A not in repr(Settings(api_keys=[KEY_A]))


def test_auth_is_off_only_on_loopback_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert not load_keyring(Settings(host="127.0.0.1")).enabled
    assert "API keys are OFF" in caplog.text
    with pytest.raises(AuthConfigError, match="no API keys configured"):
        load_keyring(Settings(host="0.0.0.0"))
    with pytest.raises(AuthConfigError, match="no API keys configured"):
        load_keyring(Settings(host="127.0.0.1", auth_required=True))
    assert not load_keyring(Settings(host="0.0.0.0", auth_required=False)).enabled
    assert load_keyring(Settings(host="127.0.0.1", api_keys=[KEY_A])).enabled


def test_bad_key_files_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError, match="cannot read"):
        load_keyring(Settings(api_keys_file=tmp_path / "missing"))
    with pytest.raises(AuthConfigError, match="exactly one"):
        parse_key_file("keys:\n  - name: x\n")
    duplicate = f"keys:\n  - {{name: x, key: {KEY_A}}}\n  - {{name: x, key: {KEY_B}}}\n"
    bad = tmp_path / "dup.yaml"
    bad.write_text(duplicate)
    with pytest.raises(AuthConfigError, match="used twice"):
        load_keyring(Settings(api_keys_file=bad))


@pytest.fixture
def guarded(tmp_path: Path) -> httpx.AsyncClient:
    keys = tmp_path / "api-keys"
    keys.write_text(KEY_FILE)
    settings = Settings(api_keys_file=keys, cache_dir=tmp_path, max_body_bytes=4096)
    app = create_app(Service(settings), manage_lifecycle=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_guard_refuses_before_any_route(guarded: httpx.AsyncClient) -> None:
    async with guarded as client:
        missing = await client.get("/v1/models")
        assert missing.status_code == 401
        assert missing.json()["error"]["type"] == "AuthenticationError"
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = await client.post("/v1/chat/completions", headers={"Authorization": "Bearer sk-nope"},
                                  json={"model": "selector", "messages": []})
        assert wrong.status_code == 401 and "sk-nope" not in wrong.text
        assert (await client.get("/threads/x", headers={"x-api-key": "sk-nope"})).status_code == 401

        b = {"Authorization": f"Bearer {KEY_B}"}
        forbidden = await client.post("/v1/chat/completions", headers=b,
                                      json={"model": "arguments", "messages": [{"role": "user", "content": "x"}]})
        assert forbidden.status_code == 403
        assert forbidden.json()["error"]["type"] == "PermissionDeniedError"
        admin = await client.post("/v1/load_lora_adapter", headers=b, json={"lora_name": "x", "lora_path": "x"})
        assert admin.status_code == 403
        too_large = await client.post("/v1/chat/completions", headers=b, content=b"x" * 5000)
        assert too_large.status_code == 413

        assert (await client.get("/v1/models", headers={"x-api-key": KEY_A})).status_code == 200
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/openapi.json")).status_code == 200


async def test_the_openapi_document_declares_how_to_authenticate(guarded: httpx.AsyncClient) -> None:
    async with guarded as client:
        document = (await client.get("/openapi.json")).json()
    schemes = document["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"http", "apiKey"}
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert {name for requirement in chat["security"] for name in requirement} == set(schemes)
    assert "security" not in document["paths"]["/healthz"]["get"]


async def test_a_wrong_method_says_which_are_allowed(guarded: httpx.AsyncClient) -> None:
    async with guarded as client:
        wrong = await client.get("/v1/chat/completions", headers={"x-api-key": KEY_A})
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json()["error"]["code"] == 405


async def test_admission_queues_then_refuses_with_retry_after() -> None:
    admission = Admission(max_concurrency=1, max_queue=1)
    release = asyncio.Event()

    async def hold() -> None:
        async with admission.slot("a"):
            await release.wait()

    running = asyncio.create_task(hold())
    await asyncio.sleep(0)
    queued = asyncio.create_task(hold())
    await asyncio.sleep(0)
    assert admission.waiting() == 1
    with pytest.raises(RateLimited) as refused:
        async with admission.slot("a"):
            pass
    assert refused.value.status == 429 and int(refused.value.headers["Retry-After"]) >= 1
    async with asyncio.timeout(1):
        async with admission.slot("b"):  # another key has its own lane
            pass
    release.set()
    await asyncio.gather(running, queued)
    assert admission.waiting() == 0


def test_metrics_name_tenants_by_an_opaque_label() -> None:
    from agentstack.auth import Principal, tenant_label

    label = Principal(name="tenant-a").metric_label
    assert label == tenant_label("tenant-a") and "tenant-a" not in label
    assert label != Principal(name="tenant-b").metric_label
