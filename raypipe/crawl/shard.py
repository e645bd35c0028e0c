"""One host shard of the crawl: its frontier, its hosts' politeness, robots.txt, WARC output and log.

Every URL of a host lands in the shard that owns the host (``shard_of``), so dedup, robots.txt,
the page budget and the request spacing of a host all live in one event loop with no locking
across processes. Links to hosts owned by other shards wait in ``outbox`` until the driver
collects them (``poll``) and hands them to their owner (``add``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from raypipe.config import RunConfig
from raypipe.crawl.crawl_log import CrawlLog
from raypipe.crawl.fetch import Fetched, Fetcher
from raypipe.crawl.links import extract_links
from raypipe.crawl.politeness import HostGate
from raypipe.crawl.robots import HostRules, parse_sitemap, rules_from_answer
from raypipe.crawl.urls import Scope, host_key, normalize_url, origin, shard_of
from raypipe.crawl.warc_writer import RotatingWarcWriter
from raypipe.store.storage import OutputStore, redact

log = logging.getLogger(__name__)

HTML_TYPES = ("text/html", "application/xhtml+xml")
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
MAX_SITEMAP_FETCHES = 50
MAX_ROBOTS_REDIRECTS = 5


@dataclass
class FrontierItem:
    """A URL waiting to be fetched, and how the crawl got to it."""

    url: str
    depth: int
    via: str  # seed | link | sitemap | redirect
    referrer: str | None = None
    redirects: int = 0


@dataclass
class HostState:
    """Everything the shard knows about one host."""

    host: str
    gate: HostGate
    queue: list[tuple[int, int, FrontierItem]] = field(default_factory=list)
    rules: HostRules | None = None
    rules_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    blocked: str | None = None
    pages: int = 0
    workers: int = 0


class ShardCrawler:
    """The crawl of the hosts that hash to shard ``index`` of ``shards``; driven by add/poll/finish."""

    def __init__(self, cfg: RunConfig, index: int, shards: int, scope: Scope):
        self.cfg = cfg.crawl
        self.index = index
        self.shards = shards
        self.scope = scope
        self.store = OutputStore(cfg.output, cfg.storage)
        self.fetcher = Fetcher(self.cfg)
        self.warc = RotatingWarcWriter(
            self.store,
            self.cfg.output_subdir,
            index,
            self.cfg.warc_rotate_bytes,
            {
                "software": "raypipe-crawler/0.1",
                "format": "WARC File Format 1.1",
                "conformsTo": "https://iipc.github.io/warc-specifications/specifications/warc-format/warc-1.1/",
                "robots": "obey",
                "http-header-user-agent": self.cfg.user_agent,
            },
        )
        self.log = CrawlLog(index)
        self.seen: set[str] = set()
        self.skip_logged: set[str] = set()
        self.hosts: dict[str, HostState] = {}
        self.outbox: dict[int, list[FrontierItem]] = defaultdict(list)
        self.tasks: set[asyncio.Task] = set()
        self.counters: Counter = Counter()
        self._order = itertools.count()

    async def add(self, items: list[FrontierItem]) -> None:
        """Take URLs from the driver: start URLs, and links other shards found to our hosts."""
        for item in items:
            self._route(item)

    async def poll(self) -> tuple[dict[int, list[FrontierItem]], bool]:
        """(links for other shards, idle): idle means no queued or running work and nothing to hand over."""
        out = dict(self.outbox)
        self.outbox.clear()
        return out, not self.tasks and not out

    async def finish(self) -> dict[str, Any]:
        """Upload the last WARC file and the log; returns this shard's numbers."""
        await self.warc.flush(final=True)
        await self.fetcher.close()
        log_file = await asyncio.to_thread(self.log.write, self.store, self.cfg.output_subdir)
        pages = [r for r in self.log.rows if r["kind"] == "page"]
        return {
            "shard": self.index,
            "hosts": sorted(self.hosts),
            "requests": sum(r["attempts"] or 0 for r in self.log.rows),
            "pages_archived": sum(1 for r in pages if r["reason"] is None),
            "bytes_archived": sum(r["bytes"] or 0 for r in self.log.rows if r["warc_file"]),
            "reasons": dict(Counter(r["reason"] for r in pages if r["reason"])),
            "duplicate_links": self.counters["duplicate_links"],
            "warc_files": list(self.warc.files),
            "log_file": log_file,
        }

    def _route(self, item: FrontierItem) -> None:
        """Check a discovered URL against scope, patterns, depth and redirect budget, then queue it."""
        reason = self.scope.reject_reason(item.url)
        if reason is None and item.depth > self.cfg.max_depth:
            reason = "depth"
        if reason is None and item.redirects > self.cfg.max_redirects:
            reason = "max_redirects"
        if reason is not None:
            self._skip(item, reason)
            return
        target = shard_of(host_key(item.url), self.shards)
        if target != self.index:
            self.outbox[target].append(item)
        elif item.url in self.seen:
            self.counters["duplicate_links"] += 1
            if item.via == "redirect":
                self._skip(item, "duplicate", once=False)
        else:
            self.seen.add(item.url)
            host = self._host(host_key(item.url))
            heapq.heappush(host.queue, (item.depth, next(self._order), item))
            self._spawn_workers(host)

    def _skip(self, item: FrontierItem, reason: str, detail: str | None = None, once: bool = True) -> None:
        """Log a URL we will not fetch; each URL is logged once per shard unless ``once`` is False."""
        if once and item.url in self.skip_logged:
            return
        self.skip_logged.add(item.url)
        self.log.add(item.url, host_key(item.url), "page", item.depth, reason, detail=detail, referrer=item.referrer)

    def _host(self, host: str) -> HostState:
        if host not in self.hosts:
            self.hosts[host] = HostState(host, HostGate(self.cfg.host_concurrency, self.cfg.host_delay_s))
        return self.hosts[host]

    def _spawn_workers(self, host: HostState) -> None:
        while host.workers < min(self.cfg.host_concurrency, len(host.queue)):
            host.workers += 1
            task = asyncio.get_running_loop().create_task(self._work(host))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _work(self, host: HostState) -> None:
        """Fetch the host's queued URLs, shallowest first, until its queue is empty."""
        try:
            while host.queue:
                _, _, item = heapq.heappop(host.queue)
                try:
                    await self._crawl(host, item)
                except Exception as e:  # noqa: BLE001 - one bad page must not stop the host
                    log.exception("crawling %s failed", item.url)
                    self._skip(item, "error", redact(f"{type(e).__name__}: {e}"), once=False)
        finally:
            host.workers -= 1

    async def _crawl(self, host: HostState, item: FrontierItem) -> None:
        await self._ensure_rules(host, item.url)
        assert host.rules is not None
        if host.blocked or not host.rules.allowed(item.url):
            self._skip(item, "robots", host.blocked)
            return
        if host.pages >= self.cfg.max_pages_per_site:
            self._skip(item, "max_pages")
            return
        host.pages += 1
        fetched = await self.fetcher.fetch(item.url, host.gate, self.cfg.accepted_content_types)
        reason, detail = _outcome(fetched)
        target = None
        if reason == "redirect":
            target = normalize_url(detail or "", item.url, self.cfg.sort_query)
            detail = target or detail
            if target is None:
                reason = "error"
        await self._record(fetched, "page", item.depth, reason, detail, item.referrer)
        if target is not None:
            self._route(FrontierItem(target, item.depth, "redirect", item.url, item.redirects + 1))
        elif reason is None and fetched.content_type in HTML_TYPES and fetched.body:
            for link in extract_links(fetched.body, item.url, fetched.charset, self.cfg.sort_query):
                self._route(FrontierItem(link, item.depth + 1, "link", item.url))

    async def _record(
        self, fetched: Fetched, kind: str, depth: int, reason: str | None, detail: str | None, referrer: str | None
    ) -> None:
        """Archive an answer (when there is one to keep) and log it."""
        warc_file = self.warc.write(fetched) if fetched.has_body and fetched.skip_reason is None else None
        self.log.add(
            fetched.url,
            host_key(fetched.url),
            kind,
            depth,
            reason,
            status=fetched.status,
            detail=detail,
            referrer=referrer,
            content_type=fetched.content_type,
            size=len(fetched.body) if fetched.body is not None else None,
            attempts=fetched.attempts,
            fetched_at=fetched.started,
            warc_file=warc_file,
        )
        await self.warc.flush()

    async def _ensure_rules(self, host: HostState, url: str) -> None:
        """Fetch robots.txt (and then the sitemaps) once per host, before its first page."""
        async with host.rules_lock:
            if host.rules is not None:
                return
            host.rules = await self._fetch_robots(host, origin(url))
            crawl_delay = host.rules.crawl_delay
            if crawl_delay > self.cfg.max_crawl_delay_s:
                host.blocked = f"crawl-delay {crawl_delay:g}s > max_crawl_delay_s"
            host.gate.delay_s = max(self.cfg.host_delay_s, crawl_delay)
            if self.cfg.use_sitemaps and not host.blocked:
                await self._read_sitemaps(host, host.rules.sitemaps or [f"{origin(url)}/sitemap.xml"])

    async def _fetch_robots(self, host: HostState, site: str) -> HostRules:
        """The host's rules; same-host redirects (http -> https) are followed, up to five."""
        url = f"{site}/robots.txt"
        for _ in range(MAX_ROBOTS_REDIRECTS + 1):
            fetched = await self.fetcher.fetch(url, host.gate, None)
            reason, detail = _outcome(fetched)
            await self._record(fetched, "robots", 0, reason, detail, None)
            if reason != "redirect":
                ok = fetched.skip_reason is None and fetched.status is not None
                return rules_from_answer(fetched.status if ok else None, fetched.body or b"", self.cfg.user_agent)
            target = normalize_url(detail or "", url)
            if target is None or host_key(target) != host.host:
                break
            url = target
        return rules_from_answer(404, b"", self.cfg.user_agent)

    async def _read_sitemaps(self, host: HostState, sitemaps: list[str]) -> None:
        """Queue the pages of the host's sitemaps (nested indexes followed), as depth-1 links."""
        pending = list(sitemaps)
        fetched_count = taken = 0
        assert host.rules is not None
        while pending and fetched_count < MAX_SITEMAP_FETCHES and taken < self.cfg.max_sitemap_urls:
            url = normalize_url(pending.pop(0))
            if url is None or host_key(url) != host.host or not host.rules.allowed(url):
                continue
            fetched_count += 1
            fetched = await self.fetcher.fetch(url, host.gate, None)
            reason, detail = _outcome(fetched)
            await self._record(fetched, "sitemap", 0, reason, detail, None)
            if reason is not None or not fetched.body:
                continue
            pages, nested = parse_sitemap(fetched.body, self.cfg.max_sitemap_urls - taken, self.cfg.max_page_bytes)
            pending.extend(nested)
            taken += len(pages)
            for page in pages:
                page_url = normalize_url(page, url, self.cfg.sort_query)
                if page_url is not None:
                    self._route(FrontierItem(page_url, 1, "sitemap", url))


def _outcome(fetched: Fetched) -> tuple[str | None, str | None]:
    """(log reason, detail) of a fetch: None for 2xx, ``redirect`` with its Location, else why not."""
    if fetched.skip_reason is not None:
        return fetched.skip_reason, fetched.detail
    status = fetched.status or 0
    if status in REDIRECT_STATUSES:
        location = next((v for k, v in fetched.response_headers if k.lower() == "location"), None)
        return ("redirect", location) if location else ("error", f"HTTP {status} without Location")
    if status >= 300:
        return "error", fetched.detail or f"HTTP {status}"
    return None, None
