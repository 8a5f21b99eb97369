"""`agentstack bench vllm`: agentstack against a plain `vllm serve`, measured by vLLM's own client.

Both servers run the same engine settings (`Engine.engine_args`) and the same role
adapters; `vllm bench serve` drives each with the random dataset, mixed LoRA names
(`--lora-modules`: every request names one role at random) and a fixed concurrency, and
reports throughput and time to first token exactly as it does for any vLLM deployment.
One server runs at a time. Four sides:

- plain vLLM, its own LoRA ops (the package's plugin switched off): stock vLLM;
- agentstack with the grouped ops off: what the service costs over vLLM (target: within 5%);
- agentstack as shipped (grouped ops on);
- plain vLLM with the grouped ops, which every engine in this environment gets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agentstack.config import PACKAGE_DATA, Settings
from agentstack.engine import Engine
from agentstack.offline.bench.report import grouped_bar_chart, markdown_table
from agentstack.offline.bench.server import ADMIN_KEY, ServerProcess
from agentstack.redis_server import free_port
from agentstack.vllm_ext.plugin import ENABLE_ENV

ROLES = ("selector", "arguments", "single")
SIDES = {
    "vllm_stock": ("plain vLLM", "vllm", False),
    "agentstack_stock": ("agentstack, vLLM's LoRA ops", "agentstack", False),
    "agentstack": ("agentstack", "agentstack", True),
    "vllm_grouped": ("plain vLLM + grouped ops", "vllm", True),
}
START_TIMEOUT_S = 600


@dataclass(frozen=True, slots=True)
class VllmBenchConfig:
    prompts: int = 48
    concurrency: int = 8
    input_len: int = 256
    output_len: int = 32
    report_dir: Path = Path("reports")


@dataclass(slots=True)
class VllmBenchResult:
    config: VllmBenchConfig
    sides: dict[str, dict[str, float]] = field(default_factory=dict)
    report: Path | None = None
    plot: Path | None = None

    def summary(self) -> dict[str, Any]:
        s = self.sides

        def ratio(a: str, b: str, key: str) -> float:
            return round(s[a][key] / s[b][key], 3) if s.get(a) and s.get(b) and s[b][key] else 0.0

        return {
            "sides": s,
            "ratios": {
                "agentstack_stock_vs_vllm_throughput": ratio("agentstack_stock", "vllm_stock", "output_throughput"),
                "agentstack_stock_vs_vllm_ttft_median": ratio("agentstack_stock", "vllm_stock", "median_ttft_ms"),
                "agentstack_vs_vllm_throughput": ratio("agentstack", "vllm_stock", "output_throughput"),
                "grouped_vs_stock_throughput_agentstack": ratio("agentstack", "agentstack_stock", "output_throughput"),
                "grouped_vs_stock_throughput_vllm": ratio("vllm_grouped", "vllm_stock", "output_throughput"),
            },
            "config": {"prompts": self.config.prompts, "concurrency": self.config.concurrency,
                       "input_len": self.config.input_len, "output_len": self.config.output_len,
                       "lora_modules": list(ROLES)},
            "report": str(self.report) if self.report else None,
            "plot": str(self.plot) if self.plot else None,
        }


def vllm_serve_args(engine_args: dict[str, Any], port: int) -> list[str]:
    """`vllm serve` flags for the engine arguments agentstack builds its engine with."""
    args = ["serve", str(engine_args["model"]), "--host", "127.0.0.1", "--port", str(port)]
    for key, value in engine_args.items():
        if key in ("model", "disable_log_stats") or value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif isinstance(value, list):
            args += [flag, *map(str, value)]
        elif value is not False:
            args += [flag, str(value)]
    args += ["--lora-modules", *(f"{role}={PACKAGE_DATA / 'adapters' / role}" for role in ROLES)]
    return args


@contextmanager
def _plain_vllm(settings: Settings, model_dir: Path, grouped: bool, log: Path) -> Iterator[str]:
    engine = Engine(settings, model_dir)
    engine_args = engine.engine_args()
    port = free_port()
    env = {**os.environ, **engine.engine_env(), ENABLE_ENV: "1" if grouped else "0"}
    vllm = Path(sys.executable).with_name("vllm")
    with log.open("ab") as out:
        process = subprocess.Popen([str(vllm), *vllm_serve_args(engine_args, port)], env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {process.returncode}; log: {log}")
            try:
                if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            raise RuntimeError(f"vllm serve not ready in {START_TIMEOUT_S} s; log: {log}")
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def _agentstack(model_dir: Path, grouped: bool, work_dir: Path) -> Iterator[str]:
    server = ServerProcess(work_dir=work_dir, env={"AGENTSTACK_MODEL": str(model_dir),
                                                   "AGENTSTACK_GROUPED_LORA": "1" if grouped else "0"})
    server.start()
    try:
        yield server.base_url
    finally:
        server.stop()


def run_client(base_url: str, settings: Settings, model_dir: Path, config: VllmBenchConfig,
               result_dir: Path, name: str) -> dict[str, float]:
    """One `vllm bench serve` run; returns its saved metrics."""
    vllm = Path(sys.executable).with_name("vllm")
    command = [
        str(vllm), "bench", "serve", "--backend", "openai", "--base-url", base_url,
        "--endpoint", "/v1/completions", "--model", settings.served_model_name,
        "--tokenizer", str(model_dir), "--dataset-name", "random",
        "--random-input-len", str(config.input_len), "--random-output-len", str(config.output_len),
        "--num-prompts", str(config.prompts), "--max-concurrency", str(config.concurrency),
        "--lora-modules", *ROLES, "--ignore-eos", "--seed", "0", "--disable-tqdm",
        "--save-result", "--result-dir", str(result_dir), "--result-filename", f"{name}.json",
    ]
    env = {**os.environ, "OPENAI_API_KEY": ADMIN_KEY}
    with (result_dir / f"{name}.client.log").open("wb") as out:
        subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=3600)
    raw = json.loads((result_dir / f"{name}.json").read_text())
    keys = ("completed", "output_throughput", "request_throughput", "mean_ttft_ms", "median_ttft_ms",
            "p99_ttft_ms", "median_tpot_ms", "duration")
    return {k: round(float(raw[k]), 3) for k in keys if k in raw}


def run_vllm_bench(settings: Settings, model_dir: Path, config: VllmBenchConfig,
                   progress: Any = print) -> VllmBenchResult:
    result = VllmBenchResult(config=config)
    out = config.report_dir / "bench-vllm"
    out.mkdir(parents=True, exist_ok=True)
    settings = settings.model_copy(update={"kv_cache_space_gib": 1})  # as ServerProcess serves
    with tempfile.TemporaryDirectory(prefix="agentstack-bench-vllm-") as tmp:
        for name, (title, server, grouped) in SIDES.items():
            progress(f"bench vllm: {title}")
            if server == "vllm":
                context = _plain_vllm(settings, model_dir, grouped, out / f"{name}.server.log")
            else:
                context = _agentstack(model_dir, grouped, Path(tmp) / name)
            with context as base_url:
                result.sides[name] = run_client(base_url, settings, model_dir, config, out, name)
    write_report(result)
    return result


def write_report(result: VllmBenchResult) -> None:
    s = result.summary()
    c = result.config
    out = c.report_dir
    result.plot = grouped_bar_chart(out / "bench-vllm.png", "vllm bench serve: agentstack vs plain vLLM", {
        "output tok/s": {SIDES[k][0]: v["output_throughput"] for k, v in s["sides"].items()},
        "median TTFT (s)": {SIDES[k][0]: v["median_ttft_ms"] / 1000 for k, v in s["sides"].items()},
    })
    rows = [[SIDES[k][0], int(v.get("completed", 0)), round(v["output_throughput"], 1),
             round(v["median_ttft_ms"] / 1000, 2), round(v.get("p99_ttft_ms", 0.0) / 1000, 2),
             round(v.get("median_tpot_ms", 0.0), 1)] for k, v in s["sides"].items()]
    r = s["ratios"]
    text = "\n".join([
        "# bench vllm",
        "",
        f"Command: `agentstack bench vllm --prompts {c.prompts} --concurrency {c.concurrency}` "
        f"(client: `vllm bench serve`, random dataset, {c.input_len} tokens in, {c.output_len} out, "
        f"`--lora-modules {' '.join(ROLES)}`, `--ignore-eos`).",
        "",
        markdown_table(["server", "completed", "output tok/s", "median TTFT s", "p99 TTFT s",
                        "median TPOT ms"], rows),
        "",
        f"agentstack (vLLM's LoRA ops) / plain vLLM: throughput **{r['agentstack_stock_vs_vllm_throughput']}**, "
        f"median TTFT {r['agentstack_stock_vs_vllm_ttft_median']} (target: within 5%).",
        f"Grouped ops on top: agentstack {r['grouped_vs_stock_throughput_agentstack']}x, "
        f"plain vLLM {r['grouped_vs_stock_throughput_vllm']}x output throughput.",
        "",
        "![bench vllm](bench-vllm.png)",
        "",
    ])
    result.report = out / "bench-vllm.md"
    result.report.write_text(text)
