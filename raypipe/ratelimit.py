"""One request-rate limit shared by every worker of a run, for sources that punish floods.

Why: Common Crawl answers bursts with 503 SlowDown for everyone, and per-process limits multiply
with the number of workers. With ``storage.requests_per_second`` set, every input GET (first
requests, Range resumes and retries alike) first asks one Ray actor, ``raypipe-rate-limiter``,
for a start time. The actor only does arithmetic and answers how long to wait; the caller sleeps
in its own process, so a slow caller never holds the actor up. Outside Ray (unit tests, a plain
script) the same bucket runs in-process.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

from raypipe.config import StorageConfig

ACTOR_NAME = "raypipe-rate-limiter"
_gates: dict[tuple[float, int], Callable[[], float]] = {}
_driver_handle: list = []  # keeps the driver-owned actor referenced for the run's lifetime
_lock = threading.Lock()


class TokenBucket:
    """A token bucket in its GCRA form: one "theoretical arrival time" instead of a token count.

    ``rate`` requests per second on average, at most ``burst`` back to back. ``reserve`` books the
    next start slot and returns the seconds the caller must wait for it (0 when a token is free),
    so in any interval of length T at most ``burst + rate * T`` requests start.
    """

    def __init__(self, rate: float, burst: int = 1, clock: Callable[[], float] = time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got rate={rate} burst={burst}")
        self.interval = 1.0 / rate
        self.tolerance = (burst - 1) * self.interval
        self.clock = clock
        self.tat = float("-inf")

    def reserve(self) -> float:
        now = self.clock()
        start = max(self.tat, now)
        self.tat = start + self.interval
        return max(0.0, start - self.tolerance - now)


class RateLimiter:
    """The bucket as a Ray actor; ``reserve`` answers a wait in seconds (see TokenBucket)."""

    def __init__(self, rate: float, burst: int):
        self.bucket = TokenBucket(rate, burst)

    def reserve(self) -> float:
        return self.bucket.reserve()


def _actor(rate: float, burst: int):
    import ray

    remote_cls = ray.remote(num_cpus=0, max_restarts=-1)(RateLimiter)
    return remote_cls.options(name=ACTOR_NAME, get_if_exists=True).remote(rate, burst)


def start_rate_limiter(cfg: StorageConfig) -> None:
    """Create the run's limiter actor from the driver (its owner), when a rate is configured.

    Called once after ``ray.init``: an actor created by a worker would die with that worker.
    """
    if cfg.requests_per_second:
        _driver_handle.append(_actor(cfg.requests_per_second, cfg.request_burst))


def request_gate(cfg: StorageConfig) -> Callable[[], float]:
    """A callable that blocks until the next request may start and returns the seconds it waited.

    No limit configured: returns at once. Inside Ray: one shared actor for the whole run.
    Otherwise: one bucket per process.
    """
    rate = cfg.requests_per_second
    if not rate:
        return lambda: 0.0
    key = (float(rate), cfg.request_burst)
    with _lock:
        if key not in _gates:
            _gates[key] = _make_gate(*key)
        return _gates[key]


def _make_gate(rate: float, burst: int) -> Callable[[], float]:
    ray = sys.modules.get("ray")  # not imported means not initialized: no need to pay for the import
    if ray is not None and ray.is_initialized():
        handle = _actor(rate, burst)

        def reserve() -> float:
            return ray.get(handle.reserve.remote())

    else:
        bucket = TokenBucket(rate, burst)
        bucket_lock = threading.Lock()

        def reserve() -> float:
            with bucket_lock:
                return bucket.reserve()

    def gate() -> float:
        wait = reserve()
        if wait > 0:
            time.sleep(wait)
        return wait

    return gate
