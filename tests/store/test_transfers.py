"""Transfers over HTTPS against a real HTTP server on 127.0.0.1, and the retriable-error classifier.

The server misbehaves the way real ones do: it ignores ``Range`` and answers 200 with the whole
object, drops the connection mid-body, lies about ``Content-Range``, changes the object between
requests, or answers 503 forever. The reader must restart from byte 0 without splicing (or fail the
file clearly), and spend exactly the configured retry budget.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aiohttp
import botocore.exceptions as boto
import pytest
import requests
import urllib3.exceptions as u3

from raypipe.config import ExtractConfig, StorageConfig
from raypipe.store.storage import StorageError, is_retriable, read_bytes
from raypipe.store.warc import read_warc_file

FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05}


@dataclass
class Behaviour:
    """What the server does with request number ``i`` (0-based): returns (status, headers, body, cut).

    ``cut`` > 0 sends only that many body bytes after a full Content-Length, then drops the connection.
    """

    answer: Callable[[int, str | None], tuple[int, dict[str, str], bytes, int]]
    ranges: list[str | None] = field(default_factory=list)


def _handler(behaviour: Behaviour) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            rng = self.headers.get("Range")
            i = len(behaviour.ranges)
            behaviour.ranges.append(rng)
            status, headers, body, cut = behaviour.answer(i, rng)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            if cut:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body[:cut] if cut else body)
            self.wfile.flush()
            if cut:
                self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def serve() -> Iterator[Callable[[Behaviour], str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(behaviour: Behaviour) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(behaviour))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/crawl-data/x/web.warc.gz"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def warc(shared_data) -> bytes:
    return (shared_data / "warc" / "built" / "web-00002.warc.gz").read_bytes()


def ignores_range_and_drops_once(data: bytes, second: bytes | None = None) -> Behaviour:
    """200 with the whole body every time, Range or not; the first answer is cut at 40%."""

    def answer(i: int, _rng: str | None) -> tuple[int, dict[str, str], bytes, int]:
        body = data if i == 0 or second is None else second
        return 200, {"Content-Type": "application/octet-stream"}, body, int(len(data) * 0.4) if i == 0 else 0

    return Behaviour(answer)


def test_a_server_ignoring_range_is_reread_from_byte_0_not_spliced(serve, warc):
    behaviour = ignores_range_and_drops_once(warc)
    url = serve(behaviour)
    assert read_bytes(url, StorageConfig(**FAST)) == warc
    assert len(behaviour.ranges) == 2
    assert behaviour.ranges[0] is None and behaviour.ranges[1].startswith("bytes=")
    assert int(behaviour.ranges[1][len("bytes=") : -1]) > 0  # it did ask to resume, and got 200


def test_a_warc_read_over_http_through_a_dropped_connection_matches_the_local_read(serve, warc, shared_data):
    """The user's path: read_warc_file over HTTP(S) yields the same pages as the file on disk."""
    path = shared_data / "warc" / "built" / "web-00002.warc.gz"
    url = serve(ignores_range_and_drops_once(warc))

    def pages(uri: str) -> tuple[list[tuple[str, bytes]], dict]:
        rows, stats = [], None
        for table in read_warc_file(uri, StorageConfig(**FAST), ExtractConfig()):
            for row in table.to_pylist():
                if row["url"] is None:
                    stats = row["file_stats"]
                else:
                    rows.append((row["url"], row["html"]))
        return rows, stats

    remote, remote_stats = pages(url)
    local, local_stats = pages(str(path))
    assert remote == local and len(local) > 10
    assert '"read_error"' not in remote_stats and '"garbage_between_records"' not in remote_stats


def test_an_object_changed_between_requests_fails_instead_of_splicing(serve, warc):
    changed = bytes(reversed(warc))  # same length, other bytes: only the content check can tell
    url = serve(ignores_range_and_drops_once(warc, second=changed))
    with pytest.raises(StorageError, match="changed while being read"):
        read_bytes(url, StorageConfig(**FAST))


def test_a_206_from_the_wrong_byte_fails(serve, warc):
    def answer(i: int, rng: str | None) -> tuple[int, dict[str, str], bytes, int]:
        if i == 0:
            return 200, {}, warc, len(warc) // 3
        return 206, {"Content-Range": f"bytes 0-{len(warc) - 1}/{len(warc)}"}, warc, 0

    url = serve(Behaviour(answer))
    with pytest.raises(StorageError, match="Content-Range"):
        read_bytes(url, StorageConfig(**FAST))


def test_a_server_honouring_range_is_resumed_where_it_broke(serve, warc):
    def answer(i: int, rng: str | None) -> tuple[int, dict[str, str], bytes, int]:
        if i == 0:
            return 200, {"ETag": '"v1"'}, warc, len(warc) // 2
        start = int(rng[len("bytes=") : -1])
        return 206, {"Content-Range": f"bytes {start}-{len(warc) - 1}/{len(warc)}", "ETag": '"v1"'}, warc[start:], 0

    behaviour = Behaviour(answer)
    assert read_bytes(serve(behaviour), StorageConfig(**FAST)) == warc
    assert len(behaviour.ranges) == 2 and int(behaviour.ranges[1][6:-1]) >= len(warc) // 4


@pytest.mark.parametrize(("status", "retries", "requests_seen"), [(503, 2, 3), (503, 0, 1), (500, 4, 5), (404, 3, 1)])
def test_https_spends_exactly_the_retry_budget(serve, status, retries, requests_seen):
    behaviour = Behaviour(lambda i, rng: (status, {}, b"busy", 0))
    with pytest.raises(StorageError, match=f"HTTP {status}"):
        read_bytes(serve(behaviour), StorageConfig(retries=retries, **FAST))
    assert len(behaviour.ranges) == requests_seen  # the first try plus retries, one layer only


def test_every_https_attempt_and_resume_passes_the_rate_limit(serve, warc, monkeypatch):
    """The run-wide limiter sees first tries, retries and Range resumes alike."""
    from raypipe import ratelimit

    calls = []
    monkeypatch.setitem(ratelimit._gates, (1000.0, 1000), lambda: calls.append(1) or 0.0)
    cfg = StorageConfig(retries=2, requests_per_second=1000, request_burst=1000, **FAST)
    busy = Behaviour(lambda i, rng: (503, {}, b"busy", 0))
    with pytest.raises(StorageError):
        read_bytes(serve(busy), cfg)
    assert len(busy.ranges) == 3 and len(calls) == 3
    dropping = ignores_range_and_drops_once(warc)
    assert read_bytes(serve(dropping), cfg) == warc
    assert len(dropping.ranges) == 2 and len(calls) == 5


class ServerDisconnectedError(Exception):
    """Named like aiohttp's error but unrelated: a name must not make an error retriable."""


def _client_error(code: str, status: int) -> boto.ClientError:
    return boto.ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


def _http_error(status: int) -> requests.HTTPError:
    resp = requests.Response()
    resp.status_code = status
    return requests.HTTPError(f"HTTP {status}", response=resp)


def _aiohttp_error(status: int) -> aiohttp.ClientResponseError:
    return aiohttp.ClientResponseError(None, (), status=status)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "retriable"),
    [
        (_client_error("SlowDown", 503), True),
        (_client_error("InternalError", 500), True),
        (_client_error("SlowDown", 400), True),  # a compatible server's odd status: the code decides
        (_client_error("TooManyRequests", 429), True),
        (_client_error("NoSuchKey", 404), False),
        (_client_error("AccessDenied", 403), False),
        (_client_error("PreconditionFailed", 412), False),
        (_client_error("NotImplemented", 501), False),
        (_http_error(503), True),
        (_http_error(429), True),
        (_http_error(408), True),
        (_http_error(404), False),
        (_http_error(416), False),
        (_aiohttp_error(502), True),
        (_aiohttp_error(403), False),
        (boto.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True),
        (boto.ConnectionClosedError(endpoint_url="http://127.0.0.1:1"), True),
        (boto.ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), True),
        (boto.ResponseStreamingError(error="reset"), True),
        (boto.IncompleteReadError(actual_bytes=1, expected_bytes=2), True),
        (boto.NoCredentialsError(), False),
        (u3.ProtocolError("Connection broken"), True),
        (u3.ReadTimeoutError(None, "/", "timed out"), True),
        (requests.ConnectionError("reset"), True),
        (requests.exceptions.ChunkedEncodingError("broken"), True),
        (requests.exceptions.InvalidURL("bad"), False),
        (aiohttp.ServerDisconnectedError(), True),
        (aiohttp.ClientPayloadError("cut"), True),
        (aiohttp.ClientOSError(errno.ECONNRESET, "reset"), True),
        (ConnectionResetError(errno.ECONNRESET, "reset"), True),
        (TimeoutError("stalled"), True),
        (OSError(errno.ENETUNREACH, "network unreachable"), True),
        (OSError(errno.ENOSPC, "no space left"), False),
        (FileNotFoundError(errno.ENOENT, "missing"), False),
        (PermissionError(errno.EACCES, "denied"), False),
        (ServerDisconnectedError(), False),
        (ValueError("bad data"), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_retriable_errors_are_classified_by_type_and_status(exc, retriable):
    assert is_retriable(exc) is retriable
