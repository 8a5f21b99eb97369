"""Settings: YAML file, then environment, then flags, each overriding the one before."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agentstack.config import Settings


def test_file_then_environment_then_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "agentstack.yaml"
    config.write_text("port: 9001\nmax_tokens_cap: 64\nredis_url: redis://cache:6379/0\n")
    monkeypatch.setenv("AGENTSTACK_CONFIG", str(config))
    assert Settings().port == 9001
    assert Settings().redis_url == "redis://cache:6379/0"

    monkeypatch.setenv("AGENTSTACK_PORT", "9002")
    assert Settings().port == 9002
    assert Settings(port=9003).port == 9003
    assert Settings().max_tokens_cap == 64


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTSTACK_PORT", "not-a-port")
    with pytest.raises(ValidationError):
        Settings()


def test_the_tool_shortlist_size_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().tool_shortlist_size is None
    monkeypatch.setenv("AGENTSTACK_TOOL_SHORTLIST_SIZE", "0")
    assert Settings().tool_shortlist_size == 0
    monkeypatch.setenv("AGENTSTACK_TOOL_SHORTLIST_SIZE", "-1")
    with pytest.raises(ValidationError):
        Settings()
