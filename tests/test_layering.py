"""Dependencies flow one way (api -> workflows and graphs -> the chat core and the gate ->
the cache), and the server never imports the offline tools, so a runtime install serves
without them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = ("agentstack.offline", "routers.offline")


def test_imports_keep_the_layer_contract() -> None:
    """The contract is `[tool.importlinter]` in pyproject.toml; lazy imports count too."""
    run = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:]


def test_loading_the_server_loads_no_offline_module() -> None:
    code = (
        "import sys, agentstack.cli, agentstack.api.app, agentstack.service, routers.serving\n"
        f"print([m for m in sys.modules if m.startswith({OFFLINE!r})])"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert run.stdout.strip() == "[]"
