"""A small Ray job for tests/jobs/test_multinode.py: tasks pinned to each worker node say where they ran.

Submitted with ``ray job submit --working-dir <repo>``, so it also proves that the working dir
reaches the driver and the workers: raypipe is importable only from there.
"""

from __future__ import annotations

import json
import sys

import ray


@ray.remote(num_cpus=1)
def where(tag: str) -> dict[str, str]:
    from raypipe.config import RunConfig

    return {"tag": tag, "node": ray.get_runtime_context().get_node_id(), "config": RunConfig.__name__}


def main(tags: list[str], per_tag: int) -> None:
    ray.init()
    pending = [where.options(resources={tag: 0.5}).remote(tag) for tag in tags for _ in range(per_tag)]
    results = ray.get(pending, timeout=240)
    nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    print("RESULT " + json.dumps({"results": results, "nodes": nodes}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1].split(","), int(sys.argv[2]))
