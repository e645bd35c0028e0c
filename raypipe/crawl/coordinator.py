"""The driver side of the crawl: shard actors on Ray, cross-host link routing and termination.

Shards never call each other. The driver polls every shard, hands each one the links other shards
found for its hosts, and stops when one round finds every shard idle with nothing to hand over.
That round is a consistent quiescent state: a shard only gains work from the driver, and the
driver delivered everything it collected (awaited) before the round began.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any, Protocol

from raypipe.config import RunConfig
from raypipe.crawl.shard import FrontierItem, ShardCrawler
from raypipe.crawl.urls import Scope, host_key, shard_of


class Shard(Protocol):
    """What the driver needs of a shard: a local ``ShardCrawler`` or a ``RayShard`` handle."""

    async def add(self, items: list[FrontierItem]) -> None: ...

    async def poll(self) -> tuple[dict[int, list[FrontierItem]], bool]: ...

    async def finish(self) -> dict[str, Any]: ...


class RayShard:
    """Awaitable facade over a shard actor, so the driver loop is the same with or without Ray."""

    def __init__(self, actor: Any):
        self.actor = actor

    async def add(self, items: list[FrontierItem]) -> None:
        await self.actor.add.remote(items)

    async def poll(self) -> tuple[dict[int, list[FrontierItem]], bool]:
        return await self.actor.poll.remote()

    async def finish(self) -> dict[str, Any]:
        return await self.actor.finish.remote()


def start_ray_shards(cfg: RunConfig, shards: int, scope: Scope) -> list[RayShard]:
    """One async actor per shard; each runs its event loop (and aiohttp session) inside Ray."""
    import ray

    actor_cls = ray.remote(ShardCrawler).options(num_cpus=cfg.crawl.actor_num_cpus, max_restarts=0)
    return [RayShard(actor_cls.remote(cfg, i, shards, scope)) for i in range(shards)]


async def coordinate(shards: list[Shard], seeds: list[FrontierItem], poll_interval_s: float) -> list[dict[str, Any]]:
    """Run the crawl to completion over ``shards``; returns each shard's ``finish()`` numbers."""
    pending: dict[int, list[FrontierItem]] = defaultdict(list)
    for item in seeds:
        pending[shard_of(host_key(item.url), len(shards))].append(item)
    while True:
        await asyncio.gather(*(shards[i].add(items) for i, items in pending.items()))
        pending = defaultdict(list)
        polled = await asyncio.gather(*(shard.poll() for shard in shards))
        for outbox, _ in polled:
            for target, items in outbox.items():
                pending[target].extend(items)
        if not pending and all(idle for _, idle in polled):
            break
        await asyncio.sleep(poll_interval_s)
    return list(await asyncio.gather(*(shard.finish() for shard in shards)))
