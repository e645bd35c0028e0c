"""Running ``jobs/build_forge.py`` as a user would (its own process, a standalone local Ray) and
comparing what runs leave in S3, for the reliability tests.

A run is started in its own session (process group) with a private ``RAY_TMPDIR``, so the test can
SIGKILL the driver alone, find the Ray workers it spawned, read Ray's own logs, and finally end
every process of that run (and nothing else) by its process group.

``snapshot`` reduces an output prefix to what must be identical between an uninterrupted run and
any interrupted, resumed, faulted or differently-sized run of the same config: every document
(all columns except the timing one; part boundaries may differ), the stats (minus timings and
the output path), and, once phase 4 writes them, every shard's sha256 and the manifest's list.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pyarrow.parquet as pq

from tests.conftest import REPO

# Columns that measure the run rather than describe the document.
TIMING_COLUMNS = {"extract_ms"}
TIMING_KEYS = {"seconds", "timings", "output", "config_hash"}


@dataclass
class JobRun:
    """One ``build_forge.py`` process and its private Ray directory."""

    proc: subprocess.Popen
    log_path: Path
    ray_tmp: Path
    killed: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def processes(self) -> list[psutil.Process]:
        """The driver and every process it started (Ray's GCS, raylet, agents, workers)."""
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def workers(self, title_prefix: str) -> list[psutil.Process]:
        """Ray worker processes whose title (``ray::<task or actor>``) starts with ``title_prefix``."""
        found = []
        for p in self.processes():
            try:
                cmd = p.cmdline()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            if cmd and cmd[0].startswith(title_prefix):
                found.append(p)
        return found

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"job did not finish in {timeout_s}s:\n{self.log()[-4000:]}") from None

    def stop(self) -> None:
        """SIGKILL every process of this run: its process group, plus any that left it."""
        leftover = self.processes()
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for p in leftover:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(leftover, timeout=10)
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)


@contextmanager
def short_tmp() -> Iterator[Path]:
    """A directory with a short path: Ray's unix socket paths under RAY_TMPDIR must stay < 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="rprel", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


CHEAP_RETRIEVAL = ["retrieve.seed_max_chunks=1", "retrieve.max_chunks=2"]
"""Fewer chunks than demo.yaml's (the defaults, 4 and 4): the tests check behaviour, not ranking."""


def start_job(sets: list[str], env: dict[str, str], workdir: Path) -> JobRun:
    """Start ``python jobs/build_forge.py --config configs/demo.yaml --set ...`` in its own session.

    ``workdir`` (keep its path short, see ``short_tmp``) receives the log and Ray's temp dir.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    ray_tmp = workdir / "ray"
    ray_tmp.mkdir(exist_ok=True)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    full_env.update({"HF_HUB_OFFLINE": "1", "RAY_TMPDIR": str(ray_tmp), "RAY_USAGE_STATS_ENABLED": "0", **env})
    log_path = workdir / "job.log"
    # demo.yaml reads one Common Crawl file, cut short; these runs read the inputs they name, whole
    command = [sys.executable, "jobs/build_forge.py", "--config", "configs/demo.yaml"]
    command += ["--set", "limit_files=null", "--set", "limit_records=null"]
    for s in CHEAP_RETRIEVAL:
        command += ["--set", s]
    for s in sets:
        command += ["--set", s]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command, cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return JobRun(proc, log_path, ray_tmp)


def run_job(sets: list[str], env: dict[str, str], workdir: Path, timeout_s: float = 300,
            while_running: Callable[[JobRun], None] | None = None) -> JobRun:  # fmt: skip
    """Run a job to the end (calling ``while_running`` every 0.2 s meanwhile); it must succeed."""
    job = start_job(sets, env, workdir)
    deadline = time.monotonic() + timeout_s
    try:
        while job.proc.poll() is None and time.monotonic() < deadline:
            if while_running is not None:
                while_running(job)
            time.sleep(0.2)
        code = job.wait(max(1.0, deadline - time.monotonic()))
    finally:
        job.stop()
    assert code == 0, f"job failed ({code}):\n{job.log()[-6000:]}"
    return job


def s3_keys(client, bucket: str, prefix: str = "") -> dict[str, dict]:
    """Every object under ``prefix`` with its ETag and LastModified."""
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = {"etag": obj["ETag"], "modified": obj["LastModified"]}
    return out


def _get(client, bucket: str, key: str) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _row_digest(row: dict) -> str:
    kept = {k: v for k, v in row.items() if k not in TIMING_COLUMNS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=repr).encode()).hexdigest()


@dataclass
class Snapshot:
    documents: dict[str, str]  # source file#doc_id -> digest of the whole row (all but timing columns)
    stats: dict
    shards: dict[str, str] | None  # shard path -> sha256, once a manifest exists
    manifest_shards: list | None


def snapshot(client, bucket: str, prefix: str) -> Snapshot:
    """What must not change between runs of one config, read straight from the S3 server."""
    prefix = prefix.rstrip("/") + "/"
    keys = s3_keys(client, bucket, prefix)
    documents: dict[str, str] = {}
    for key in sorted(k for k in keys if k.startswith(prefix + "extracted/") and k.endswith(".parquet")):
        for row in pq.read_table(io.BytesIO(_get(client, bucket, key))).to_pylist():
            # a document is one record of one input file (doc_id includes the file name)
            doc = f"{row['source_file']}#{row['doc_id']}"
            assert doc not in documents, f"document {doc} written twice ({key})"
            documents[doc] = _row_digest(row)
    stats = _strip(json.loads(_get(client, bucket, prefix + "stats.json")))
    shards = manifest_shards = None
    if prefix + "manifest.json" in keys:  # activates when phase 4 (mix + shards + manifest) lands
        manifest = json.loads(_get(client, bucket, prefix + "manifest.json"))
        manifest_shards = [{k: s.get(k) for k in ("path", "documents", "tokens", "sha256")} for s in manifest["shards"]]
        shards = {
            k[len(prefix) :]: hashlib.sha256(_get(client, bucket, k)).hexdigest()
            for k in keys
            if k.startswith(prefix + "shards/") and k.endswith((".bin", ".idx"))
        }
    return Snapshot(documents, stats, shards, manifest_shards)


def assert_same_output(expected: Snapshot, actual: Snapshot) -> None:
    """Byte-for-byte where bytes are deterministic; document-for-document where parts may split differently."""
    assert expected.documents, "the reference run wrote no documents"
    missing = set(expected.documents) - set(actual.documents)
    extra = set(actual.documents) - set(expected.documents)
    assert not missing and not extra, f"{len(missing)} documents missing, {len(extra)} extra"
    changed = [d for d in expected.documents if expected.documents[d] != actual.documents[d]]
    assert not changed, f"{len(changed)} documents differ, e.g. {changed[:3]}"
    assert expected.stats == actual.stats, f"stats differ at {_differences(expected.stats, actual.stats)[:10]}"
    assert (expected.shards is None) == (actual.shards is None), "only one run wrote a manifest"
    if expected.shards is not None:
        assert expected.shards == actual.shards
        assert expected.manifest_shards == actual.manifest_shards
        for shard in expected.manifest_shards:
            assert expected.shards[shard["path"] + ".bin"] == shard["sha256"], shard  # the sha256 of the .bin


def _differences(a: object, b: object, path: str = "") -> list[str]:
    """Where two JSON values differ, as ``path: a != b`` lines (for assertion messages)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in _differences(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {str(a)[:120]} != {str(b)[:120]}"]


def files_under(root: Path) -> Iterator[Path]:
    yield from (p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def find_secrets(secrets: list[str], blobs: dict[str, bytes]) -> list[str]:
    """Names of the blobs in which any secret occurs (as bytes, or inside parquet cell values)."""
    hits = []
    for name, data in blobs.items():
        texts = [data]
        if name.endswith(".parquet"):
            table = pq.read_table(io.BytesIO(data))
            texts.append(json.dumps(table.to_pylist(), default=repr).encode())
        if any(s.encode() in t for s in secrets for t in texts):
            hits.append(name)
    return hits
