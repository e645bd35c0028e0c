"""End to end as a user runs it: a real Ray cluster on 127.0.0.1 (``ray start --head`` with the
dashboard and no work on the head, plus two worker nodes told apart by custom resources), a
SeaweedFS S3 server, real WARCs, seeds and code uploaded, ``ray job submit --working-dir .`` of
jobs/build_forge.py running every phase, and the output checked in S3: the funnel against warcio,
every page accounted for in candidates/, and Megatron shards that megatron-core itself opens."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset
from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeadersParser

from tests.conftest import REPO
from tests.support.forge_runs import CHEAP_RETRIEVAL
from tests.support.megatron_blend import blended_shares
from tests.support.ray_cluster import local_ray_cluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
WORKERS = {"node_a": {"node_a": 1}, "node_b": {"node_b": 1}}
SEED_FILES = ["api_docs_pypi/python_library_docs.jsonl.gz", "gorilla_api_docs/torchhub_api.jsonl.gz"]
CODE = "pypi_python_code.jsonl.gz"
# Every phase by default; RAYPIPE_E2E_PHASES=seeds,extract (say) runs a prefix of them when debugging.
PHASES = os.environ.get("RAYPIPE_E2E_PHASES", "seeds,extract,score,clean,shard").split(",")
SMALL = [  # sized for a 2-core CI machine
    "limit_files=null",  # demo.yaml reads one Common Crawl file, cut short
    "limit_records=null",
    f"phases=[{','.join(PHASES)}]",
    "seeds.sources=[s3://raypipe-e2e/seeds/]",
    "seeds.harvest_modules=[json]",
    "seeds.max_per_source=80",
    "seeds.license_manifest=s3://raypipe-e2e/meta/MANIFEST.jsonl",
    f"mix.code.uri=s3://raypipe-e2e/code/{CODE}",
    "shards.tokens_per_shard=200000",
    "decontam.benchmarks=s3://raypipe-e2e/benchmarks/",
    "dedup.memory_budget_mb=256",
    *CHEAP_RETRIEVAL,
]


def independent_counts(paths) -> tuple[int, int]:
    """Records and 200 HTML responses, counted with warcio (not the code under test)."""
    records = html = 0
    for p in paths:
        with open(p, "rb") as f:
            for rec in ArchiveIterator(f):
                records += 1
                headers = rec.http_headers
                if rec.rec_type == "response" and headers is None and "msgtype=response" in (rec.content_type or ""):
                    headers = StatusAndHeadersParser(["HTTP/1.0", "HTTP/1.1"]).parse(rec.raw_stream)
                if rec.rec_type != "response" or not headers:
                    continue
                ctype = (headers.get_header("Content-Type") or "").lower()
                if headers.get_statuscode() == "200" and ctype.startswith(("text/html", "application/xhtml+xml")):
                    html += 1
    return records, html


def test_ray_job_submit_end_to_end(s3_server, shared_data, tmp_path):
    inputs = sorted((shared_data / "warc" / "built").glob("*.warc.gz"))[:3]
    inputs += sorted((shared_data / "warc" / "cc").glob("*.warc.gz"))
    inputs += [shared_data / "warc" / "edge_cases" / "resiliparse_clipped_truncated.warc.gz"]
    s3_server.create_bucket("raypipe-e2e")
    for p in inputs:
        s3_server.upload_file(p, "raypipe-e2e", f"in/{p.name}")
    for rel in SEED_FILES:
        s3_server.upload_file(shared_data / "seeds" / rel, "raypipe-e2e", f"seeds/{rel}")
    s3_server.upload_file(shared_data / "mix" / "code" / CODE, "raypipe-e2e", f"code/{CODE}")
    s3_server.upload_file(shared_data / "MANIFEST.jsonl", "raypipe-e2e", "meta/MANIFEST.jsonl")
    for p in sorted((shared_data / "benchmarks").rglob("*")):
        if p.is_file():
            s3_server.upload_file(p, "raypipe-e2e", f"benchmarks/{p.relative_to(shared_data / 'benchmarks')}")
    records, html = independent_counts(p for p in inputs if "clipped" not in p.name)
    records += 1  # the clipped record: counted by us as truncated_gzip

    submission_id = f"e2e-{uuid.uuid4().hex[:8]}"
    env = {**s3_server.env, "HF_HUB_OFFLINE": "1"}
    with local_ray_cluster(WORKERS, cpus_per_worker=1, env=env, timeout_s=240) as cluster:
        done = cluster.submit(
            [
                "python", "jobs/build_forge.py", "--config", "configs/demo.yaml",
                "--set", "input=s3://raypipe-e2e/in/*.warc.gz", "--set", "output=s3://raypipe-e2e/out/run",
                *[x for item in SMALL for x in ("--set", item)],
            ],
            working_dir=REPO,
            timeout_s=700,
            submission_id=submission_id,
        )  # fmt: skip
        logs = done.stdout + done.stderr
        assert done.returncode == 0, logs[-6000:]
        assert cluster.job_status(submission_id) == "SUCCEEDED"
        deadline = time.monotonic() + 30  # task events reach the state API shortly after the job
        placement = cluster.tasks_per_node(submission_id)
        while len([n for n in placement.values() if n["tasks"]]) < 2 and time.monotonic() < deadline:
            time.sleep(1)
            placement = cluster.tasks_per_node(submission_id)

    assert "joined Ray cluster" in logs  # the job ran on the cluster it was submitted to
    workers_used = [n for n in placement.values() if n["resources"].get("CPU", 0) >= 1 and (n["tasks"] or n["actors"])]
    assert len(workers_used) == 2, placement
    assert s3_server.env["AWS_SECRET_ACCESS_KEY"] not in logs

    client = s3_server.client()
    stats = json.loads(client.get_object(Bucket="raypipe-e2e", Key="out/run/stats.json")["Body"].read())
    funnel = {s["stage"]: s["documents"] for s in stats["funnel"]}
    assert funnel["records_read"] == records
    assert funnel["html_responses"] == html
    assert stats["extract"]["files"] == len(inputs)
    assert stats["extract"]["record_skips"]["truncated_gzip"] == 1
    listing = client.list_objects_v2(Bucket="raypipe-e2e", Prefix="out/run/extracted/")["Contents"]
    keys = [o["Key"] for o in listing]
    assert keys and all(k.endswith(".parquet") for k in keys)
    meta = json.loads(client.get_object(Bucket="raypipe-e2e", Key="out/run/seed_index/meta.json")["Body"].read())
    assert meta["n_seeds"] == stats["seeds"]["seeds"] > 0
    if "shard" in PHASES:
        check_trainer_output(client, funnel, tmp_path)


def check_trainer_output(client, funnel: dict, tmp_path: Path) -> None:
    """Every page accounted for in candidates/, and shards that megatron-core itself opens."""

    def frame(prefix: str) -> pd.DataFrame:
        objs = client.list_objects_v2(Bucket="raypipe-e2e", Prefix=f"out/run/{prefix}/")["Contents"]
        parts = [client.get_object(Bucket="raypipe-e2e", Key=o["Key"])["Body"].read() for o in objs]
        return pd.concat([pd.read_parquet(io.BytesIO(b)) for b in parts if b], ignore_index=True)

    candidates = frame("candidates")
    assert len(candidates) == funnel["html_responses"]  # every page accounted for
    assert candidates["doc_id"].is_unique
    unselected = candidates[~candidates["selected"]]
    assert unselected["drop_reason"].notna().all()
    assert candidates["selected"].any() and candidates.loc[candidates["selected"], "drop_reason"].isna().all()

    manifest = json.loads(client.get_object(Bucket="raypipe-e2e", Key="out/run/manifest.json")["Body"].read())
    assert manifest["shards"] and manifest["totals"]["tokens"] > 0
    assert set(manifest["totals"]["tokens_by_stream"]) == {"agent", "code", "text"}
    mix = manifest["mix"]
    assert not mix["warnings"], mix["warnings"]
    local = tmp_path / "output"
    for shard in manifest["shards"]:
        (local / shard["path"]).parent.mkdir(parents=True, exist_ok=True)
        for ext in ("bin", "idx"):
            data = client.get_object(Bucket="raypipe-e2e", Key=f"out/run/{shard['path']}.{ext}")["Body"].read()
            (local / f"{shard['path']}.{ext}").write_bytes(data)
            if ext == "bin":
                assert hashlib.sha256(data).hexdigest() == shard["sha256"]
        dataset = IndexedDataset(str(local / shard["path"]), mmap=True)
        assert len(dataset) == shard["documents"]
        assert sum(len(dataset[i]) for i in range(len(dataset))) == shard["tokens"]
    # megatron-core's blended dataset over the manifest's --data-path draws the target ratio
    drawn = blended_shares(local, mix["data_path"], {s["path"]: s["stream"] for s in manifest["shards"]})
    for stream, target in mix["target_ratio"].items():
        assert abs(drawn.get(stream, 0.0) - target) <= 0.01, (drawn, mix["target_ratio"])
    docs = frame("documents")
    assert len(docs) == manifest["totals"]["documents"]
    report = client.get_object(Bucket="raypipe-e2e", Key="out/run/report.html")["Body"].read().decode()
    assert "chart-funnel" in report
