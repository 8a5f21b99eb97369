"""Shared fixtures: the prepared model, a real Redis process, and a live `agentstack serve`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from agentstack.config import PACKAGE_DATA, Settings
from agentstack.model_prep import prepare
from agentstack.redis_server import EmbeddedRedis, free_port

SHIPPED_ADAPTERS = PACKAGE_DATA / "adapters"
TOOL_QUESTION = "What's the weather in Paris right now?"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name."}},
            "required": ["city"],
        },
    },
}
CURRENCY_TOOL = {
    "type": "function",
    "function": {
        "name": "convert_currency",
        "description": "Convert an amount of money from one currency to another.",
        "parameters": {
            "type": "object",
            "properties": {"amount": {"type": "number"}, "source": {"type": "string"},
                           "target": {"type": "string"}},
            "required": ["amount", "source", "target"],
        },
    },
}
TOOLS = [CURRENCY_TOOL, WEATHER_TOOL]
SERVER_START_TIMEOUT_S = 420


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return prepare(Settings().models_dir).path


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def adapters_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run-time adapters root holding a copy of a shipped adapter, to load through the API,
    and a copy with MLP weights too (projections the engine does not wrap for LoRA)."""
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("adapters")
    shutil.copytree(SHIPPED_ADAPTERS / "selector", root / "selector-copy")
    shutil.copytree(SHIPPED_ADAPTERS / "selector", root / "selector-mlp")
    weights = root / "selector-mlp" / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    a = next(t for k, t in tensors.items() if k.endswith("q_proj.lora_A.weight"))
    tensors["base_model.model.model.layers.0.mlp.gate_proj.lora_A.weight"] = a.clone()
    tensors["base_model.model.model.layers.0.mlp.gate_proj.lora_B.weight"] = a.new_zeros(1536, a.shape[0])
    save_file(tensors, str(weights))
    return root


@dataclass
class LiveServer:
    """A real `agentstack serve` process on a loopback port."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        env = {**os.environ, **self.env, "AGENTSTACK_PORT": str(self.port)}
        try:
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "agentstack.cli", "serve"], env=env, stdout=log,
                    stderr=subprocess.STDOUT,
                )
            self._wait_ready()
        except BaseException:
            # Not ready, or the test's timeout struck while waiting: no server outlives it.
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError(f"server not ready in {SERVER_START_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return None
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def kill(self) -> None:
        """SIGKILL, as a node failure or the OOM killer ends a server: nothing is cleaned up."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def server_env(model_dir: Path, redis_url: str, adapters_root: Path, cache_dir: Path) -> dict[str, str]:
    return {
        "AGENTSTACK_MODEL": str(model_dir),
        "AGENTSTACK_REDIS_URL": redis_url,
        "AGENTSTACK_ADAPTERS_ROOT": str(adapters_root),
        "AGENTSTACK_CACHE_DIR": str(cache_dir),
        "AGENTSTACK_KV_CACHE_SPACE_GIB": "1",
        "AGENTSTACK_MAX_TOKENS_CAP": "512",
        "AGENTSTACK_MAX_BODY_BYTES": "200000",
    }


@pytest.fixture(scope="session")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path, redis_server: EmbeddedRedis, adapters_root: Path
) -> Iterator[LiveServer]:
    cache_dir = tmp_path_factory.mktemp("cache")
    env = server_env(model_dir, redis_server.url, adapters_root, cache_dir)
    env["AGENTSTACK_REDIS_PREFIX"] = "session"
    server = LiveServer(env=env, log_path=cache_dir / "server.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def base_url(live_server: LiveServer) -> str:
    return live_server.base_url


def selector_chat() -> list[dict[str, str]]:
    """The tool context the selector role reads for TOOL_QUESTION."""
    from agentstack.chat.tool_prompts import selector_messages

    return selector_messages([{"role": "user", "content": TOOL_QUESTION}], TOOLS)


def names_one_function(text: str) -> bool:
    """The selector role's reply shape: exactly one of the listed function names, nothing else.
    (Which one it picks is measured by `agentstack eval bfcl`, not asserted here.)"""
    from agentstack.chat.tool_prompts import parse_selection

    return len(parse_selection(text, TOOLS)) == 1 and text.strip() in {"get_weather", "convert_currency"}
