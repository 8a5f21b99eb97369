"""The `agentstack` command line, as a user runs it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentstack import cli
from agentstack.cli import app

runner = CliRunner()


def test_roles_list_shows_the_packaged_roles() -> None:
    result = runner.invoke(app, ["roles", "list"])
    assert result.exit_code == 0, result.output
    for name in ("assistant", "selector", "arguments", "single"):
        assert name in result.output


def test_roles_list_reports_an_invalid_file(tmp_path: Path) -> None:
    bad = tmp_path / "roles.yaml"
    bad.write_text("roles: [{name: x, temperature: hot}]")
    result = runner.invoke(app, ["roles", "list", "--roles", str(bad)])
    assert result.exit_code != 0
    assert result.exit_code == 2 and "roles.yaml" in result.output


def test_model_prepare_reuses_the_verified_copy(model_dir: Path) -> None:
    result = runner.invoke(app, ["model", "prepare"])
    assert result.exit_code == 0, result.output
    assert "reused" in result.output


@pytest.mark.parametrize(
    "command", [["bench", "fuzz"], ["eval", "gate"], ["adapters", "build"], ["gate", "train"]]
)
def test_offline_commands_name_the_tools_extra_when_it_is_missing(
    monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.setattr(cli, "TOOLS_MODULES", ("agentstack_missing_tool",))
    result = runner.invoke(app, command)
    assert result.exit_code == 1, result.output
    assert "agentstack[tools]" in result.output and "Traceback" not in result.output
