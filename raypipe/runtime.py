"""Joining or starting Ray, and sizing stages from what the cluster has.

Under ``ray job submit`` the driver finds its cluster through RAY_ADDRESS; standalone we start a
local Ray bound to loopback only (the dashboard too), so a laptop run exposes nothing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from raypipe.config import RunConfig
from raypipe.ratelimit import start_rate_limiter
from raypipe.stage import Resources, plan_for_cpus

log = logging.getLogger(__name__)


# Ray turns 127.0.0.1 into the machine's routable address unless it is told that this is no
# multi-node cluster; then the GCS, raylet, workers and agents all bind to loopback.
_SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def _loopback_only() -> Iterator[None]:
    """While a local Ray starts, make it listen on loopback only.

    Ray's ``_node_ip_address="127.0.0.1"`` is silently replaced by the routable IP (and every
    server then binds 0.0.0.0); what keeps it local is its single-node switch, read from the
    environment by the daemons it spawns (they keep it; workers inherit it from the raylet) and
    from ``ray_constants`` by this process. Both are restored afterwards, so a later ``ray start``
    of a multi-node cluster from this process is not refused.
    """
    from ray._private import ray_constants

    saved_env, saved_flag = os.environ.get(_SINGLE_NODE_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_SINGLE_NODE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_SINGLE_NODE_ENV, None)
        else:
            os.environ[_SINGLE_NODE_ENV] = saved_env


def init_ray(cfg: RunConfig) -> None:
    import ray

    plan_for_cpus(cfg.ray.max_cpus)
    if ray.is_initialized():
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        log.info("joined Ray cluster at %s", address)
    else:
        with _loopback_only():
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
    # Fault tolerance relies on Ray Data's defaults, pinned here so a changed default cannot
    # weaken it: tasks retry system failures (a killed worker) without limit (``max_retries=-1``),
    # actor pools restart actors and retry their tasks (``max_restarts=-1``,
    # ``max_task_retries=-1``), and an application error fails the run instead of dropping a
    # block (``max_errored_blocks=0``): losing a block would silently lose documents.
    ctx.max_errored_blocks = 0
    start_rate_limiter(cfg.storage)


def ensure_cwd() -> None:
    """Re-enter the working directory if it was replaced under us.

    Several Ray nodes on one machine share a session directory; when another node unpacks the
    job's working_dir it replaces the directory the driver runs in, and every later relative-path
    lookup (``os.getcwd``) fails. The new copy sits at the same path, so we step back into it.
    """
    try:
        os.getcwd()
    except FileNotFoundError:
        os.chdir(os.environ.get("PWD") or os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@contextmanager
def resources_within(resources: Resources, wait_s: int, knob: str, poll_s: float = 2.0) -> Iterator[None]:
    """Run a plan whose actors ask for ``resources``; fail in ``wait_s`` if the GPUs never appear.

    A GPU the cluster does not show yet may still come: the pool's GPUs are asked of the
    autoscaler up front (``request_resources``; on KubeRay it starts GPU nodes from zero) and the
    plan starts once one actor's worth is there. On a cluster where none can ever appear (a
    laptop, a CPU-only cluster) the run fails after ``wait_s`` naming the missing resource and the
    knob, instead of waiting forever on a pending actor.
    """
    import ray
    from ray.autoscaler.sdk import request_resources

    def visible() -> float:
        return float(ray.cluster_resources().get("GPU", 0.0))

    if not resources.gpus or visible() >= resources.gpus:
        yield
        return
    bundle = {"GPU": resources.gpus, "CPU": resources.cpus}
    request_resources(bundles=[bundle] * max(1, resources.actors or 1))
    log.warning(
        "actors ask for %s GPU each (%s) and the cluster shows %s: waiting up to %ss for GPU nodes",
        resources.gpus, knob, visible(), wait_s,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + wait_s
        while visible() < resources.gpus:
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"no GPU appeared within {wait_s}s for actors that ask for {resources.gpus} GPU each ({knob}): "
                    f"this cluster shows {visible()} GPUs. Set {knob}: auto (or 0) to embed on CPU, or raise "
                    "ray.resource_wait_s if GPU nodes are still starting."
                )
            time.sleep(poll_s)
        yield
    finally:
        request_resources(bundles=[])
