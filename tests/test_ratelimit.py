"""The run-wide request-rate limit and the retry backoff, without Ray: the bucket's arithmetic on a
fake clock, the in-process gate on the real clock, and the backoff floor that keeps retries polite."""

from __future__ import annotations

import statistics
import time

import pytest

from raypipe.config import StorageConfig
from raypipe.ratelimit import TokenBucket, request_gate
from raypipe.store.storage import RetryPolicy


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_spaces_requests():
    clock = FakeClock()
    bucket = TokenBucket(rate=4, burst=3, clock=clock)
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst
    assert bucket.reserve() == pytest.approx(0.25)  # then one slot per 1/rate
    assert bucket.reserve() == pytest.approx(0.5)
    clock.now += 10  # idle: the burst refills, never more than the burst
    assert [bucket.reserve() for _ in range(4)] == pytest.approx([0.0, 0.0, 0.0, 0.25])


def test_bucket_bounds_starts_in_every_window():
    """Simulated callers that start when told: at most burst + rate * T starts in any window T."""
    clock = FakeClock()
    rate, burst = 5.0, 2
    bucket = TokenBucket(rate, burst, clock=clock)
    starts = []
    for i in range(200):
        clock.now = 100.0 + i * 0.03  # callers arrive faster than the rate
        starts.append(clock.now + bucket.reserve())
    for s in starts:
        assert sum(1 for t in starts if s <= t < s + 1.0) <= burst + rate
    assert starts == sorted(starts)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_bucket_rejects_nonsense(rate, burst):
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)


def test_gate_without_ray_waits_on_the_real_clock():
    assert request_gate(StorageConfig())() == 0.0  # no limit configured
    gate = request_gate(StorageConfig(requests_per_second=40, request_burst=1))
    assert gate is request_gate(StorageConfig(requests_per_second=40, request_burst=1))  # one per process
    start = time.monotonic()
    waits = [gate() for _ in range(9)]
    assert time.monotonic() - start >= 8 / 40 - 0.01
    assert waits[0] == 0.0 and max(waits) > 0


def test_retry_delays_never_undercut_the_base_and_are_jittered():
    policy = RetryPolicy(retries=5, base_s=0.5, max_s=4.0)
    for attempt in range(6):
        delays = [policy.delay(attempt) for _ in range(200)]
        assert min(delays) >= 0.5
        assert max(delays) <= min(4.0, 0.5 * 2 ** (attempt + 1))
        assert statistics.pstdev(delays) > 0.05
