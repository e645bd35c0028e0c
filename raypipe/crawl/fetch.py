"""One polite HTTP GET with retries: the only place the crawler touches the network.

Redirects are not followed here: each hop is its own fetch, so every hop is archived, checked
against scope, robots.txt and the frontier, and counted against the host's page budget. Answers
are read with a byte cap and never parsed here; the caller decides what they mean.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone

import aiohttp

from raypipe.config import CrawlerConfig
from raypipe.crawl.politeness import HostGate
from raypipe.store.storage import RetryPolicy

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_RETRIABLE_ERRORS = (
    asyncio.TimeoutError,
    aiohttp.ServerTimeoutError,
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
)
_FATAL_ERRORS = (aiohttp.ClientSSLError, aiohttp.InvalidURL)


@dataclass
class Fetched:
    """The outcome of one URL's fetch: an HTTP answer, or why there is none to keep."""

    url: str
    started: datetime
    attempts: int = 0
    status: int | None = None
    status_reason: str = ""
    http_version: str = "HTTP/1.1"
    request_headers: list[tuple[str, str]] = field(default_factory=list)
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str | None = None
    charset: str | None = None
    body: bytes | None = None
    skip_reason: str | None = None
    detail: str | None = None

    @property
    def has_body(self) -> bool:
        return self.status is not None and self.body is not None


class Fetcher:
    """An aiohttp session shared by every host of one shard, with the crawler's timeouts and retries."""

    def __init__(self, cfg: CrawlerConfig):
        self.cfg = cfg
        self.policy = RetryPolicy(cfg.retries, cfg.backoff_base_s, cfg.backoff_max_s)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=self.cfg.total_timeout_s,
                    sock_connect=self.cfg.connect_timeout_s,
                    sock_read=self.cfg.read_timeout_s,
                ),
                headers={"User-Agent": self.cfg.user_agent},
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            # aiohttp re-sends a GET at once, outside our gate, when the connection drops; retries
            # must go through the gate and the backoff instead (aiohttp's test client does the same).
            self._session._retry_connection = False
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, url: str, gate: HostGate, accept: list[str] | None) -> Fetched:
        """GET ``url`` through ``gate``; ``accept`` lists the media types kept from a 2xx answer.

        429, 5xx, timeouts and broken connections are retried with exponential backoff and
        jitter (never holding the host's slot while waiting); the last outcome is returned.
        """
        result = Fetched(url, datetime.now(timezone.utc))
        for attempt in range(self.cfg.retries + 1):
            result = Fetched(url, datetime.now(timezone.utc), attempts=attempt + 1)
            retry_after: float | None = None
            try:
                async with gate.slot():
                    result.started = datetime.now(timezone.utc)
                    retry_after = await self._get(url, accept, result)
            except _FATAL_ERRORS as e:
                result.skip_reason, result.detail = "error", f"{type(e).__name__}: {e}"
                return result
            except _RETRIABLE_ERRORS as e:
                result.skip_reason, result.detail = "error", f"{type(e).__name__}: {e}".rstrip(": ")
            if result.skip_reason != "error" and result.status not in RETRY_STATUSES:
                return result
            if attempt < self.cfg.retries:
                wait = max(self.policy.delay(attempt), min(retry_after or 0.0, self.cfg.backoff_max_s))
                log.info("retry %s in %.2fs after %s", url, wait, result.detail or result.status)
                await asyncio.sleep(wait)
        return result

    async def _get(self, url: str, accept: list[str] | None, result: Fetched) -> float | None:
        """One request; fills ``result`` and returns the server's Retry-After seconds, if any."""
        headers = {"Accept": ", ".join(accept) if accept else "*/*"}
        async with self._open().get(url, headers=headers, allow_redirects=False) as resp:
            result.status = resp.status
            result.status_reason = resp.reason or ""
            result.http_version = f"HTTP/{resp.version.major}.{resp.version.minor}" if resp.version else "HTTP/1.1"
            result.request_headers = list(resp.request_info.headers.items())
            result.response_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers]
            result.content_type = resp.content_type
            result.charset = resp.charset
            if accept and 200 <= resp.status < 300 and resp.content_type not in accept:
                result.skip_reason, result.detail = "content_type", resp.content_type
                return None
            result.body = await self._read_capped(resp)
            if result.body is None:
                result.skip_reason = "too_large"
                result.detail = f"more than {self.cfg.max_page_bytes} bytes"
            if resp.status in RETRY_STATUSES:
                result.detail = f"HTTP {resp.status}"
            return _retry_after(resp.headers.get("Retry-After"))

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes | None:
        """The whole body, or None as soon as it is known to exceed ``max_page_bytes``."""
        cap = self.cfg.max_page_bytes
        if resp.content_length is not None and resp.content_length > cap:
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > cap:
                return None
            chunks.append(chunk)
        return b"".join(chunks)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a numeric Retry-After header; the HTTP-date form is ignored (backoff applies)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
