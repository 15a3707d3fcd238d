"""`make run`: Ctrl-C stops web, worker and the embedded Redis it started (unless KEEP_REDIS=1)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import redis
import requests

from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent


def answers(sock: Path) -> bool:
    try:
        return bool(redis.Redis(unix_socket_path=str(sock), socket_timeout=1).ping())
    except redis.RedisError:
        return False


def run_then_ctrl_c(instance: Path, **env: str) -> str:
    """Start `make run` on a free port in its own process group (a terminal's foreground job),
    wait until the site answers, press Ctrl-C (SIGINT to the group), return what it printed."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    environment.update(SCORELINE_INSTANCE=str(instance), WEB_CONCURRENCY="1", **env)
    process = subprocess.Popen(
        # -o: the shared .venv is set up already; don't reinstall into it.
        ["make", "--no-print-directory", "-o", ".venv/.installed", "run", f"PORT={port}"],
        cwd=ROOT, env=environment, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "make run did not come up"
            time.sleep(0.5)
        assert answers(instance / "redis.sock"), "the embedded Redis is up while the site runs"
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return output


def test_ctrl_c_stops_the_embedded_redis_make_run_started(tmp_path):
    output = run_then_ctrl_c(tmp_path)
    assert "Embedded Redis stopped" in output, output
    assert not answers(tmp_path / "redis.sock")


def test_keep_redis_leaves_it_running_for_the_next_run(tmp_path):
    output = run_then_ctrl_c(tmp_path, KEEP_REDIS="1")
    try:
        assert "Embedded Redis kept running (KEEP_REDIS=1)" in output, output
        assert answers(tmp_path / "redis.sock")
    finally:
        redis.Redis(unix_socket_path=str(tmp_path / "redis.sock")).shutdown(nosave=True)
