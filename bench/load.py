"""The HTTP load generator: wrk (Debian's package), a separate process, driven by a Lua script."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "wrk" / "paths.lua"


@dataclass
class LoadResult:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed: `apt-get install wrk` (make bench does, as root)")
    return path


def run(
    base_url: str,
    paths: list[str],
    *,
    seconds: float,
    connections: int,
    threads: int = 1,
    headers: dict[str, str] | None = None,
    rate: float | None = None,
) -> LoadResult:
    """Load `paths` (cycled) for `seconds`; closed loop, or about `rate` requests/s when given.

    A fixed rate is wrk's per-connection pause: each connection waits connections/rate seconds
    between its requests, so the offered rate is slightly below `rate` by the response time.
    """
    argv = [
        wrk_path(), "--latency", "-t", str(threads), "-c", str(connections),
        "-d", f"{max(1, round(seconds))}s", "--timeout", "5s", "-s", str(SCRIPT),
    ]  # fmt: skip
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    argv += [base_url, "--", *paths]
    env = {"BENCH_DELAY_MS": str(int(connections * 1000 / rate)) if rate else "0"}
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 60, env={"PATH": "/usr/bin", **env}
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
    data = json.loads(line[len("BENCH ") :])
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return LoadResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=errors,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
    )
