"""A real multi-node Ray cluster on 127.0.0.1 for tests: ``ray start --head`` plus worker nodes.

Every node is a separate ``ray start`` (its own raylet, object store and dashboard agent) on
free ports, under a private temp dir, so several clusters (other people's test runs) can share
the machine. Worker nodes carry custom resources so a job can pin work to each of them and a
test can tell them apart. Teardown never calls ``ray stop`` (which kills every Ray on the
machine): it ends the process groups the cluster started and any process that names its temp
dir.

Usage::

    with local_ray_cluster({"node_a": {"node_a": 1}, "node_b": {"node_b": 1}}) as cluster:
        done = cluster.submit(["python", "-c", "..."], working_dir=REPO, timeout_s=300)
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from devtools.local_s3 import free_port

BIN = Path(sys.executable).parent


@dataclass
class LocalRayCluster:
    """Handles of a running local cluster; ``submit`` goes through ``ray job submit`` like a user."""

    temp_dir: Path
    gcs_address: str
    dashboard_url: str
    env: dict[str, str]
    process_groups: list[int] = field(default_factory=list)

    def submit(
        self,
        entrypoint: list[str],
        working_dir: Path,
        timeout_s: float,
        submission_id: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``ray job submit --working-dir`` and wait for the job; exit status 0 only if it SUCCEEDED."""
        submission_id = submission_id or f"test-{uuid.uuid4().hex[:12]}"
        command = [
            str(BIN / "ray"),
            "job",
            "submit",
            "--address",
            self.dashboard_url,
            "--submission-id",
            submission_id,
            "--working-dir",
            str(working_dir),
            "--",
            *entrypoint,
        ]
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout_s)

    def job_status(self, submission_id: str, timeout_s: float = 60) -> str:
        """The job's status as the cluster records it (``SUCCEEDED``, ``FAILED``, ...).

        Asked from a subprocess with the cluster's environment (its auth token), which must not
        leak into the test process.
        """
        script = (
            "import sys; from ray.job_submission import JobSubmissionClient; "
            "print(JobSubmissionClient(sys.argv[1]).get_job_status(sys.argv[2]).value)"
        )
        return self._ask(script, submission_id, timeout_s, "read the status of")

    def tasks_per_node(self, submission_id: str, timeout_s: float = 60) -> dict[str, dict]:
        """Where a job's tasks and actors ran, from Ray's state API: node id -> counts and resources.

        This is how a test proves that a job (the real pipeline included) spread its work over
        the worker nodes without the job having to report anything itself. Task events reach
        the state API asynchronously, so a just-finished job may need a moment to show all.
        """
        script = """
import json, sys
from ray.job_submission import JobSubmissionClient
from ray.util.state import list_actors, list_nodes, list_tasks
url, sid = sys.argv[1:3]
job = JobSubmissionClient(url).get_job_info(sid).job_id
out = {n.node_id: {"tasks": 0, "actors": 0, "resources": n.resources_total} for n in list_nodes(address=url)}
query = dict(address=url, filters=[("job_id", "=", job)], limit=10000, raise_on_missing_output=False)
for task in list_tasks(**query):
    if task.node_id in out and task.type != "DRIVER_TASK":
        out[task.node_id]["tasks"] += 1
for actor in list_actors(**query):
    if actor.node_id in out:
        out[actor.node_id]["actors"] += 1
print(json.dumps(out))
"""
        return json.loads(self._ask(script, submission_id, timeout_s, "list the tasks of"))

    def _ask(self, script: str, submission_id: str, timeout_s: float, what: str) -> str:
        """Run ``script DASHBOARD_URL SUBMISSION_ID`` with the cluster's environment; its last line."""
        done = subprocess.run(
            [sys.executable, "-c", script, self.dashboard_url, submission_id],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if done.returncode != 0:
            raise RuntimeError(f"cannot {what} {submission_id}: {done.stderr[-2000:]}")
        return done.stdout.strip().splitlines()[-1]

    def stop(self, grace_s: float = 3) -> None:
        """End every process this cluster started, and nothing else.

        SIGTERM first; after ``grace_s`` SIGKILL (a raylet takes ~10 s to exit gracefully, and a
        test cluster's state is thrown away anyway).
        """
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pgid in self.process_groups:
                _signal(lambda s, g=pgid: os.killpg(g, s), sig)
            for pid in _pids_naming(self.temp_dir):
                _signal(lambda s, p=pid: os.kill(p, s), sig)
            deadline = time.monotonic() + grace_s
            while _pids_naming(self.temp_dir) and time.monotonic() < deadline:
                time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _signal(send, sig: signal.Signals) -> None:
    try:
        send(sig)
    except (ProcessLookupError, PermissionError):
        pass


def _pids_naming(temp_dir: Path) -> list[int]:
    """Processes whose command line names the cluster's private temp dir (Linux /proc)."""
    found = []
    needle = str(temp_dir).encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _node_ports() -> list[str]:
    """Ports every node would otherwise take from fixed defaults (52365, ...) and collide on."""
    return [
        f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
    ]


def _ray_start(args: list[str], env: Mapping[str, str], cluster: LocalRayCluster, timeout_s: float) -> None:
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", *args],
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the daemons it forks stay in this group: killpg ends them
    )
    cluster.process_groups.append(proc.pid)
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"ray start {' '.join(args)} failed:\n{output}")


def _wait_for_nodes(cluster: LocalRayCluster, count: int, timeout_s: float) -> None:
    """Block until ``count`` nodes are alive, asking the GCS through the ``ray`` CLI."""
    deadline = time.monotonic() + timeout_s
    script = "import json, ray; ray.init(); print(json.dumps(sum(n['Alive'] for n in ray.nodes())))"
    while True:
        done = subprocess.run(
            [sys.executable, "-c", script],
            env={**cluster.env, "RAY_ADDRESS": cluster.gcs_address},
            capture_output=True,
            text=True,
            timeout=max(1.0, deadline - time.monotonic()),
        )
        if done.returncode == 0 and json.loads(done.stdout.strip().splitlines()[-1]) >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} Ray nodes not alive in {timeout_s}s: {done.stdout}{done.stderr}")
        time.sleep(1)


@contextmanager
def local_ray_cluster(
    workers: Mapping[str, Mapping[str, float]],
    cpus_per_worker: int = 1,
    env: Mapping[str, str] | None = None,
    object_store_bytes: int = 150_000_000,
    timeout_s: float = 180,
) -> Iterator[LocalRayCluster]:
    """A head that runs no work (``--num-cpus=0``) and one worker node per entry of ``workers``.

    ``workers`` maps a node name to its custom resources (``{"node_a": {"node_a": 1}}``).
    ``env`` is added to every Ray process and to ``ray job submit``: a job inherits it, which is
    how a test hands a job its S3 endpoint and credentials. The cluster is torn down on exit,
    whatever happened inside.
    """
    # Ray's unix sockets live under the temp dir and their paths must stay under 107 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="rpray", dir="/tmp"))
    port, dashboard_port = free_port(), free_port()
    full_env = {
        **os.environ,
        **(env or {}),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # the job's `python` is this venv's
        "RAY_USAGE_STATS_ENABLED": "0",
        # Token auth with a token of this cluster's own: the mode is explicit, so a shared
        # ~/.ray/auth_token (left by any local ray.init()) cannot switch nodes into different modes.
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    full_env.pop("RAY_ADDRESS", None)
    cluster = LocalRayCluster(
        temp_dir=temp_dir,
        gcs_address=f"127.0.0.1:{port}",
        dashboard_url=f"http://127.0.0.1:{dashboard_port}",
        env=full_env,
    )
    common = ["--node-ip-address=127.0.0.1", f"--object-store-memory={object_store_bytes}", "--disable-usage-stats"]
    try:
        _ray_start(
            [
                "--head",
                f"--port={port}",
                "--num-cpus=0",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard_port}",
                f"--ray-client-server-port={free_port()}",
                f"--temp-dir={temp_dir}",
                *common,
                *_node_ports(),
            ],
            full_env,
            cluster,
            timeout_s,
        )
        for resources in workers.values():
            _ray_start(
                [
                    f"--address={cluster.gcs_address}",
                    f"--num-cpus={cpus_per_worker}",
                    f"--resources={json.dumps(dict(resources))}",
                    *common,
                    *_node_ports(),
                ],
                full_env,
                cluster,
                timeout_s,
            )
        _wait_for_nodes(cluster, 1 + len(workers), timeout_s)
        yield cluster
    finally:
        cluster.stop()
