"""Per-host politeness: at most N requests in flight, and request starts spaced by a delay.

Every request to a host (robots.txt, sitemaps, pages, and each retry) passes through that host's
gate, so the guarantee holds whatever code path issues it. Spacing is measured start to start:
with a delay of d seconds a host never sees two requests begin less than d apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class HostGate:
    """Concurrency limit plus a minimum gap between request starts, for one host.

    ``delay_s`` may be raised at any time (robots.txt asking a crawl-delay); the new gap is then
    kept from the request that already started, robots.txt itself included.
    """

    def __init__(self, concurrency: int, delay_s: float):
        self.delay_s = delay_s
        self._slots = asyncio.Semaphore(concurrency)
        self._order = asyncio.Lock()
        self._last_start = float("-inf")

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the host's slots, entered no sooner than ``delay_s`` after the previous start."""
        async with self._slots:
            async with self._order:
                loop = asyncio.get_running_loop()
                wait = self._last_start + self.delay_s - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._last_start = loop.time()
            yield
