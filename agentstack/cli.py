"""The `agentstack` command line."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from agentstack.config import Settings

app = typer.Typer(help="agentstack: multi-agent LLM workflows on one vLLM backbone.", no_args_is_help=True)
model_app = typer.Typer(help="Prepare and inspect the served model.", no_args_is_help=True)
roles_app = typer.Typer(help="Inspect roles.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print ratios measured side by side.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(roles_app, name="roles")
app.add_typer(bench_app, name="bench")

console = Console()

ModelOption = Annotated[
    Optional[Path], typer.Option("--model", help="Local Hugging Face model directory to serve.")
]
RolesOption = Annotated[Optional[Path], typer.Option("--roles", help="Roles file (YAML).")]


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything (ours, vLLM's, its engine processes') to stderr, so that stdout
    carries only the one JSON object `--json` promises."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _settings(**overrides: object) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Bind address.")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port.")] = None,
    model: ModelOption = None,
    roles: RolesOption = None,
    redis_url: Annotated[Optional[str], typer.Option(help="Redis URL; unset starts an embedded one.")] = None,
) -> None:
    """Run the API server on the engine, the roles and Redis."""
    import uvicorn

    from agentstack.api import create_app
    from agentstack.service import Service

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _settings(host=host, port=port, model=model, roles_file=roles, redis_url=redis_url)
    application = create_app(Service(settings))
    uvicorn.run(application, host=settings.host, port=settings.port, log_level="info",
                timeout_graceful_shutdown=30)


@model_app.command("prepare")
def model_prepare(
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if a verified copy exists.")] = False,
) -> None:
    """Convert the packaged SmolLM2-135M-Instruct into a vLLM-loadable directory (once)."""
    from agentstack.model_prep import prepare

    prepared = prepare(_settings().models_dir, force=force)
    state = "verified, reused" if prepared.reused else "prepared"
    console.print(f"[green]{state}[/]: {prepared.path}")


@roles_app.command("list")
def roles_list(roles: RolesOption = None) -> None:
    """Show the roles of the roles file."""
    from agentstack.roles import RolesFileError, load_roles_file

    settings = _settings(roles_file=roles)
    try:
        specs = load_roles_file(settings.roles_file)
    except RolesFileError as e:
        console.print(f"[red]error[/]: {e}")
        raise typer.Exit(2) from e
    table = Table("name", "adapter", "reasoning", "description")
    for spec in specs:
        table.add_row(spec.name, spec.adapter.name if spec.adapter else "(base model)",
                      spec.reasoning.value, spec.description)
    console.print(table)


@bench_app.command("serve")
def bench_serve(
    requests: Annotated[int, typer.Option(help="Requests per side.")] = 64,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once.")] = 8,
    max_tokens: Annotated[int, typer.Option(help="Tokens generated per request.")] = 32,
    rounds: Annotated[int, typer.Option(help="Alternating rounds per side.")] = 4,
    report_dir: Annotated[Path, typer.Option(help="Where the markdown report and plot go.")] = Path("reports"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Same mixed-role requests through HTTP and straight to the engine, side by side."""
    from agentstack.bench.serve import ServeBenchConfig, run_serve_bench

    config = ServeBenchConfig(requests=requests, concurrency=concurrency, max_tokens=max_tokens,
                              rounds=rounds, report_dir=report_dir)
    with stdout_to_stderr() if as_json else contextlib.nullcontext():
        result = run_serve_bench(_settings(), config, quiet=as_json)
    if as_json:
        print(json.dumps(result.summary()))
    else:
        console.print(result.table())


if __name__ == "__main__":
    app()
