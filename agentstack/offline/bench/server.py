"""A real `agentstack serve` process on loopback, for the benchmarks that must stop,
restart or kill its parts (Redis, the engine) from outside, and measure its memory."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from agentstack.redis_server import EmbeddedRedis, free_port

START_TIMEOUT_S = 600
TENANT_KEYS = {name: f"sk-bench-{name}-{secrets.token_hex(12)}" for name in ("tenant-a", "tenant-b")}
ADMIN_KEY = f"sk-bench-admin-{secrets.token_hex(12)}"
"""Fresh per process: a bench writes them into its server's key file, so no key a bench
uses is ever fixed in the package."""
RESTRICTED_ROLES = ("assistant", "selector", "auto")


def write_key_file(path: Path) -> Path:
    """Two tenants and an admin. tenant-b may use only a few roles and one graph."""
    a, b = TENANT_KEYS["tenant-a"], TENANT_KEYS["tenant-b"]
    path.write_text(
        "keys:\n"
        f"  - {{name: tenant-a, key: {a}}}\n"
        f"  - {{name: tenant-b, key: {b}, roles: [{', '.join(RESTRICTED_ROLES)}], graphs: [tool_agent]}}\n"
        f"  - {{name: admin, key: {ADMIN_KEY}, admin: true}}\n"
    )
    return path


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class ServerProcess:
    """`agentstack serve` with its own embedded Redis (so a bench can stop and restart it),
    or on a Redis given by URL that several servers share (replicas)."""

    work_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    redis_url: str | None = None
    redis: EmbeddedRedis | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "server.log"

    def start(self) -> ServerProcess:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.redis_url is None:
            self.redis = EmbeddedRedis(self.work_dir / "redis").start()
        keys = write_key_file(self.work_dir / "api-keys.yaml")
        env = {
            **os.environ,
            "AGENTSTACK_HOST": "127.0.0.1",
            "AGENTSTACK_PORT": str(self.port),
            "AGENTSTACK_REDIS_URL": self.redis_url or self.redis.url,  # type: ignore[union-attr]
            "AGENTSTACK_API_KEYS_FILE": str(keys),
            "AGENTSTACK_ADAPTERS_ROOT": str(self.adapters_root),
            "AGENTSTACK_KV_CACHE_SPACE_GIB": "1",
            **self.env,
        }
        self.adapters_root.mkdir(exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "agentstack.cli", "serve"], env=env,
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.ready():
                return self
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"server not ready in {START_TIMEOUT_S} s:\n{self.log_tail()}")

    @property
    def adapters_root(self) -> Path:
        return self.work_dir / "adapters"

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def rss_bytes(self) -> int:
        """Resident memory of the server and its children (the engine core process)."""
        assert self.process is not None
        root = psutil.Process(self.process.pid)
        total = 0
        for proc in [root, *root.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def engine_core(self) -> psutil.Process:
        assert self.process is not None
        children = psutil.Process(self.process.pid).children(recursive=True)
        cores = [c for c in children if "EngineCor" in " ".join(c.cmdline()) + c.name()]
        if cores:
            return cores[0]
        if not children:
            raise RuntimeError("the server has no child processes")
        return max(children, key=lambda c: c.memory_info().rss)

    def terminate(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL, as a node failure or the OOM killer ends a server."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def wait(self, timeout_s: float = 120) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def stop(self) -> int | None:
        code = None
        if self.process is not None and self.process.poll() is None:
            self.terminate()
            code = self.wait(60)
        elif self.process is not None:
            code = self.process.returncode
        if self.redis is not None:
            self.redis.stop()
        return code

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
