"""Storage over a real S3 server on 127.0.0.1: streaming reads, globs, confined atomic writes."""

from __future__ import annotations

import pytest

from raypipe.config import StorageConfig
from raypipe.store.storage import OutputStore, StorageError, expand_inputs, read_bytes

pytestmark = pytest.mark.integration


def test_roundtrip_and_confinement(s3_server, s3_env, shared_data):
    s3_server.create_bucket("raypipe-storage")
    cfg = StorageConfig()
    src = sorted((shared_data / "warc" / "built").glob("*.warc.gz"))[:2]
    for p in src:
        s3_server.upload_file(p, "raypipe-storage", f"in/{p.name}")
    uris = expand_inputs("s3://raypipe-storage/in/*.warc.gz", cfg)
    assert uris == [f"s3://raypipe-storage/in/{p.name}" for p in src]
    assert read_bytes(uris[0], cfg) == src[0].read_bytes()

    store = OutputStore("s3://raypipe-storage/out/run1", cfg)
    store.write_text("stats.json", "{}")
    assert store.read_bytes("stats.json") == b"{}"
    assert store.list("") == ["stats.json"]
    for bad in ("../escape.txt", "/abs.txt", "s3://other/x", "a/../../b"):
        with pytest.raises(StorageError, match="outside the output prefix"):
            store.write_text(bad, "x")


def test_missing_input_is_a_clear_error(s3_server, s3_env):
    s3_server.create_bucket("raypipe-storage")
    with pytest.raises(StorageError, match="input not found: s3://raypipe-storage/nope.warc.gz"):
        expand_inputs("s3://raypipe-storage/nope.warc.gz", StorageConfig())
