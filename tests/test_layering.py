"""The server never imports the offline tools, so a runtime install serves without them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = ("agentstack.offline", "routers.offline")
SERVING_PACKAGES = ("agentstack", "routers", "cache", "graphs")
CLI = ROOT / "agentstack" / "cli.py"


def _serving_files() -> list[Path]:
    files = [p for pkg in SERVING_PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    return [p for p in files if not any(p.is_relative_to(ROOT / m.replace(".", "/")) for m in OFFLINE)]


def _imports(tree: ast.Module, *, top_level_only: bool) -> list[str]:
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: list[str] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def test_serving_code_imports_no_offline_module() -> None:
    """The CLI may import offline modules inside its offline commands, never at load."""
    offenders = []
    for path in _serving_files():
        tree = ast.parse(path.read_text(), str(path))
        for name in _imports(tree, top_level_only=path == CLI):
            if name.startswith(OFFLINE):
                offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert not offenders


def test_loading_the_server_loads_no_offline_module() -> None:
    code = (
        "import sys, agentstack.cli, agentstack.api.app, agentstack.service, routers.serving\n"
        f"print([m for m in sys.modules if m.startswith({OFFLINE!r})])"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert run.stdout.strip() == "[]"
