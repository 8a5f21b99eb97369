"""The `agentstack` command line: the server (`serve`, `model`, `roles`) and the offline
tools (`bench`, `eval`, `adapters`, `gate`), which import their modules only when run."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from agentstack.config import Settings

if TYPE_CHECKING:
    from agentstack.offline.bench.server import ServerProcess
    from agentstack.offline.bfcl.training_data import ToolRole
    from agentstack.offline.training.lora import TrainResult
    from agentstack.service import Service

T = TypeVar("T")

console = Console()
TOOLS_MODULES = ("matplotlib", "schemathesis", "peft", "psutil")
"""What the `tools` extra installs (pyproject.toml) that the server does not."""


def _require_tools() -> None:
    """Runs before any offline command, so a server-only install gets the fix, not a traceback."""
    missing = [name for name in TOOLS_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        console.print(f"[red]error[/]: this command needs the offline tools ({', '.join(missing)} "
                      "not installed): pip install 'agentstack\\[tools]'")
        raise typer.Exit(1)


app = typer.Typer(help="agentstack: multi-agent LLM workflows on one vLLM backbone.", no_args_is_help=True)
model_app = typer.Typer(help="Prepare and inspect the served model.", no_args_is_help=True)
roles_app = typer.Typer(help="Inspect roles.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print ratios measured side by side.",
                        no_args_is_help=True, callback=_require_tools)
adapters_app = typer.Typer(help="Build and train the role adapters.",
                           no_args_is_help=True, callback=_require_tools)
eval_app = typer.Typer(help="Evaluations on public benchmarks.",
                       no_args_is_help=True, callback=_require_tools)
gate_app = typer.Typer(help="The learned gate behind `model: auto`.",
                       no_args_is_help=True, callback=_require_tools)
app.add_typer(model_app, name="model")
app.add_typer(roles_app, name="roles")
app.add_typer(bench_app, name="bench")
app.add_typer(adapters_app, name="adapters")
app.add_typer(eval_app, name="eval")
app.add_typer(gate_app, name="gate")

# Distinct from a start-up failure (1) and a configuration error (2), for restart policies.
ENGINE_DEAD_EXIT_CODE = 3

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


def _exit_drained(sig: int, frame: object) -> None:
    """uvicorn re-raises the SIGTERM it drained for, into the handler it found at start:
    exit 0 there, because by then every request in flight has finished and the engine
    has stopped, so Kubernetes records a clean stop rather than a kill."""
    raise SystemExit(0)


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Bind address.")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port.")] = None,
    model: ModelOption = None,
    roles: RolesOption = None,
    redis_url: Annotated[Optional[str], typer.Option(help="Redis URL; unset starts an embedded one.")] = None,
    graphs: Annotated[Optional[Path], typer.Option(
        help="Registry of your LangGraph graphs (langgraph.json shape), served beside the built-in ones.")] = None,
) -> None:
    """Run the API server on the engine, the roles and Redis."""
    from agentstack.api.app import create_app
    from agentstack.api.server import build_server
    from agentstack.auth import AuthConfigError
    from agentstack.service import Service

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _settings(host=host, port=port, model=model, roles_file=roles, redis_url=redis_url,
                         graphs_file=graphs)
    service = Service(settings)
    try:
        application = create_app(service)
    except AuthConfigError as e:
        console.print(f"[red]error[/]: {e}")
        raise typer.Exit(2) from e

    def drain() -> None:
        service.draining = True

    server = build_server(application, settings, on_drain=drain)

    def engine_died() -> None:
        server.should_exit = server.force_exit = True

    service.on_engine_death = engine_died
    signal.signal(signal.SIGTERM, _exit_drained)
    server.run()
    if service.engine_died:
        raise typer.Exit(ENGINE_DEAD_EXIT_CODE)


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
    from agentstack.offline.bench.serve import ServeBenchConfig, run_serve_bench

    config = ServeBenchConfig(requests=requests, concurrency=concurrency, max_tokens=max_tokens,
                              rounds=rounds, report_dir=report_dir)
    with stdout_to_stderr() if as_json else contextlib.nullcontext():
        result = run_serve_bench(_settings(), config, quiet=as_json)
    if as_json:
        print(json.dumps(result.summary()))
    else:
        console.print(result.table())


@bench_app.command("engine")
def bench_engine(
    prompts: Annotated[int, typer.Option(help="Requests per batch.", min=1)] = 8,
    rounds: Annotated[int, typer.Option(help="Alternating rounds of every request kind.", min=1)] = 5,
    prefill_tokens: Annotated[int, typer.Option(help="Prompt length of the prefill-heavy batch.", min=8)] = 1000,
    decode_tokens: Annotated[int, typer.Option(help="Output length of the decode-heavy batch.", min=2)] = 128,
    kinds: Annotated[str, typer.Option(
        help="Request kinds to run, comma-separated: base, lora, mixed, mixed_stock.")] = "base,lora,mixed,mixed_stock",
    model: ModelOption = None,
    report_dir: Annotated[Path, typer.Option(help="Where the markdown report and plot go.")] = Path("reports"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Base model, one role, three roles mixed and the mix on vLLM's own LoRA ops, on one engine."""
    from agentstack.offline.bench.engine import KINDS, EngineBenchConfig, run_engine_bench

    chosen = tuple(k.strip() for k in kinds.split(",") if k.strip())
    if not chosen or any(k not in KINDS for k in chosen):
        raise typer.BadParameter(f"kinds must be among {', '.join(KINDS)}", param_hint="--kinds")
    config = EngineBenchConfig(prompts=prompts, rounds=rounds, prefill_tokens=prefill_tokens,
                               decode_tokens=decode_tokens, report_dir=report_dir, kinds=chosen)
    with stdout_to_stderr() if as_json else contextlib.nullcontext():
        result = run_engine_bench(_settings(), _model_dir(model), config, quiet=as_json)
    if as_json:
        print(json.dumps(result.summary()))
    else:
        console.print(result.table())


@bench_app.command("vllm")
def bench_vllm(
    prompts: Annotated[int, typer.Option(help="Requests per server.", min=1)] = 48,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once.", min=1)] = 8,
    model: ModelOption = None,
    report_dir: Annotated[Path, typer.Option(help="Where the markdown report and plot go.")] = Path("reports"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """agentstack against a plain `vllm serve` (same adapters and engine settings), by `vllm bench serve`."""
    from agentstack.offline.bench.vllm_compare import VllmBenchConfig, run_vllm_bench

    config = VllmBenchConfig(prompts=prompts, concurrency=concurrency, report_dir=report_dir)
    with stdout_to_stderr() if as_json else contextlib.nullcontext():
        result = run_vllm_bench(_settings(), _model_dir(model), config,
                                progress=lambda line: console.print(line, style="dim"))
    if as_json:
        print(json.dumps(result.summary()))
    elif result.report is not None:
        console.print(result.report.read_text())


@bench_app.command("graph")
def bench_graph(
    runs: Annotated[int, typer.Option(help="Runs per workflow, on fixed inputs.", min=1)] = 4,
    max_rounds: Annotated[int, typer.Option(help="plan_act_reflect's round limit.", min=1, max=5)] = 2,
    report_dir: Annotated[Path, typer.Option(help="Where the markdown report and plot go.")] = Path("reports"),
    actor_role: Annotated[str | None, typer.Option(
        help="Role of plan_act_reflect's actor step (`auto`: the gate routes each actor request).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """End-to-end latency (p50/p99) and prefill/generated tokens per role of the workflows."""
    from agentstack.offline.bench.graph import GraphBenchConfig, run_graph_bench

    config = GraphBenchConfig(runs=runs, max_rounds=max_rounds, report_dir=report_dir, actor_role=actor_role)
    with stdout_to_stderr() if as_json else contextlib.nullcontext():
        result = run_graph_bench(_settings(), config, quiet=as_json)
    if as_json:
        print(json.dumps(result.summary()))
    else:
        console.print(result.table())


ReportDir = Annotated[Path, typer.Option(help="Where the markdown report and plot go.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


@bench_app.command("cache")
def bench_cache(
    prompts: Annotated[int, typer.Option(
        help="BFCL dev prompts served per mode: the trained categories in turn, `multiple` first (200 at most).")] = 8,
    reference_prompts: Annotated[int, typer.Option(help="Of those, how many the PyTorch reference runs.")] = 2,
    min_context_tokens: Annotated[int, typer.Option(
        help="Distractor functions fill each toolbox up to this; 0: the entry's own functions only.")] = 1024,
    served: Annotated[bool, typer.Option(help="Also run the engine in each of the three modes.")] = True,
    report_dir: ReportDir = Path("reports"),
    as_json: JsonFlag = False,
) -> None:
    """The prefix-cache modes side by side on the tool agent: prefill, TTFT, bytes, accuracy, KL."""
    from agentstack.offline.bench.cache import CacheBenchConfig, run_cache_bench

    config = CacheBenchConfig(prompts=prompts, reference_prompts=reference_prompts,
                              min_context_tokens=min_context_tokens, served=served, report_dir=report_dir)
    with stdout_to_stderr() if as_json else contextlib.nullcontext():
        result = run_cache_bench(_settings(), config)
    if as_json:
        print(json.dumps(result.summary()))
    elif result.report is not None:
        console.print(result.report.read_text())


@bench_app.command("low-rank")
def bench_low_rank(
    tokens: Annotated[str, typer.Option(help="Step sizes in tokens, comma-separated.")] = "1,8,64,512,2048",
    slots: Annotated[int, typer.Option(help="Adapter slots in the batch.", min=1)] = 4,
    repeats: Annotated[int, typer.Option(help="Timed calls per case.", min=1)] = 30,
    model: ModelOption = None,
    report_dir: Annotated[Path, typer.Option(help="Where the markdown report and plot go.")] = Path("reports"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Decomposed mode's per-role B eager against compiled (torch.compile, fullgraph)."""
    from agentstack.config import PACKAGE_DATA
    from agentstack.offline.bench.low_rank import LowRankBenchConfig, run_low_rank_bench, write_report
    from cache.adapters import ADAPTER_CONFIG, SharedA, group_by_shared_a

    sizes = tuple(int(t) for t in tokens.split(",") if t.strip())
    packaged = [p for p in (PACKAGE_DATA / "adapters").iterdir() if (p / ADAPTER_CONFIG).is_file()]
    rank = SharedA.of(group_by_shared_a(packaged)[0][0]).rank
    config = LowRankBenchConfig(tokens=sizes, slots=slots, repeats=repeats, report_dir=report_dir)
    with stdout_to_stderr() if as_json else contextlib.nullcontext():
        result = run_low_rank_bench(_model_dir(model), rank, config)
        write_report(result, report_dir)
    if as_json:
        print(json.dumps(result.summary()))
        return
    for row in result.rows:
        console.print(f"{row.tokens:>5} tokens: eager {row.eager_ms:.3f} ms, compiled {row.compiled_ms:.3f} ms "
                      f"({row.speedup:.2f}x), max |Δ| {row.max_abs_diff:.2g}")


@bench_app.command("cache-served", hidden=True)
def bench_cache_served(
    mode: Annotated[str, typer.Argument(help="cache.mode of this engine.")],
    redis_url: Annotated[str, typer.Argument(help="Redis the cache tiers use.")],
    out: Annotated[Path, typer.Argument(help="JSON file the measurements go to.")],
    prompts: Annotated[int, typer.Option(help="BFCL workload prompts.")] = 1,
    min_context_tokens: Annotated[int, typer.Option(help="Toolbox size, BFCL workload.")] = 1024,
    probe: Annotated[str, typer.Option(
        help="Comma-separated roles (packaged names, or name=adapter-dir): the probe workload.")] = "",
    isolate: Annotated[bool, typer.Option(help="One cache salt per role: no sharing.")] = False,
    together: Annotated[bool, typer.Option(help="Probe roles sent at once, not in turn.")] = False,
    context_repeats: Annotated[int, typer.Option(help="Probe context repeated this often.")] = 1,
    ready_file: Annotated[Optional[Path], typer.Option(help="Written once the engine is warm.")] = None,
    wait_file: Annotated[Optional[list[Path]], typer.Option(help="Probe waits for these files.")] = None,
    after_peer_claim: Annotated[bool, typer.Option(help="Probe waits for another engine's in-flight claim.")] = False,
) -> None:
    """One engine in one cache mode, in a process of its own (vLLM's state is per process):
    `bench cache` and the cache tests run one per mode."""
    from agentstack.offline.bench.cache import PeerSync, served_mode

    roles = tuple(r for r in probe.split(",") if r)
    peer = PeerSync(ready=ready_file, wait_for=tuple(wait_file or ()), after_peer_claim=after_peer_claim)
    served_mode(mode, redis_url, out, probe=roles, prompts=prompts,
                min_context_tokens=min_context_tokens, isolate=isolate, together=together,
                context_repeats=context_repeats, peer=peer)


@contextlib.contextmanager
def _bench_server(work_dir: Optional[Path], **env: str) -> Iterator["ServerProcess"]:
    """A fresh `agentstack serve` on loopback with the bench's tenants' keys, stopped after."""
    import tempfile

    from agentstack.offline.bench.server import ServerProcess

    with tempfile.TemporaryDirectory(prefix="agentstack-bench-") as tmp:
        server = ServerProcess(work_dir=work_dir or Path(tmp), env=env).start()
        try:
            yield server
        finally:
            server.stop()


def _emit(summary: dict[str, object], table: str, report: Path, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary))
    else:
        console.print(table)
        console.print(f"report: {report}")


@bench_app.command("fuzz")
def bench_fuzz(
    cases: Annotated[int, typer.Option(help="Requests to send, all phases together.", min=1)] = 1000,
    seed: Annotated[int, typer.Option(help="Generation seed.")] = 0,
    stateful_share: Annotated[float, typer.Option(help="Share of the cases sent as linked sequences.",
                                                  min=0, max=1)] = 0.3,
    report_dir: ReportDir = Path("reports"),
    as_json: JsonFlag = False,
) -> None:
    """Schemathesis over the served OpenAPI schema with all its checks (coverage, fuzzing and
    stateful phases, real ids, the bearer scheme): failures per check, server errors."""
    from rich.progress import Progress

    from agentstack.offline.bench.fuzz import fuzz_table, run_fuzz
    from agentstack.offline.bench.reliability import write_report
    from agentstack.offline.bench.server import TENANT_KEYS

    with stdout_to_stderr() if as_json else contextlib.nullcontext():
        # Small token budgets: the fuzzer's valid requests test the API, not generation speed.
        with _bench_server(None, AGENTSTACK_DEFAULT_MAX_TOKENS="4", AGENTSTACK_MAX_TOKENS_CAP="16") as server:
            with Progress(disable=as_json, transient=True) as progress:
                task = progress.add_task("fuzz", total=cases)
                result = run_fuzz(server.base_url, cases=cases, key=TENANT_KEYS["tenant-a"], seed=seed,
                                  stateful_share=stateful_share, on_case=lambda: progress.advance(task))
        report = write_report(report_dir, "fuzz",
                              f"agentstack bench fuzz --cases {cases} --seed {seed} --stateful-share {stateful_share}",
                              result.summary(), fuzz_table(result),
                              {"cases by phase": {k: float(v) for k, v in result.phases.items()},
                               "failures": {"all checks": float(result.failures),
                                            "server errors": float(result.server_errors)}},
                              [f"- {e.line()}" for e in result.examples])
    _emit(result.summary(), fuzz_table(result), report, as_json)


@bench_app.command("load")
def bench_load(
    duration: Annotated[float, typer.Option("--duration", help="Seconds of measured load.", min=1)] = 120,
    concurrency: Annotated[int, typer.Option(help="Clients sending back to back.", min=1)] = 32,
    report_dir: ReportDir = Path("reports"),
    as_json: JsonFlag = False,
) -> None:
    """Concurrent mixed-role chat requests plus graph runs: failures, p50/p99, RSS growth."""
    from agentstack.offline.bench.reliability import load_table, run_load, write_report
    from agentstack.offline.bench.server import TENANT_KEYS

    with stdout_to_stderr() if as_json else contextlib.nullcontext():
        with _bench_server(None) as server:
            result = asyncio.run(run_load(server.base_url, duration_s=duration, concurrency=concurrency,
                                          key=TENANT_KEYS["tenant-a"], rss=server.rss_bytes, quiet=as_json))
        s = result.summary()
        report = write_report(report_dir, "load", f"agentstack bench load --duration {duration:g} "
                              f"--concurrency {concurrency}", s, load_table(result),
                              {"latency (s)": {"p50": s["p50_s"], "p99": s["p99_s"]},
                               "requests": {"ok": s["requests"] - s["failed"], "failed": s["failed"]},
                               "RSS growth (%)": {"growth": 100 * s["rss_growth"]}},
                              [f"- {e}" for e in result.errors])
    _emit(s, load_table(result), report, as_json)


@bench_app.command("security")
def bench_security(report_dir: ReportDir = Path("reports"), as_json: JsonFlag = False) -> None:
    """Missing, wrong and other tenants' keys (all must be refused) and cross-tenant cache hits."""
    from agentstack.offline.bench.reliability import run_security, security_table, write_report

    with stdout_to_stderr() if as_json else contextlib.nullcontext():
        with _bench_server(None) as server:
            result = asyncio.run(run_security(server.base_url))
        s = result.summary()
        report = write_report(report_dir, "security", "agentstack bench security", s, security_table(result),
                              {"requests": {"attempts": s["attempts"], "refused": s["refused"]},
                               "prefix-cache hit tokens": {"owner": s["owner_cache_hit_tokens"],
                                                           "other tenant": s["cross_tenant_cache_hit_tokens"]}})
    _emit(s, security_table(result), report, as_json)


@bench_app.command("faults")
def bench_faults(
    load_duration: Annotated[float, typer.Option(help="Seconds of chat load around the Redis outage.")] = 60,
    outage: Annotated[float, typer.Option(help="Seconds Redis stays down.")] = 10,
    concurrency: Annotated[int, typer.Option(help="Chat clients during the outage.", min=1)] = 8,
    report_dir: ReportDir = Path("reports"),
    as_json: JsonFlag = False,
) -> None:
    """Inject each fault under load: Redis outage, client disconnects, bad adapters, SIGTERM, engine death."""
    from agentstack.offline.bench.reliability import (
        FaultsResult,
        bad_adapters,
        client_disconnects,
        engine_death,
        faults_table,
        graceful_drain,
        redis_outage,
        write_report,
    )

    result = FaultsResult()
    with stdout_to_stderr() if as_json else contextlib.nullcontext():
        with _bench_server(None) as server:
            result.rows.append(asyncio.run(redis_outage(server, load_s=load_duration, outage_s=outage,
                                                        concurrency=concurrency)))
            result.rows.append(asyncio.run(client_disconnects(server)))
            result.rows.append(asyncio.run(bad_adapters(server)))
            result.rows.append(asyncio.run(graceful_drain(server)))
        with _bench_server(None) as server:
            result.rows.append(asyncio.run(engine_death(server)))
        report = write_report(report_dir, "faults", f"agentstack bench faults --load-duration {load_duration:g} "
                              f"--outage {outage:g} --concurrency {concurrency}", result.summary(),
                              faults_table(result),
                              {"failed requests": {r.fault[:18]: r.failed for r in result.rows},
                               "recovery (s)": {r.fault[:18]: r.recovery_s or 0.0 for r in result.rows}})
    _emit(result.summary(), faults_table(result), report, as_json)



@bench_app.command("replicas")
def bench_replicas(
    duration: Annotated[float, typer.Option("--duration", help="Seconds of mixed load.", min=10)] = 90,
    kill_at: Annotated[float, typer.Option(help="Seconds into the load when one replica is SIGKILLed.")] = 25,
    lease: Annotated[float, typer.Option(help="Run lease of both replicas (seconds).", min=1)] = 5,
    report_dir: ReportDir = Path("reports"),
    as_json: JsonFlag = False,
) -> None:
    """Two servers on one Redis under chat and graph load, one killed and restarted: lost
    runs and checkpoints, orphan settling, adapter convergence, cross-replica cache hits."""
    import tempfile

    from agentstack.offline.bench.reliability import write_report
    from agentstack.offline.bench.replicas import replicas_table, run_replicas

    with stdout_to_stderr() if as_json else contextlib.nullcontext():
        with tempfile.TemporaryDirectory(prefix="agentstack-replicas-") as work:
            result = asyncio.run(run_replicas(Path(work), duration_s=duration, kill_at_s=kill_at, lease_s=lease,
                                              on_progress=lambda line: console.print(f"[dim]{line}[/]")))
        s = result.summary()
        report = write_report(report_dir, "replicas", f"agentstack bench replicas --duration {duration:g} "
                              f"--kill-at {kill_at:g} --lease {lease:g}", s, replicas_table(result),
                              {"requests": {"ok": s["requests"] - s["failed"], "failed": s["failed"],
                                            "in flight on killed": s["failed_in_flight_on_killed"]},
                               "lost": {"runs": s["runs_lost"], "checkpoints": s["checkpoints_lost"]},
                               "seconds": {"orphans settled": s["orphans_settled_s"] or 0.0,
                                           "adapter converged": s["adapter_converge_s"] or 0.0}},
                              [f"- {e}" for e in result.errors])
    _emit(s, replicas_table(result), report, as_json)

ToolRoleArgument = Annotated[str, typer.Argument(help="Tool role: selector, arguments or single.")]


def _tool_role(name: str) -> "ToolRole":
    from agentstack.offline.bfcl.training_data import ToolRole

    try:
        return ToolRole(name)
    except ValueError:
        console.print(f"[red]unknown role {name!r}[/]; choose from: {', '.join(r.value for r in ToolRole)}")
        raise typer.Exit(2) from None


@adapters_app.command("data")
def adapters_data(
    role: ToolRoleArgument,
    out: Annotated[Path, typer.Option(help="JSONL file to write.")],
) -> None:
    """Write a tool role's training chats from the train split of BFCL's trained categories,
    and show their mix: shares answering `none`, masked and long, per listing size."""
    from agentstack.offline.bfcl.training_data import role_mix, write_role_data

    tool_role = _tool_role(role)
    count = write_role_data(tool_role, out)
    console.print(f"{count} examples -> {out}")
    table = Table("listing", "examples", "none", "masked", "long toolbox", title=f"{tool_role.value} data mix")
    for row in role_mix(tool_role):
        shares = [f"{n / row.examples:.1%}" if row.examples else "-" for n in (row.none, row.masked, row.long_toolbox)]
        table.add_row(row.bucket, str(row.examples), *shares)
    console.print(table)


@adapters_app.command("train")
def adapters_train(
    role: ToolRoleArgument,
    data: Annotated[Path, typer.Option(help='JSONL chats, one {"messages": [...]} per line.')],
    out: Annotated[Path, typer.Option(help="Adapter directory to write (resumes from its checkpoint).")],
    shared_v_a_from: Annotated[Optional[Path], typer.Option(
        help="Reference adapter whose v_proj lora_A is frozen into this one (all roles but the first).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Optimizer steps; default one pass over the data.")] = None,
    model: ModelOption = None,
) -> None:
    """Train one role adapter with loss on the assistant replies only."""
    from agentstack.offline.training.lora import train_lora
    from agentstack.offline.training.recipes import role_spec

    spec = role_spec(_tool_role(role), _model_dir(model), data, out, shared_v_a_from)
    if steps is not None:
        spec = spec.model_copy(update={"steps": steps})
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = train_lora(spec)
    console.print(f"{role}: {result.steps} steps, final loss {result.final_loss:.4f}, "
                  f"{result.seconds:.0f} s -> {result.out_dir}")


def _model_dir(model: Optional[Path]) -> Path:
    from agentstack.model_prep import prepare

    settings = _settings(model=model)
    return settings.model or prepare(settings.models_dir).path


@adapters_app.command("build")
def adapters_build(
    out_root: Annotated[Path, typer.Option(help="Where the role adapters go.")] = Path("agentstack/data/adapters"),
    data_dir: Annotated[Path, typer.Option(help="Where the training chats go.")] = Path("build/adapter-data"),
    family_a_from: Annotated[Path | None, typer.Option(
        help="Adapter whose v_proj lora_A every role freezes (the shipped family's by default).")] = None,
    new_family: Annotated[bool, typer.Option(
        help="Train a new v_proj lora_A with the selector instead (roles on the old A leave the family).")] = False,
    model: ModelOption = None,
) -> None:
    """Rebuild the shipped tool roles: data, then selector, arguments and single on the family's A."""
    from agentstack.offline.training.recipes import FAMILY_A_FROM, build_tool_adapters

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    shared = None if new_family else (family_a_from or FAMILY_A_FROM)
    for result in build_tool_adapters(_model_dir(model), out_root, data_dir, shared):
        _print_trained(result)


@adapters_app.command("reasoner")
def adapters_reasoner(
    out_root: Annotated[Path, typer.Option(help="Where the role adapters go.")] = Path("agentstack/data/adapters"),
    data_dir: Annotated[Path, typer.Option(help="Where the training chats go.")] = Path("build/adapter-data"),
    model: ModelOption = None,
) -> None:
    """Train the `reasoner` role (think path) on generated worked arithmetic, on the selector's A."""
    from agentstack.offline.training.recipes import build_reasoner_adapter

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _print_trained(build_reasoner_adapter(_model_dir(model), out_root, data_dir))


def _print_trained(result: TrainResult) -> None:
    console.print(f"{result.out_dir.name}: {result.steps} steps, loss {result.final_loss:.4f}, "
                  f"{result.seconds:.0f} s")


@eval_app.command("bfcl")
def eval_bfcl(
    category: Annotated[list[str], typer.Option(
        help="BFCL single-turn category; repeat for several. Trained ones use their dev split.")],
    mode: Annotated[list[str], typer.Option(help="base, single or roles; repeat for several.")] = ["roles"],
    limit: Annotated[Optional[int], typer.Option(help="First N examples of each category.")] = None,
    concurrency: Annotated[int, typer.Option(help="Examples in flight at once.")] = 8,
    shuffle: Annotated[Optional[int], typer.Option(
        help="List each example's functions in an order shuffled with this seed.")] = None,
    rotate: Annotated[bool, typer.Option(
        help="Ask each example once per rotation of its listing, so the same questions have their "
             "right function at every position (the spread is then the position's alone).")] = False,
    toolbox: Annotated[Optional[int], typer.Option(
        help="List each example's functions among distractors, up to this many listing tokens.", min=1)] = None,
    guided: Annotated[bool, typer.Option(
        help="Hold single and roles to their answer formats, as model tool-calling serves them.")] = True,
    shortlist: Annotated[Optional[int], typer.Option(
        help="Single and roles read at most this many functions of a longer listing, the most relevant "
             "to the request, ranked, as model tool-calling serves them; 0: every listing as given. "
             "Unset: the served size (AGENTSTACK_TOOL_SHORTLIST_SIZE, else 3).", min=0)] = None,
    report_dir: Annotated[Path, typer.Option(help="Where the markdown report and plot go.")] = Path("reports"),
    roles: RolesOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per category and mode.")] = False,
) -> None:
    """AST accuracy on BFCL through the serving engine, scored by bfcl-eval's checker; the
    report is rewritten as each category and mode finishes."""
    from agentstack.chat.tool_shortlist import configured_size
    from agentstack.offline.bfcl.dataset import UnknownCategory, load_category
    from agentstack.offline.bfcl.evaluate import EvalConfig, EvalMode, evaluate, write_report

    try:
        modes = tuple(EvalMode(m) for m in mode)
        for name in category:
            load_category(name)
    except (ValueError, UnknownCategory) as e:
        console.print(f"[red]{e}[/]")
        raise typer.Exit(2) from None
    settings = _settings(roles_file=roles)
    config = EvalConfig(categories=tuple(category), modes=modes, limit=limit, concurrency=concurrency,
                        shuffle_seed=shuffle, rotate=rotate, toolbox_tokens=toolbox, guided=guided,
                        shortlist=configured_size(settings.tool_shortlist_size if shortlist is None else shortlist))
    with stdout_to_stderr() if as_json else contextlib.nullcontext():
        scores = asyncio.run(_run_with_service(settings, lambda service: evaluate(
            service, config, quiet=as_json, on_score=lambda so_far: write_report(so_far, report_dir))))
        report, plot = write_report(scores, report_dir)
    if as_json:
        for score in scores:
            print(json.dumps(score.summary()))
        return
    table = Table("category", "mode", "listing", "correct", "accuracy", "position spread", "generated tokens",
                  "wall s", title="BFCL AST accuracy")
    for score in scores:
        spread = f"{score.position_spread:.0%}" if score.position_spread is not None else "-"
        table.add_row(score.category, score.mode.value, score.listing, f"{score.correct}/{score.n}",
                      f"{score.accuracy:.1%}", spread, str(score.generated_tokens), f"{score.wall_s:.1f}")
    console.print(table)
    console.print(f"report: {report}  plot: {plot}")


@gate_app.command("train")
def gate_train(
    out: Annotated[Path, typer.Option(help="Gate directory to write.")] = Path("agentstack/data/gate"),
    outcomes: Annotated[Optional[Path], typer.Option(
        help="Measured outcomes to train from; default <out>/outcomes-train.jsonl.")] = None,
    measure: Annotated[bool, typer.Option(
        help="Measure every action on every training prompt on the engine first (the labels).")] = True,
    layer: Annotated[Optional[int], typer.Option(help="Decoder layers the features run (default 4).")] = None,
    max_k: Annotated[int, typer.Option(help=(
        "Largest role set measured (and mixed) per prompt; k is then selected on validation among 1..max-k."))] = 2,
    per_kind: Annotated[Optional[int], typer.Option(help="Measure only the first N prompts of each kind.")] = None,
    samples: Annotated[int, typer.Option(min=0, help=(
        "Sampled runs per action besides the greedy one (soft labels: P(correct) per action)."))] = 0,
    temperature: Annotated[float, typer.Option(min=0.0, help="Sampling temperature of those runs.")] = 0.7,
    lam: Annotated[Optional[float], typer.Option(min=0.0, help=(
        "Token price of the reward correct - lam * tokens, fixed (else selected on validation from --lambdas)."))
    ] = None,
    lambdas: Annotated[Optional[str], typer.Option(help=(
        "Comma-separated token prices to select lam from on validation (default: a small grid from 0 to 0.002)."))
    ] = None,
    pooling: Annotated[str, typer.Option(help="Feature pooling over the prompt: mean, last or mean+last.")] = "mean",
) -> None:
    """Measure every action on the training prompts on the engine, then train the gate's policy."""
    from routers.features import POOLINGS
    from routers.offline.commands import (
        GATE_ENGINE_SETTINGS,
        OUTCOMES_FILE,
        measure_train,
        parse_lambdas,
        train_from_outcomes,
    )

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    chosen_pooling = next((p for p in POOLINGS if p == pooling), None)
    if chosen_pooling is None:
        raise typer.BadParameter(f"choose one of {', '.join(POOLINGS)}", param_hint="--pooling")
    if lam is not None and lambdas is not None:
        raise typer.BadParameter("give --lam or --lambdas, not both", param_hint="--lam")
    if samples and temperature <= 0:
        raise typer.BadParameter("sampled runs need a temperature > 0", param_hint="--temperature")
    try:
        prices = (lam,) if lam is not None else parse_lambdas(lambdas) if lambdas is not None else None
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--lambdas") from e
    outcomes = outcomes or out / OUTCOMES_FILE
    settings = _settings(**{**GATE_ENGINE_SETTINGS, "max_lora_rank": 16 * max_k})
    if measure:
        table = asyncio.run(_run_with_service(settings, lambda service: measure_train(
            service, outcomes, show=True, max_k=max_k, per_kind=per_kind, samples=samples,
            temperature=temperature)))
        console.print(f"{len(table)} prompts measured, think helps on {sum(r.think_label for r in table)} "
                      f"-> {outcomes}")
    extra = {"layer": layer} if layer is not None else {}
    info = train_from_outcomes(outcomes, _model_dir(None), out, settings.served_model_name, show=True,
                               pooling=chosen_pooling, lambdas=prices, **extra)
    console.print_json(data=info)


@eval_app.command("gate")
def eval_gate(
    gate_dir: Annotated[Path, typer.Option("--gate", help="Gate directory.")] = Path("agentstack/data/gate"),
    report_dir: Annotated[Path, typer.Option(help="Where the markdown report and plots go.")] = Path("reports"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    per_kind: Annotated[Optional[int], typer.Option(help="Only the first N held-out prompts of each kind.")] = None,
    task_set: Annotated[str, typer.Option("--set", help=(
        "heldout: in-template and out-of-template prompts; test: the earlier in-template test prompts."))
    ] = "heldout",
    rule_from: Annotated[Optional[Path], typer.Option(help=(
        "Training outcome table the per-kind rule is chosen on; default <gate>/outcomes-train.jsonl "
        "when it exists, else the rule is left out."))] = None,
) -> None:
    """The gate vs every baseline (fixed role x path, per-kind rule, always/never think, random, oracle)."""
    from routers.offline.commands import (
        EVAL_SETS,
        GATE_ENGINE_SETTINGS,
        OUTCOMES_FILE,
        evaluate_gate,
    )
    from routers.offline.evaluate import result_json
    from routers.offline.report import write_report

    chosen = next((name for name in EVAL_SETS if name == task_set), None)
    if chosen is None:
        raise typer.BadParameter(f"choose one of {', '.join(EVAL_SETS)}", param_hint="--set")
    default_rule = gate_dir / OUTCOMES_FILE
    rule_from = rule_from or (default_rule if default_rule.exists() else None)
    command = "agentstack eval gate" + (f" --set {task_set}" if task_set != "heldout" else "") + (
        f" --per-kind {per_kind}" if per_kind else "")
    settings = _settings(**GATE_ENGINE_SETTINGS)
    with stdout_to_stderr() if as_json else contextlib.nullcontext():
        result = asyncio.run(_run_with_service(settings, lambda service: evaluate_gate(
            service, gate_dir, show=not as_json, per_kind=per_kind, task_set=chosen, rule_from=rule_from)))
        files = write_report(report_dir, result.policies, result.supervised, result.overhead, result.table,
                             result.gate_info, command, rule=result.rule,
                             rule_source=rule_from.name if rule_from else None)
    summary = result_json(result.policies, result.overhead)
    if as_json:
        print(json.dumps(summary))
        return
    table = Table("policy", "accuracy ± s.e.", "reasoning tokens", "generated tokens", title="eval gate")
    for p in [result.policies[0], result.supervised, *result.policies[1:]]:
        table.add_row(p.policy, f"{p.accuracy:.3f} ± {p.stderr:.3f}", str(p.reasoning_tokens),
                      str(p.generated_tokens))
    console.print(table)
    paired = summary["gate_vs_always_think"]
    console.print(f"gate vs always-think (McNemar exact): gate alone right {paired['gate_only']}, "
                  f"always-think alone {paired['always_think_only']}, p = {paired['p_value']:.4f}")
    console.print(f"gate overhead share of median latency: {summary['gate_overhead_share']:.2%}")
    console.print(f"report: {files.report}  plots: {', '.join(str(p) for p in files.plots)}")


async def _run_with_service(settings: Settings, work: Callable[["Service"], Awaitable[T]]) -> T:
    from agentstack.service import Service

    service = Service(settings)
    await service.start()
    try:
        return await work(service)
    finally:
        await service.stop()


if __name__ == "__main__":
    app()
