"""Planning at dump scale (issue 14, item 4), on the real S3 server: the extract phase's listing,
resume check and deletes before the first read make as many S3 requests for 4x the files (one
listing page holds 1,000 keys), and leave exactly the right parts behind."""

from __future__ import annotations

import gzip

import pytest

import raypipe.phases.extract as extract
from raypipe.config import load_config
from raypipe.store.state import RunState, digest
from raypipe.store.storage import OutputStore
from raypipe.store.warc import file_stem
from tests.support.faulty_proxy import FaultyProxy

pytestmark = pytest.mark.integration


class Planned(Exception):
    """Raised where the read plan is handed to Ray: everything before it is planning."""

    def __init__(self, todo: list[str]):
        self.todo = todo


def seed(s3_server, bucket: str, files: int) -> tuple[list[str], list[str], list[str]]:
    """``files`` inputs; the first half recorded done (a part each), a tenth of the rest failed on
    an earlier run, another tenth with a part left by an interrupted run. Returns (uris, done, partial)."""
    s3_server.create_bucket(bucket)
    client = s3_server.client()
    uris = []
    for i in range(files):
        key = f"in/CC-MAIN-test-{i:05d}.warc.gz"
        client.put_object(Bucket=bucket, Key=key, Body=gzip.compress(b"WARC/1.1\r\n\r\n"))
        uris.append(f"s3://{bucket}/{key}")
    cfg = config(bucket, s3_server.endpoint)
    state = RunState(OutputStore(cfg.output, cfg.storage))
    settings = digest(cfg.phase_settings("extract"))
    done, rest = uris[: files // 2], uris[files // 2 :]
    failed, partial = rest[: files // 10], rest[files // 10 : files // 5]
    journal = state.journal("extract", every=files, every_s=3600)
    for uri in done:
        part = f"extracted/{file_stem(uri)}/part-0.parquet"
        state.store.write_bytes(part, b"done")
        journal.done(file_stem(uri), {"uri": uri, "settings": settings, "parts": [part]})
    for uri in failed:
        journal.failed(file_stem(uri), {"uri": uri, "error": "StorageError: 503"})
    journal.flush()
    for uri in partial:
        state.store.write_bytes(f"extracted/{file_stem(uri)}/part-1.parquet", b"interrupted")
    return uris, done, partial


def config(bucket: str, endpoint: str):
    return load_config(
        base={
            "input": f"s3://{bucket}/in/",
            "output": f"s3://{bucket}/out",
            "phases": ["extract"],
            "storage": {"endpoint_url": endpoint, "retries": 2},
        }
    )


def test_planning_requests_do_not_grow_with_the_files(s3_server, s3_env, monkeypatch):
    def planned(todo: list[str], *args: object, **kwargs: object) -> None:
        raise Planned(todo)

    monkeypatch.setattr(extract, "warc_dataset", planned)
    requests = {}
    for files in (40, 160):
        bucket = f"planning-{files}"
        uris, done, partial = seed(s3_server, bucket, files)
        with FaultyProxy(s3_server.endpoint, fault_rate=0.0) as proxy:
            cfg = config(bucket, proxy.url)
            store = OutputStore(cfg.output, cfg.storage)
            with pytest.raises(Planned) as plan:
                extract.run(cfg, store, RunState(store))
            requests[files] = len(proxy.events)
        assert plan.value.todo == [u for u in uris if u not in done]
        direct = config(bucket, s3_server.endpoint)
        left = OutputStore(direct.output, direct.storage).list("extracted")
        assert sorted(left) == sorted(f"extracted/{file_stem(u)}/part-0.parquet" for u in done)
        assert partial  # their parts were there and are gone
    assert requests[40] == requests[160], requests
    assert requests[160] < 40, requests
