"""How the benchmarks time things, and how they run a peer's script in its own venv.

Why CPU seconds: the machines this runs on are shared (load averages of 5-10 on 2 cores are
common), so wall-clock time mostly measures the neighbours. Documents per CPU-second of the
process (and of its children, where a peer extracts in a sandbox process) is documents per
second per core, and it is what a cluster's bill scales with. Wall time is kept alongside.
"""

from __future__ import annotations

import json
import resource
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Measure:
    """One timed run: documents in and out, wall and CPU seconds, and free-form details."""

    name: str
    docs_in: int
    docs_out: int
    wall_s: float
    cpu_s: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Input documents per CPU-second: documents per second per core."""
        return self.docs_in / self.cpu_s if self.cpu_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "docs_per_cpu_s": round(self.rate, 2)}


def cpu_seconds() -> float:
    """CPU seconds of this process and of its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(name: str, fn: Callable[[], tuple[int, int, dict[str, Any]]]) -> Measure:
    """Run ``fn`` (returning docs_in, docs_out, details) and time it."""
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    docs_in, docs_out, details = fn()
    return Measure(name, docs_in, docs_out, time.perf_counter() - wall0, cpu_seconds() - cpu0, details)


def best_of(runs: list[Measure]) -> Measure:
    """The run with the least CPU time: noise only ever adds time, so the minimum is the estimate."""
    best = min(runs, key=lambda m: m.cpu_s)
    best.details["runs_cpu_s"] = [round(m.cpu_s, 3) for m in runs]
    return best


class PeerError(RuntimeError):
    """A peer's script failed; the message carries the end of its output."""


def run_peer(python: Path, script: Path, args: list[str], timeout_s: float) -> dict[str, Any]:
    """Run ``script`` with a peer venv's python and return the JSON object of its last JSON line.

    ``-I`` keeps the script's folder off ``sys.path``: bench/tokenize.py there would shadow the
    standard library's tokenize module for everything the peer imports.
    """
    try:
        done = subprocess.run(
            [str(python), "-I", str(script), *args], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise PeerError(f"{script.name} {' '.join(args[:1])} ran past {timeout_s:.0f}s") from e
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise PeerError(f"{script.name} exited {done.returncode}:\n{tail}")
    return json.loads(lines[-1])
