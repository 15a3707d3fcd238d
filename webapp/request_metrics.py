"""HTTP request counts and latencies: added up in memory, written to the metrics folder each second.

Polls answered from memory cost a few tens of microseconds; prometheus_client's multiprocess
values would add a locked memory-mapped write per counter and bucket to each. So each process
adds its requests up here (a lock and a few additions) and a thread writes the totals to
`http_<pid>.json` in the process's metrics folder once a second; `/metrics` reads every
process's file (`RequestCollector`). A scrape sees other processes' requests up to a second late.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from bisect import bisect_left
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from webapp.metrics import HTTP_BUCKETS, NAMESPACE

FLUSH_EVERY = 1.0
_PREFIX = "http_"


class RequestStats:
    """This process's request totals, written to `<folder>/http_<pid>.json` every second."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / f"{_PREFIX}{os.getpid()}.json"
        self._lock = threading.Lock()
        # (method, route, status) -> [count, sum of seconds, count per bucket (+Inf last)]
        self._requests: dict[tuple[str, str, str], list] = {}
        self._hits: dict[str, int] = {}  # poll kind -> polls answered from memory
        self._dirty = False
        self._stop = threading.Event()
        thread = threading.Thread(target=self._flush_forever, name="request-metrics", daemon=True)
        thread.start()
        atexit.register(self.flush)

    def record(self, key: tuple[str, str, str], seconds: float, hit: str | None) -> None:
        """One request: (method, route, status), its duration, and the kind of poll the poll
        cache answered it as, if it did."""
        bucket = bisect_left(HTTP_BUCKETS, seconds)  # the first bound >= seconds (le)
        with self._lock:
            entry = self._requests.get(key)
            if entry is None:
                entry = self._requests[key] = [0, 0.0, [0] * (len(HTTP_BUCKETS) + 1)]
            entry[0] += 1
            entry[1] += seconds
            entry[2][bucket] += 1
            if hit is not None:
                self._hits[hit] = self._hits.get(hit, 0) + 1
            self._dirty = True

    def flush(self) -> None:
        """Write the totals (atomically: a reader never sees half a file)."""
        with self._lock:
            if not self._dirty:
                return
            state = {
                "requests": [
                    [*key, n, total, list(buckets)]
                    for key, (n, total, buckets) in self._requests.items()
                ],
                "hits": [[kind, n] for kind, n in self._hits.items()],
            }
            self._dirty = False
        temporary = self.path.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(state))
            os.replace(temporary, self.path)
        except OSError:
            with self._lock:
                self._dirty = True  # try again next time (the folder may be back)

    def _flush_forever(self) -> None:
        while not self._stop.wait(FLUSH_EVERY):
            self.flush()


class RequestCollector(Collector):
    """The request metrics of every process that wrote to `folder`, summed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def collect(self):
        """Read each process's file and emit the counter and histogram families."""
        requests: dict[tuple, list] = {}
        hits: dict[str, int] = {}
        for path in self.folder.glob(f"{_PREFIX}*.json"):
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # replaced or removed while we read: the next scrape has it
            for method, route, status, n, total, buckets in state["requests"]:
                entry = requests.setdefault(
                    (method, route, status), [0, 0.0, [0] * (len(HTTP_BUCKETS) + 1)]
                )
                entry[0] += n
                entry[1] += total
                entry[2] = [a + b for a, b in zip(entry[2], buckets, strict=True)]
            for kind, n in state["hits"]:
                hits[kind] = hits.get(kind, 0) + n
        counter = CounterMetricFamily(
            f"{NAMESPACE}_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            labels=["method", "route", "status"],
        )
        histogram = HistogramMetricFamily(
            f"{NAMESPACE}_http_request_duration_seconds",
            "Time to produce an HTTP answer, by method and route template.",
            labels=["method", "route"],
        )
        by_route: dict[tuple[str, str], list] = {}
        for (method, route, status), (n, total, buckets) in sorted(requests.items()):
            counter.add_metric([method, route, status], n)
            merged = by_route.setdefault((method, route), [0.0, [0] * len(buckets)])
            merged[0] += total
            merged[1] = [a + b for a, b in zip(merged[1], buckets, strict=True)]
        for (method, route), (total, buckets) in by_route.items():
            cumulative, running = [], 0
            for bound, count in zip([*HTTP_BUCKETS, float("inf")], buckets, strict=True):
                running += count
                cumulative.append((floatToGoString(bound), running))
            histogram.add_metric([method, route], cumulative, total)
        polls = CounterMetricFamily(
            f"{NAMESPACE}_poll_cache_hits",
            "Polls answered from the poll cache (from memory, before Flask), by kind.",
            labels=["kind"],
        )
        for kind, n in sorted(hits.items()):
            polls.add_metric([kind], n)
        yield from (counter, histogram, polls)


_stats: tuple[int, RequestStats] | None = None
_stats_lock = threading.Lock()


def stats(folder: Path) -> RequestStats:
    """This process's RequestStats (a forked child makes its own)."""
    global _stats
    current = _stats
    if current is not None and current[0] == os.getpid():
        return current[1]
    with _stats_lock:
        if _stats is None or _stats[0] != os.getpid():
            _stats = (os.getpid(), RequestStats(folder))
        return _stats[1]
