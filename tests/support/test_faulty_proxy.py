"""The fault-injecting proxy itself, and the storage layer through it (no Ray): signed requests pass
unchanged, each fault kind looks to a client as it does from S3, and a read cut mid-body resumes
with a Range GET from the byte it reached, never sooner than the backoff base."""

from __future__ import annotations

import itertools

import pytest

from raypipe.config import StorageConfig
from raypipe.store.storage import OutputStore, StorageError, expand_inputs, read_bytes
from tests.support.faulty_proxy import FaultyProxy

pytestmark = pytest.mark.integration
BUCKET = "rp-proxy"


@pytest.fixture(scope="module")
def warc(s3_server, shared_data):
    s3_server.create_bucket(BUCKET)
    path = shared_data / "warc" / "built" / "web-00002.warc.gz"
    s3_server.upload_file(path, BUCKET, "in/web.warc.gz")
    return path.read_bytes()


def test_signed_requests_pass_through_unchanged(s3_server, s3_env, monkeypatch, warc):
    with FaultyProxy(s3_server.endpoint, fault_rate=0.0) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        cfg = StorageConfig()
        assert expand_inputs(f"s3://{BUCKET}/in/*.warc.gz", cfg) == [f"s3://{BUCKET}/in/web.warc.gz"]
        assert read_bytes(f"s3://{BUCKET}/in/web.warc.gz", cfg) == warc
        store = OutputStore(f"s3://{BUCKET}/out/pass", cfg)
        store.write_text("a/b.json", "{}")
        assert store.read_bytes("a/b.json") == b"{}" and store.list("") == ["a/b.json"]
    assert not proxy.injected and len(proxy.events) >= 5


def test_mid_body_resets_resume_with_range_gets_after_the_backoff(s3_server, s3_env, monkeypatch, warc):
    with FaultyProxy(s3_server.endpoint, fault_rate=0.6, seed=3, kinds=("reset_mid_body",)) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        assert read_bytes(f"s3://{BUCKET}/in/web.warc.gz", StorageConfig(backoff_base_s=0.1)) == warc
    gets = [e for e in proxy.events if e.method == "GET"]
    assert proxy.injected["reset_mid_body"] >= 1
    assert len(gets) == proxy.injected["reset_mid_body"] + 1  # one request per cut, no re-read of the file
    assert all(b.t - a.t >= 0.1 for a, b in itertools.pairwise(gets))


def test_a_resumed_body_that_breaks_again_is_resumed_again(s3_server, s3_env, monkeypatch, warc):
    """Every answer cut halfway: each resume makes progress, so the read goes on until the rest is
    too small to cut (a break right after a resume is a broken body, not a failed GET)."""
    with FaultyProxy(s3_server.endpoint, fault_rate=1.0, kinds=("reset_mid_body",)) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        assert read_bytes(f"s3://{BUCKET}/in/web.warc.gz", StorageConfig(retries=1, backoff_base_s=0.01)) == warc
    gets = [e for e in proxy.events if e.method == "GET"]
    assert proxy.injected["reset_mid_body"] >= 4 and len(gets) == proxy.injected["reset_mid_body"] + 1


@pytest.mark.parametrize("kind", ["error_500", "slowdown_503", "reset", "slow"])
def test_each_fault_kind_is_survived(s3_server, s3_env, monkeypatch, warc, kind):
    # Writes go through s3fs, whose botocore client (adaptive mode) also slows its own request rate
    # after throttling: a lower rate keeps this test short.
    with FaultyProxy(s3_server.endpoint, fault_rate=0.25, seed=11, kinds=(kind,), slow_s=(0.05, 0.2)) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        cfg = StorageConfig(backoff_base_s=0.05)
        for _ in range(3):
            assert read_bytes(f"s3://{BUCKET}/in/web.warc.gz", cfg) == warc
        store = OutputStore(f"s3://{BUCKET}/out/{kind}", cfg)
        for i in range(3):
            store.write_text(f"k{i}.json", str(i))
        assert store.list("") == [f"k{i}.json" for i in range(3)]
    assert proxy.injected[kind] >= 1
    gets = [e for e in proxy.events if e.method == "GET" and e.path == f"/{BUCKET}/in/web.warc.gz"]
    retried = sum(1 for e in gets if e.fault and e.fault != "slow")
    assert len(gets) == 3 + retried  # each failed request is tried again exactly once, by one layer


def test_faults_are_deterministic_for_a_seed(s3_server):
    draws = []
    for _ in range(2):
        proxy = FaultyProxy(s3_server.endpoint, fault_rate=0.1, seed=7)
        draws.append([proxy._draw("GET", "/x") for _ in range(500)])
    assert draws[0] == draws[1]
    share = sum(d is not None for d in draws[0]) / 500
    assert 0.06 <= share <= 0.14


def test_retries_give_up_with_a_clear_error(s3_server, s3_env, monkeypatch, warc):
    with FaultyProxy(s3_server.endpoint, fault_rate=1.0, kinds=("slowdown_503",)) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        with pytest.raises(StorageError, match="SlowDown"):
            read_bytes(f"s3://{BUCKET}/in/web.warc.gz", StorageConfig(retries=2, backoff_base_s=0.05))
    assert proxy.injected["slowdown_503"] == 3  # the first try and two retries, all of them botocore's


@pytest.mark.parametrize("retries", [0, 3])
def test_output_writes_and_reads_spend_exactly_the_retry_budget(s3_server, s3_env, monkeypatch, warc, retries):
    """botocore is the only retry layer on S3: no RetryPolicy or s3fs loop around it (which made
    up to (retries + 1) ** 2 requests of one call)."""
    cfg = StorageConfig(retries=retries, backoff_base_s=0.01)
    with FaultyProxy(s3_server.endpoint, fault_rate=1.0, kinds=("error_500",)) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        store = OutputStore(f"s3://{BUCKET}/out/budget-{retries}", cfg)
        with pytest.raises(StorageError, match="(?i)internal ?error"):
            store.write_text("stats.json", "{}")
        puts = [e for e in proxy.events if e.method == "PUT"]
        assert len(puts) == retries + 1 and len(proxy.events) == retries + 1
        with pytest.raises(StorageError, match="(?i)internal ?error"):
            store.read_bytes("stats.json")
        assert len(proxy.events) == 2 * (retries + 1)


def _failed_input_read(s3_server, monkeypatch, cfg: StorageConfig, kind: str, error: str) -> FaultyProxy:
    """Read the input WARC through a proxy that faults every request with ``kind``, on a fresh S3
    client (the cached one would keep the previous endpoint); the read must fail with ``error``."""
    from raypipe.store import storage

    storage._cached_s3_client.cache_clear()
    with FaultyProxy(s3_server.endpoint, fault_rate=1.0, kinds=(kind,)) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        with pytest.raises(StorageError, match=error):
            read_bytes(f"s3://{BUCKET}/in/web.warc.gz", cfg)
    storage._cached_s3_client.cache_clear()
    return proxy


def test_every_botocore_attempt_passes_the_rate_limit(s3_server, s3_env, monkeypatch, warc):
    """The run-wide limiter sees retries too: botocore's retries each emit ``before-send``."""
    from raypipe import ratelimit

    cfg = StorageConfig(retries=3, backoff_base_s=0.01, requests_per_second=1000, request_burst=1000)
    calls = []
    monkeypatch.setitem(ratelimit._gates, (1000.0, 1000), lambda: calls.append(1) or 0.0)
    proxy = _failed_input_read(s3_server, monkeypatch, cfg, "slowdown_503", "SlowDown")
    assert len(proxy.events) == 4 and len(calls) == 4


def test_botocore_retries_wait_at_least_the_backoff_base(s3_server, s3_env, monkeypatch, warc, caplog):
    """botocore's own backoff (``rand(0, 1) * 2 ** n`` s) could retry a 500 within milliseconds;
    its retries of input GETs wait ``storage.backoff_base_s`` at least, and each is logged."""
    cfg = StorageConfig(retries=2, backoff_base_s=0.9, backoff_max_s=0.9)
    proxy = _failed_input_read(s3_server, monkeypatch, cfg, "error_500", "InternalError")
    gaps = [b.t - a.t for a, b in itertools.pairwise(proxy.events)]
    assert len(proxy.events) == 3 and min(gaps) >= 0.9, gaps  # botocore still spends exactly the budget
    retried = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retrying S3 GetObject")]
    assert len(retried) == 2 and all(f"s3://{BUCKET}/in/web.warc.gz" in m and "InternalError" in m for m in retried)
