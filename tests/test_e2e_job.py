"""End to end as a user runs it: ``ray start --head`` on 127.0.0.1, a SeaweedFS S3 server, the real
WARCs uploaded, ``ray job submit --working-dir .`` of jobs/build_forge.py, output checked in S3."""

from __future__ import annotations

import json

import pytest
from warcio.archiveiterator import ArchiveIterator

from tests.conftest import REPO
from tests.ray_cluster import start_head

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def _independent_html_count(paths) -> tuple[int, int]:
    """Records and 200 HTML responses, counted with warcio (not the code under test)."""
    records = html = 0
    for p in paths:
        with open(p, "rb") as f:
            for rec in ArchiveIterator(f):
                records += 1
                if rec.rec_type != "response" or not rec.http_headers:
                    continue
                ctype = (rec.http_headers.get_header("Content-Type") or "").lower()
                status = rec.http_headers.get_statuscode()
                if status == "200" and ctype.startswith(("text/html", "application/xhtml+xml")):
                    html += 1
    return records, html


def test_ray_job_submit_end_to_end(s3_server, shared_data, tmp_path):
    inputs = sorted((shared_data / "warc" / "built").glob("*.warc.gz"))[:3]
    inputs += sorted((shared_data / "warc" / "cc").glob("*.warc.gz"))
    s3_server.create_bucket("raypipe-e2e")
    for p in inputs:
        s3_server.upload_file(p, "raypipe-e2e", f"in/{p.name}")
    records, html = _independent_html_count(inputs)

    cluster = start_head({**s3_server.env, "HF_HUB_OFFLINE": "1"})
    try:
        status, logs = cluster.submit(
            REPO,
            [
                "python", "jobs/build_forge.py", "--config", "configs/demo.yaml",
                "--set", "input=s3://raypipe-e2e/in/*.warc.gz", "--set", "output=s3://raypipe-e2e/out/run",
            ],
        )  # fmt: skip
    finally:
        cluster.stop()
    assert status == "SUCCEEDED", logs[-4000:]
    assert "joined Ray cluster" in logs  # it ran on the submitted-to cluster, not a new local one

    client = s3_server.client()
    stats = json.loads(client.get_object(Bucket="raypipe-e2e", Key="out/run/stats.json")["Body"].read())
    funnel = {s["stage"]: s["documents"] for s in stats["funnel"]}
    assert funnel["records_read"] == records
    assert funnel["html_responses"] == html
    assert stats["crawl"]["files"] == len(inputs)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="raypipe-e2e", Prefix="out/run/extracted/")["Contents"]]
    assert keys and all(k.endswith(".parquet") for k in keys)
    assert len({k.split("/")[3] for k in keys}) == len(inputs) - 0  # one folder per input file with documents
    assert s3_server.env["AWS_SECRET_ACCESS_KEY"] not in logs
