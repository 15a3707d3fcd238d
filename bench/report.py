"""Figures, the printed table, and the JSON file under bench/results/."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Figure:
    """One measurement beside its same-run baseline.

    kind "ratio": figure / baseline must be at least `target` (throughputs);
    kind "ratio_max": figure / baseline must be at most `target` (a time against its ideal);
    kind "max": the figure itself must be at most `target` (latencies in ms or s, sizes in MB);
    the baseline is then shown for context (the same thing measured without our code).
    """

    group: str
    name: str
    value: float
    baseline: float
    kind: str
    target: float
    baseline_is: str

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("nan")

    @property
    def met(self) -> bool:
        if self.kind == "ratio":
            return self.ratio >= self.target
        if self.kind == "ratio_max":
            return self.ratio <= self.target
        return self.value <= self.target

    def target_text(self) -> str:
        if self.kind == "ratio":
            return f">= {self.target:g}x"
        return f"<= {self.target:g}x" if self.kind == "ratio_max" else f"<= {self.target:g}"


def _num(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def table(figures: list[Figure]) -> str:
    rows = [("benchmark", "figure", "baseline", "ratio", "target", "met")]
    for f in figures:
        rows.append((
            f"{f.group}: {f.name}", _num(f.value), _num(f.baseline), f"{f.ratio:.2f}",
            f.target_text(), "yes" if f.met else "NO",
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def baselines(figures: list[Figure]) -> str:
    return "\n".join(f"- {f.group}: {f.name}: baseline = {f.baseline_is}" for f in figures)


def write(figures: list[Figure], extra: dict, smoke: bool) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{'smoke-' if smoke else ''}{stamp}.json"
    document = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "smoke": smoke,
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        "figures": [{**asdict(f), "ratio": f.ratio, "met": f.met} for f in figures],
        "extra": extra,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))
