"""WARC/1.1 output of one shard: warcinfo + request/response pairs, gzip per record, rotated by size.

A file is built in memory (bounded by ``warc_rotate_bytes`` plus one answer) and uploaded whole
through ``OutputStore`` when it reaches the rotation size, so a reader never sees a partial file
and writes cannot leave the output prefix.

aiohttp hands us the decoded payload (gzip/br undone, chunking removed), so the archived headers
are made to describe the bytes stored: ``Content-Encoding`` and ``Transfer-Encoding`` are kept
under ``X-Raypipe-Orig-*`` names and ``Content-Length`` is the stored length. Every reader
(warcio, fastwarc, raypipe.store.warc) then sees a self-consistent record.
"""

from __future__ import annotations

import asyncio
import io
import socket
from datetime import timezone

from warcio.statusandheaders import StatusAndHeaders
from warcio.timeutils import datetime_to_iso_date
from warcio.warcwriter import WARCWriter
from yarl import URL

from raypipe.crawl.fetch import Fetched
from raypipe.store.storage import OutputStore

_REWRITTEN = {"content-encoding", "transfer-encoding", "content-length"}


def _response_headers(fetched: Fetched, body_len: int) -> StatusAndHeaders:
    headers: list[tuple[str, str]] = []
    for name, value in fetched.response_headers:
        lower = name.lower()
        if lower in ("content-encoding", "transfer-encoding"):
            headers.append((f"X-Raypipe-Orig-{name}", value))
        elif lower not in _REWRITTEN:
            headers.append((name, value))
    headers.append(("Content-Length", str(body_len)))
    status_line = f"{fetched.status} {fetched.status_reason}".strip()
    return StatusAndHeaders(status_line, headers, protocol=fetched.http_version)


def _request_headers(fetched: Fetched) -> StatusAndHeaders:
    url = URL(fetched.url)
    target = url.raw_path_qs or "/"
    return StatusAndHeaders(f"GET {target} HTTP/1.1", fetched.request_headers, is_http_request=True)


class RotatingWarcWriter:
    """Appends fetched answers to ``<subdir>/warc/<shard>-<n>.warc.gz`` files under the output prefix."""

    def __init__(self, store: OutputStore, subdir: str, shard: int, rotate_bytes: int, info: dict[str, str]):
        self.store = store
        self.subdir = subdir.strip("/")
        self.shard = shard
        self.rotate_bytes = rotate_bytes
        self.info = info
        self.files: list[str] = []
        self._opened = 0
        self._buf: io.BytesIO | None = None
        self._writer: WARCWriter | None = None
        self._name = ""
        self._warcinfo_id = ""

    def _start(self) -> WARCWriter:
        self._name = f"{self.subdir}/warc/{self.shard:03d}-{self._opened:05d}.warc.gz"
        self._opened += 1
        self._buf = io.BytesIO()
        self._writer = WARCWriter(self._buf, gzip=True, warc_version="1.1")
        info = {**self.info, "hostname": socket.gethostname()}
        warcinfo = self._writer.create_warcinfo_record(self._name.rsplit("/", 1)[-1], info)
        self._warcinfo_id = warcinfo.rec_headers.get_header("WARC-Record-ID")
        self._writer.write_record(warcinfo)
        return self._writer

    def write(self, fetched: Fetched) -> str:
        """Archive one answer as a response + request pair; returns the URI of the file holding it."""
        writer = self._writer or self._start()
        body = fetched.body or b""
        date = datetime_to_iso_date(fetched.started.astimezone(timezone.utc).replace(tzinfo=None), use_micros=True)
        response = writer.create_warc_record(
            fetched.url,
            "response",
            payload=io.BytesIO(body),
            length=len(body),
            warc_headers_dict={"WARC-Date": date, "WARC-Warcinfo-ID": self._warcinfo_id},
            http_headers=_response_headers(fetched, len(body)),
        )
        request = writer.create_warc_record(
            fetched.url,
            "request",
            payload=io.BytesIO(b""),
            length=0,
            warc_headers_dict={"WARC-Date": date, "WARC-Warcinfo-ID": self._warcinfo_id},
            http_headers=_request_headers(fetched),
        )
        writer.write_request_response_pair(request, response)
        return self.store.uri(self._name)

    async def flush(self, final: bool = False) -> None:
        """Upload the open file once it reached the rotation size (or, when ``final``, whatever it holds).

        The file is detached before the upload runs in a thread, so the event loop keeps crawling
        into the next file meanwhile.
        """
        if self._buf is None or (not final and self._buf.tell() < self.rotate_bytes):
            return
        name, data = self._name, self._buf.getvalue()
        self._buf, self._writer = None, None
        self.files.append(await asyncio.to_thread(self.store.write_bytes, name, data))
