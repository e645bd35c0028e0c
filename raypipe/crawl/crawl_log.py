"""The crawl log: one row per fetch and per skipped URL, so every URL the crawl met is accounted for.

``reason`` is null for an archived 2xx answer and otherwise one of ``REASONS``. Each shard writes
``<subdir>/log/<shard>.parquet`` under the output prefix.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from raypipe.store.storage import OutputStore

REASONS = (
    "robots",  # robots.txt disallows the URL, or the host asks a crawl-delay above max_crawl_delay_s
    "scope",  # outside every start URL's host + path prefix (off-site links)
    "exclude",  # matched an exclude pattern, or no include pattern
    "depth",  # deeper than max_depth
    "max_pages",  # the host's page budget is spent
    "content_type",  # a 2xx answer of a media type we do not archive
    "too_large",  # answer larger than max_page_bytes
    "duplicate",  # a redirect to a URL the frontier already had
    "error",  # no answer after retries, or an HTTP status >= 400
    "redirect",  # a 3xx answer; ``detail`` holds the target, which is crawled on its own
    "max_redirects",  # the redirect chain is longer than max_redirects
)

SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("host", pa.string()),
        ("kind", pa.string()),
        ("depth", pa.int32()),
        ("status", pa.int32()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("referrer", pa.string()),
        ("content_type", pa.string()),
        ("bytes", pa.int64()),
        ("attempts", pa.int32()),
        ("fetched_at", pa.timestamp("us", tz="UTC")),
        ("warc_file", pa.string()),
        ("shard", pa.int32()),
    ]
)


class CrawlLog:
    """Rows of one shard, kept in memory (a few hundred bytes per URL) and written once at the end."""

    def __init__(self, shard: int):
        self.shard = shard
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        url: str,
        host: str,
        kind: str,
        depth: int,
        reason: str | None = None,
        *,
        status: int | None = None,
        detail: str | None = None,
        referrer: str | None = None,
        content_type: str | None = None,
        size: int | None = None,
        attempts: int | None = None,
        fetched_at: datetime | None = None,
        warc_file: str | None = None,
    ) -> None:
        if reason is not None and reason not in REASONS:
            raise ValueError(f"unknown crawl-log reason {reason!r}")
        self.rows.append(
            {
                "url": url,
                "host": host,
                "kind": kind,
                "depth": depth,
                "status": status,
                "reason": reason,
                "detail": detail,
                "referrer": referrer,
                "content_type": content_type,
                "bytes": size,
                "attempts": attempts,
                "fetched_at": fetched_at,
                "warc_file": warc_file,
                "shard": self.shard,
            }
        )

    def write(self, store: OutputStore, subdir: str) -> str:
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(self.rows, schema=SCHEMA), buf)
        return store.write_bytes(f"{subdir.strip('/')}/log/{self.shard:03d}.parquet", buf.getvalue())
