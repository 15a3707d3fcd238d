"""The system under test: a throwaway instance with its own database, Redis, web and workers.

Everything runs as it does in production (`Procfile`): gunicorn with `gunicorn.conf.py` for the
web, `python -m worker` for the workers, each a separate process. The bench process itself only
prepares data (through the app's own services) and reads the results.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# What every process of the instance sees. Rate limits stay on (their Redis round trip is part
# of every request) but high enough never to refuse the load; the watchdog and prune stay out of
# the way of the measurements.
BENCH_ENV = {
    "SECRET_KEY": "bench-secret",
    "RATE_LIMIT_POLL": "10000000/minute",
    "RATE_LIMIT_DEFAULT": "10000000/minute",
    "RATE_LIMIT_WRITE": "10000000/minute",
    "WATCHDOG_INTERVAL": "3600",
    "PRUNE_INTERVAL": "86400",
    "WEBHOOK_ALLOWED_CIDRS": "127.0.0.0/8",
    "OPENAI_API_KEY": "",
    # Several workers at once: none serves a metrics port (they still record their metrics).
    "WORKER_METRICS_PORT": "0",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def rss_mb(pid: int) -> float:
    """Resident set size of one process, in MB (VmRSS from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def rss_mb_safe(pid: int) -> float:
    """rss_mb, or 0 for a process that has gone."""
    try:
        return rss_mb(pid)
    except (OSError, RuntimeError):
        return 0.0


def children(pid: int) -> list[int]:
    """Direct child processes of `pid` (gunicorn's workers under its master)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@dataclass
class Process:
    name: str
    role: str
    proc: subprocess.Popen
    log: Path

    def rss_mb(self) -> float:
        """Resident size of the process; for gunicorn, of its largest worker (not the master)."""
        gunicorn = self.role in ("web", "bare")
        pids = children(self.proc.pid) if gunicorn else [self.proc.pid]
        return max((rss_mb_safe(pid) for pid in pids), default=0.0)

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Stack:
    """One instance: a work directory, its environment, and the processes started in it."""

    workdir: Path
    env: dict[str, str]
    processes: list[Process] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    # The largest resident size seen per role, sampled when a process is stopped.
    peak_rss: dict[str, float] = field(default_factory=dict)

    def spawn(self, name: str, argv: list[str], role: str = "", **extra_env: str) -> Process:
        log = self.workdir / f"{name}.log"
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**self.env, **extra_env},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process = Process(name, role or name, proc, log)
        self.processes.append(process)
        return process

    def gunicorn(self, name: str, app: str, port: int, **extra_env: str) -> Process:
        """`gunicorn <app> -c gunicorn.conf.py` on 127.0.0.1:port, as the Procfile runs it."""
        argv = [str(BIN / "gunicorn"), app, "-c", "gunicorn.conf.py"]
        role = "web" if app == "wsgi:app" else "bare"
        process = self.spawn(name, argv, role, HOST="127.0.0.1", PORT=str(port), **extra_env)
        wait_for_http(f"http://127.0.0.1:{port}/healthz", proc=process.proc)
        return process

    def worker(self, name: str, role: str = "worker", **extra_env: str) -> Process:
        """`python -m worker`, as the Procfile runs it, registered with RQ before returning."""
        argv = [sys.executable, "-m", "worker", "--name", name]
        process = self.spawn(name, argv, role, **extra_env)
        from rq import Worker

        from webapp.queues import get_redis

        deadline = time.monotonic() + 60
        while not any(w.name == name for w in Worker.all(connection=get_redis())):
            if process.proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited; see {process.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not register; see {process.log}")
            time.sleep(0.1)
        return process

    def sample_rss(self) -> None:
        for process in self.processes:
            if process.proc.poll() is None:
                size = process.rss_mb()
                self.peak_rss[process.role] = max(self.peak_rss.get(process.role, 0.0), size)

    def stop(self, *names: str) -> None:
        self.sample_rss()
        for process in [p for p in self.processes if not names or p.name in names]:
            process.stop()
            self.processes.remove(process)


@contextmanager
def instance(keep: bool = False):
    """Create a work directory, point this process's app config at it, migrate, seed; yield a
    Stack and its app (with an app context pushed). Everything started is stopped afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="scoreline-bench-"))
    env = {**os.environ, **BENCH_ENV, "SCORELINE_INSTANCE": str(workdir)}
    # The bench makes its own SQLite database and embedded Redis, as `make run` does.
    for name in ("DATABASE_URL", "REDIS_URL"):
        env.pop(name, None)
        os.environ.pop(name, None)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYTHONPATH", str(ROOT))
    os.environ.update({k: v for k, v in env.items() if k in BENCH_ENV or k == "SCORELINE_INSTANCE"})
    if "webapp" in sys.modules:
        raise RuntimeError("bench.stack.instance() must run before webapp is imported")
    from flask_migrate import upgrade

    from webapp import create_app
    from webapp.demo import seed_demo

    app = create_app()
    stack = Stack(workdir, env)
    ctx = app.app_context()
    ctx.push()
    try:
        upgrade(directory=str(ROOT / "migrations"))
        seed_demo()
        yield stack, app
    finally:
        stack.stop()
        _stop_embedded_redis(workdir, env)
        ctx.pop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _stop_embedded_redis(workdir: Path, env: dict[str, str]) -> None:
    if env.get("REDIS_URL"):
        return
    sock = workdir / "redis.sock"
    if sock.exists():
        import redis

        with suppress(redis.RedisError):
            redis.Redis(unix_socket_path=str(sock)).shutdown(nosave=True)
