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


def import_cycles(packages: tuple[str, ...] = ("agentstack", "routers", "cache", "graphs")) -> list[list[str]]:
    """Groups of modules that import each other, directly or round about (lazy imports
    included, imports for type checking only excluded)."""
    import grimp

    graph = grimp.build_graph(*packages, exclude_type_checking_imports=True, cache_dir=None)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        order[module] = low[module] = len(order)
        stack.append(module)
        for imported in edges[module]:
            if imported not in order:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], order[imported])
        if low[module] == order[module]:
            group = [stack.pop()]
            while group[-1] != module:
                group.append(stack.pop())
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in edges:
        if module not in order:
            visit(module)
    return cycles


def test_no_module_imports_itself_round_about() -> None:
    assert import_cycles() == []
