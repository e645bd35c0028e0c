"""A real Ray cluster on 127.0.0.1 for end-to-end tests: ``ray start`` head (+ workers), then
``ray job submit`` through its dashboard, exactly as a user does it. Ports are free ports and the
temp dir is private, so only our own processes are stopped afterwards."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from raypipe.local_s3 import free_port

RAY = str(Path(sys.executable).parent / "ray")


@dataclass
class RayCluster:
    temp_dir: str
    gcs_address: str
    dashboard: str
    env: dict[str, str]
    nodes: list[str] = field(default_factory=list)

    def add_worker(self, num_cpus: float, resources: dict[str, float]) -> None:
        cmd = [
            RAY, "start", f"--address={self.gcs_address}", "--node-ip-address=127.0.0.1",
            f"--num-cpus={num_cpus}", f"--resources={json.dumps(resources)}",
            f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
        ]  # fmt: skip
        subprocess.run(cmd, env=self.env, check=True, capture_output=True, timeout=120)

    def submit(self, workdir: Path, entrypoint: list[str], timeout_s: float = 600) -> tuple[str, str]:
        """``ray job submit --working-dir`` and wait; returns (final status, job logs)."""
        cmd = [
            RAY, "job", "submit", f"--address={self.dashboard}", f"--working-dir={workdir}",
            "--no-wait", "--", *entrypoint,
        ]  # fmt: skip
        out = subprocess.run(cmd, env=self.env, check=True, capture_output=True, text=True, timeout=120).stdout
        job_id = re.findall(r"raysubmit_[A-Za-z0-9]+", out)[0]
        deadline = time.monotonic() + timeout_s
        status = "UNKNOWN"
        while time.monotonic() < deadline:
            status = self._status(job_id)
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                break
            time.sleep(2)
        proc = subprocess.run(
            [RAY, "job", "logs", f"--address={self.dashboard}", job_id],
            env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        return status, proc.stdout + proc.stderr

    def _status(self, job_id: str) -> str:
        proc = subprocess.run(
            [RAY, "job", "status", f"--address={self.dashboard}", job_id],
            env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        out = proc.stdout + proc.stderr
        found = re.findall(r"Status for job '[^']+': (\w+)", out)
        return found[-1] if found else "PENDING"

    def stop(self) -> None:
        """Kill every process of this cluster (found by its private temp dir), nothing else."""
        out = subprocess.run(["pgrep", "-f", self.temp_dir], capture_output=True, text=True).stdout
        pids = [int(p) for p in out.split() if int(p) != os.getpid()]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(2)


def start_head(env: dict[str, str], num_cpus: float = 2, resources: dict[str, float] | None = None) -> RayCluster:
    temp_dir = tempfile.mkdtemp(prefix="rp-ray-", dir="/tmp")
    port, dash = free_port(), free_port()
    # Token auth, with a token of this cluster's own: nothing depends on ~/.ray of whoever runs it.
    env = {**os.environ, **env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    cmd = [
        RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true",
        f"--num-cpus={num_cpus}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
        f"--resources={json.dumps(resources or {})}",
        f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
        f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
        f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
    ]  # fmt: skip
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=180)
    cluster = RayCluster(temp_dir, f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}", env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        probe = subprocess.run(
            [RAY, "job", "list", f"--address={cluster.dashboard}"], env=env, capture_output=True, timeout=60
        )
        if probe.returncode == 0:
            return cluster
        time.sleep(1)
    cluster.stop()
    raise RuntimeError("Ray dashboard did not come up")
