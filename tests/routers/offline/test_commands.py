"""`agentstack gate train`'s policy options, refused before anything is measured."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from agentstack.cli import app
from routers.offline.commands import parse_lambdas

runner = CliRunner()


def test_parse_lambdas() -> None:
    assert parse_lambdas("0, 0.0005,1e-3") == (0.0, 0.0005, 0.001)
    for bad in ("", "0,-1", "cheap"):
        with pytest.raises(ValueError):
            parse_lambdas(bad)


@pytest.mark.parametrize(("args", "message"), [
    (["--lam", "0.001", "--lambdas", "0,0.001"], "not both"),
    (["--lambdas", "0,-0.5"], ">= 0"),
    (["--pooling", "max"], "mean, last, mean+last"),
    (["--samples", "2", "--temperature", "0"], "temperature > 0"),
])
def test_bad_policy_options_are_refused_first(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["gate", "train", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
