"""A fault-injecting HTTP reverse proxy on 127.0.0.1, put in front of the S3 server in tests.

Why: S3 and Common Crawl throttle (503 SlowDown), fail (500), drop connections and stall; the
pipeline must come through all of it with the same output, retrying politely. The proxy forwards
every request byte for byte (the Host header as the client sent it, so SigV4 signatures still
verify upstream) and, for a seeded ~``fault_rate`` share of requests, answers instead with:

- ``error_500``: 500 InternalError with an S3 XML error body, upstream never sees the request;
- ``slowdown_503``: 503 SlowDown, likewise;
- ``reset``: the TCP connection is reset (RST) before any answer;
- ``reset_mid_body``: a large GET is forwarded, part of its body sent, then the connection reset;
- ``slow``: forwarded, but the answer starts after a bounded delay.

Faults are drawn from ``random.Random(seed)`` in arrival order (``path_rates`` can give some paths,
such as the input objects whose retries a test measures, their own rate), and every request is
logged with its arrival time and fault so a test can measure retry gaps and request rates.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web
from yarl import URL

from devtools.local_s3 import free_port

KINDS = ("error_500", "slowdown_503", "reset", "reset_mid_body", "slow")
# Hop-by-hop headers and those aiohttp recomputes; none is in a SigV4 signature (botocore never
# signs expect or transfer-encoding, and the body is forwarded unchanged so its length is too).
_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "content-length", "upgrade", "te"}
_ERRORS = {
    "error_500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "slowdown_503": (503, "SlowDown", "Please reduce your request rate."),
}


@dataclass
class Event:
    """One request as the proxy saw it."""

    t: float
    method: str
    path: str
    query: str
    fault: str | None


@dataclass
class FaultyProxy:
    upstream: str
    fault_rate: float = 0.1
    seed: int = 0
    kinds: tuple[str, ...] = KINDS
    path_rates: dict[str, float] = field(default_factory=dict)  # path prefix -> its own fault rate
    slow_s: tuple[float, float] = (0.2, 1.0)
    mid_body_min_bytes: int = 64 * 1024
    injected: Counter = field(default_factory=Counter)
    events: list[Event] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _draw(self, method: str, path: str) -> str | None:
        rate = next((r for prefix, r in self.path_rates.items() if path.startswith(prefix)), self.fault_rate)
        if self.rng.random() >= rate:
            return None
        kind = self.rng.choice(self.kinds)
        if kind == "reset_mid_body" and method != "GET":
            kind = "reset"
        return kind

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        fault = self._draw(request.method, request.path)
        event = Event(time.monotonic(), request.method, request.path, request.query_string, fault)
        self.events.append(event)
        if fault in _ERRORS:
            self.injected[fault] += 1
            status, code, message = _ERRORS[fault]
            xml = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>{message}</Message>"
                f"<Resource>{request.path}</Resource><RequestId>fault-{len(self.events)}</RequestId></Error>"
            )
            return web.Response(status=status, text=xml, content_type="application/xml")
        if fault == "reset":
            self.injected[fault] += 1
            return self._reset(request)
        if fault == "slow":
            self.injected[fault] += 1
            await asyncio.sleep(self.rng.uniform(*self.slow_s))
        return await self._forward(request, body, event)

    def _reset(self, request: web.Request) -> web.StreamResponse:
        """Abort the client's connection with an RST (SO_LINGER 0), as a dropped connection looks."""
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        return web.Response(status=500)  # never reaches the client: its connection is gone

    async def _forward(self, request: web.Request, body: bytes, event: Event) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        assert self._session is not None
        async with self._session.request(
            request.method,
            URL(self.upstream + request.raw_path, encoded=True),  # the path exactly as signed
            headers=headers,
            data=body if body else None,
            allow_redirects=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
        ) as upstream:
            out = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for k, v in upstream.headers.items():
                if k.lower() not in _HOP:
                    out.headers.add(k, v)
            length = upstream.headers.get("Content-Length")
            if length is not None:
                out.content_length = int(length)
            cut = event.fault == "reset_mid_body" and length is not None and int(length) >= self.mid_body_min_bytes
            if cut:
                self.injected["reset_mid_body"] += 1
            elif event.fault == "reset_mid_body":
                event.fault = None  # too small to cut: forwarded untouched
            await out.prepare(request)
            if request.method == "HEAD":
                return out
            sent = 0
            async for chunk in upstream.content.iter_chunked(16 * 1024):
                if cut and sent + len(chunk) > int(length) // 2:
                    return self._reset(request)
                await out.write(chunk)
                sent += len(chunk)
            await out.write_eof()
            return out

    async def _start(self) -> None:
        self._session = ClientSession(
            connector=TCPConnector(limit=64),
            auto_decompress=False,
            timeout=ClientTimeout(total=120),
        )
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()

    def start(self) -> FaultyProxy:
        """Serve on a free 127.0.0.1 port from a background thread; returns self."""
        self.port = self.port or free_port()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._start())
            self._ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="faulty-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("faulty proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FaultyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
