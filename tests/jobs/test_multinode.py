"""``ray job submit`` to a real multi-node cluster on 127.0.0.1: the work reaches every worker node.

A head that runs no work (``--num-cpus=0``, as in k8s/) and two worker nodes told apart by
custom resources (``node_a``, ``node_b``); the job is submitted with ``--working-dir`` of the
repository, the way docs/deploy.md submits the real one. tests/support/ray_cluster.py holds the cluster,
so the real job can be submitted to it the same way.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from tests.support.ray_cluster import local_ray_cluster

REPO = Path(__file__).resolve().parents[2]
WORKERS = {"node_a": {"node_a": 1}, "node_b": {"node_b": 1}}

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_ray_job_submit_runs_tasks_on_both_worker_nodes() -> None:
    submission_id = f"multinode-{uuid.uuid4().hex[:8]}"
    with local_ray_cluster(WORKERS, cpus_per_worker=1, timeout_s=240) as cluster:
        done = cluster.submit(
            ["python", "tests/support/multinode_job.py", "node_a,node_b", "3"],
            working_dir=REPO,
            timeout_s=360,
            submission_id=submission_id,
        )
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        assert cluster.job_status(submission_id) == "SUCCEEDED"
        deadline = time.monotonic() + 30  # task events reach the state API a little after the job ends
        placement = cluster.tasks_per_node(submission_id)
        while sum(n["tasks"] for n in placement.values()) < 6 and time.monotonic() < deadline:
            time.sleep(1)
            placement = cluster.tasks_per_node(submission_id)

    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    report = json.loads(line[len("RESULT ") :])
    nodes, results = report["nodes"], report["results"]
    assert len(nodes) == 3, "head + two workers"
    assert len(results) == 6 and {r["config"] for r in results} == {"RunConfig"}
    used = {r["node"] for r in results}
    assert len(used) == 2, "both worker nodes did work"
    for result in results:
        resources = nodes[result["node"]]
        assert resources.get(result["tag"]) == 1, f"{result['tag']} task ran on a node without it"
        assert resources.get("CPU", 0) >= 1, "the head (num-cpus 0) ran a task"
    # Ray's own record (state API) agrees: every worker ran tasks, the head none.
    assert set(placement) == set(nodes)
    for node_id, seen in placement.items():
        is_worker = seen["resources"].get("CPU", 0) >= 1
        assert (seen["tasks"] >= 3) if is_worker else (seen["tasks"] == 0), (node_id, seen)
