"""Roles file validation and the Redis-backed record of run-time adapter changes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from agentstack.config import DEFAULT_ROLES_FILE
from agentstack.redis_server import EmbeddedRedis
from agentstack.roles import AdapterChange, AdapterStore, RolesFileError, load_roles_file


def test_packaged_roles_file_names_real_adapters() -> None:
    specs = {s.name: s for s in load_roles_file(DEFAULT_ROLES_FILE)}
    assert specs["assistant"].adapter is None
    for name in ("selector", "arguments", "single"):
        adapter = specs[name].adapter
        assert adapter is not None and (adapter / "adapter_config.json").is_file()


@pytest.mark.parametrize("text", [
    "roles: [{name: a}, {name: a}]",
    "roles: [{name: 'bad name!'}]",
    "roles: [{name: a, sampling: {temperature: 9}}]",
    "roles: [{name: a, colour: blue}]",
    "roles: [{name: a, reasoning: sometimes}]",
    "not: [valid",
])
def test_invalid_roles_files_are_refused_with_the_file_named(tmp_path: Path, text: str) -> None:
    path = tmp_path / "roles.yaml"
    path.write_text(text)
    with pytest.raises(RolesFileError, match="roles.yaml"):
        load_roles_file(path)


def test_adapter_paths_resolve_against_the_roles_file(tmp_path: Path) -> None:
    path = tmp_path / "roles.yaml"
    path.write_text("roles: [{name: r, adapter: adapters/r}]")
    assert load_roles_file(path)[0].adapter == (tmp_path / "adapters" / "r").resolve()


def test_adapter_store_keeps_the_last_change_per_name(redis_server: EmbeddedRedis) -> None:
    async def scenario() -> list[AdapterChange]:
        client = aioredis.Redis.from_url(redis_server.url)
        store = AdapterStore(client, prefix="roles-test")
        await store.record(AdapterChange("a", "load", "/x/a"))
        await store.record(AdapterChange("b", "load", "/x/b"))
        await store.record(AdapterChange("a", "unload"))
        changes = await AdapterStore(client, prefix="roles-test").changes()
        await client.aclose()
        return changes

    assert asyncio.run(scenario()) == [AdapterChange("a", "unload"), AdapterChange("b", "load", "/x/b")]
