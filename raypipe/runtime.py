"""Joining or starting Ray, and sizing stages from what the cluster has.

Under ``ray job submit`` the driver finds its cluster through RAY_ADDRESS; standalone we start a
local Ray bound to loopback only (the dashboard too), so a laptop run exposes nothing.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from raypipe.config import RunConfig

log = logging.getLogger(__name__)


def init_ray(cfg: RunConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        log.info("joined Ray cluster at %s", address)
    else:
        ray.init(
            num_cpus=cfg.ray.num_cpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=True,
        )
        log.info("started a local Ray on 127.0.0.1 with %s CPUs", ray.cluster_resources().get("CPU"))
    ctx = ray.data.DataContext.get_current()
    show = cfg.ray.progress_bars if cfg.ray.progress_bars is not None else os.isatty(1)
    ctx.enable_progress_bars = show
    ctx.print_on_execution_start = show


def cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0))


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def cpu_actor_pool(max_share: float = 0.5, per_actor_cpus: float = 0.5) -> dict[str, Any]:
    """``map_batches`` kwargs for a CPU actor pool that leaves room for the read tasks.

    On 2 CPUs, two actors of ``num_cpus=1`` starve the readers and the plan hangs: actors ask for
    fractional CPUs and the pool grows to at most ``max_share`` of the cluster.
    """
    from ray.data import ActorPoolStrategy

    cpus = cluster_cpus()
    max_size = max(1, int(cpus * max_share / per_actor_cpus))
    return {"compute": ActorPoolStrategy(min_size=1, max_size=max_size), "num_cpus": per_actor_cpus}
