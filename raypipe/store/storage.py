"""One place for every byte raypipe reads or writes: ``s3://``, ``https://`` and local paths.

Why it exists: the same code must run against AWS, any S3-compatible endpoint (a test server on
127.0.0.1) and Common Crawl over HTTPS, with retries that survive throttling and resets, and with
writes that can never escape the configured output prefix. Credentials are never read here from
config: boto3 finds them in the environment or the cluster's identity.
"""

from __future__ import annotations

import errno
import functools
import gzip
import io
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlparse

import fsspec
from isal import isal_zlib

from raypipe.config import StorageConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

CRAWL_ID = re.compile(r"^CC-MAIN-\d{4}-\d{2}$")
# HTTP answers worth another try: timeouts, throttling and server-side failures. 501 (Not
# Implemented) and 505 (version) will not change on a retry.
_RETRIABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504, 507, 509, 598, 599})
# S3 error codes that mean "later", whatever status a compatible server attaches to them.
_RETRIABLE_S3_CODES = frozenset(
    {
        "SlowDown",
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
    }
)
# Most bytes one read asks of a body: a read that breaks loses what it had received, so small
# pieces keep the progress a broken connection made (and with it the resume budget).
_READ_PIECE = 1 << 15
# Network failures that an errno names without Python giving them their own subclass.
_RETRIABLE_ERRNO = frozenset({errno.ENETDOWN, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETRESET})
_SECRET_PATTERNS = [
    re.compile(r"(?i)(aws_secret_access_key|aws_session_token|secret|token|signature|credential)=([^&\s'\"]+)"),
    re.compile(r"(?i)(Authorization:?\s*)(AWS4-HMAC-SHA256\s+)?[^\s'\"]+"),
]


class StorageError(IOError):
    """An input or output could not be read or written after all retries; the message names it.

    The message is redacted on construction: it names URIs, and a pasted signed URL carries its
    credential in the query string.
    """

    def __init__(self, message: str):
        super().__init__(redact(message))


def redact(text: str) -> str:
    """Remove anything that looks like a credential from a message before it is logged or stored."""
    for env in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"):
        val = os.environ.get(env)
        if val and len(val) >= 4:
            text = text.replace(val, "***")
    for pat in _SECRET_PATTERNS:
        text = pat.sub(lambda m: m.group(1) + "***", text)
    return text


@functools.cache
def _transient_types() -> tuple[type[BaseException], ...]:
    """Exception classes that mean "the connection broke or stalled", from every client we use.

    Imported once, lazily: botocore, urllib3, requests and aiohttp are all installed, but a local
    run should not pay for importing them before it touches the network.
    """
    from http.client import IncompleteRead

    import aiohttp
    import botocore.exceptions as boto
    import requests
    import urllib3.exceptions as u3

    return (
        ConnectionError,  # the builtin: resets, refusals, broken pipes
        TimeoutError,  # also socket.timeout, asyncio and fsspec timeouts, aiohttp.ServerTimeoutError
        IncompleteRead,  # http.client; urllib3's IncompleteRead subclasses it
        boto.HTTPClientError,  # ConnectionClosedError, ReadTimeoutError, ResponseStreamingError
        boto.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError
        boto.IncompleteReadError,  # a body shorter than its Content-Length
        u3.ProtocolError,  # "Connection broken" mid-body
        u3.TimeoutError,
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
        aiohttp.ClientConnectionError,  # ServerDisconnectedError, ClientOSError, ClientConnectorError
        aiohttp.ClientPayloadError,
    )


def _status_of(exc: BaseException) -> tuple[int | None, str | None]:
    """The HTTP status and (for S3) error code an exception carries, if it came from an answer."""
    import aiohttp
    import botocore.exceptions as boto
    import requests

    if isinstance(exc, boto.ClientError):
        meta = exc.response.get("ResponseMetadata", {})
        return meta.get("HTTPStatusCode"), exc.response.get("Error", {}).get("Code")
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return exc.response.status_code, None
    if isinstance(exc, aiohttp.ClientResponseError):
        return exc.status, None
    return None, None


def is_retriable(exc: BaseException) -> bool:
    """True for throttling, 5xx answers and broken or stalled connections; False for the rest.

    Decided by exception type and HTTP status code (or S3 error code), never by class name: an
    answer (4xx, 5xx) is judged by its status alone, even when its class would also pass as a
    connection error; a local ``OSError`` (missing file, full disk, permissions) is not retriable
    unless its errno says the network went away.
    """
    status, code = _status_of(exc)
    if status is not None or code is not None:
        return code in _RETRIABLE_S3_CODES or status in _RETRIABLE_STATUS
    if isinstance(exc, _transient_types()):
        return True
    return isinstance(exc, OSError) and exc.errno in _RETRIABLE_ERRNO


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, so many workers never retry in lockstep.

    Used where raypipe itself retries: HTTPS requests, pauses before resuming a stream that broke
    mid-body, and the crawler. S3 input GETs are retried by botocore alone (see ``botocore_retries``),
    which waits as this policy says (see ``BotocoreBackoff``).
    """

    retries: int = 8
    base_s: float = 0.5
    max_s: float = 20.0

    @classmethod
    def from_config(cls, cfg: StorageConfig) -> RetryPolicy:
        return cls(cfg.retries, cfg.backoff_base_s, cfg.backoff_max_s)

    def delay(self, attempt: int) -> float:
        """Never less than ``base_s`` (a source asking for about one retry per second gets no
        faster ones), up to twice the previous ceiling, capped at ``max_s``."""
        return random.uniform(self.base_s, max(self.base_s, min(self.max_s, self.base_s * 2 ** (attempt + 1))))


def botocore_retries(cfg: StorageConfig) -> dict[str, Any]:
    """The one retry layer for S3: botocore's adaptive mode, with ``storage.retries`` retries.

    Adaptive mode is standard mode (exponential backoff with jitter on throttling, 5xx and broken
    connections, within a retry quota) plus a client-side rate that drops after throttling. botocore
    counts ``total_max_attempts`` including the first try. Its own backoff ignores
    ``storage.backoff_base_s``; the input client replaces it (``use_storage_backoff``).
    """
    return {"mode": "adaptive", "total_max_attempts": cfg.retries + 1}


class BotocoreBackoff:
    """``RetryPolicy``'s waits for botocore's retry handler (botocore's ``BaseRetryBackoff`` interface).

    Why: botocore has no setting for its backoff, and its own waits ``rand(0, 1) * 2 ** n`` seconds,
    so a retry can follow a 503 SlowDown within milliseconds, sooner than ``storage.backoff_base_s``
    promises a source. Each retry is logged (botocore retries silently), naming the object.
    """

    def __init__(self, policy: RetryPolicy, max_attempts: int):
        self.policy = policy
        self.max_attempts = max_attempts

    def delay_amount(self, context: Any) -> float:
        """The wait before the retry that follows attempt ``context.attempt_number`` (1 = first try)."""
        wait = self.policy.delay(context.attempt_number - 1)
        params = context.request_context.get("input_params") or {}
        what = f"s3://{params['Bucket']}/{params['Key']}" if "Key" in params else "s3 request"
        exc = context.caught_exception
        cause = context.get_error_code() or (type(exc).__name__ if exc is not None else "an error")
        log.warning(
            "retrying S3 %s %s in %.2fs after %s (attempt %d of %d)",
            context.operation_model.name,
            redact(what),
            wait,
            cause,
            context.attempt_number + 1,
            self.max_attempts,
        )
        return wait


def use_storage_backoff(client: Any, cfg: StorageConfig) -> None:
    """Make botocore's retries of ``client`` wait as ``storage.backoff_base_s``/``backoff_max_s`` say.

    botocore builds its standard retry handler from parts (retry conditions, retry quota, backoff)
    and registers it on ``needs-retry`` under one id. We register the same parts with our backoff
    under that id in its place: botocore still decides what to retry and how often (one retry
    layer, ``storage.retries``), adaptive mode still adjusts its rate, and only the wait changes.
    """
    from botocore.retries import quota, standard

    service = client.meta.service_model.service_id.hyphenize()
    attempts = cfg.retries + 1
    retry_quota = standard.RetryQuotaChecker(quota.RetryQuota())
    handler = standard.RetryHandler(
        retry_policy=standard.RetryPolicy(
            retry_checker=standard.StandardRetryConditions(max_attempts=attempts),
            retry_backoff=BotocoreBackoff(RetryPolicy.from_config(cfg), attempts),
        ),
        retry_event_adapter=standard.RetryEventAdapter(),
        retry_quota=retry_quota,
    )
    events = client.meta.events
    events.unregister(f"needs-retry.{service}", unique_id=f"retry-config-{service}")
    events.register(f"needs-retry.{service}", handler.needs_retry, unique_id=f"retry-config-{service}")
    events.register(f"after-call.{service}", retry_quota.release_retry_quota)


def s3_endpoint(cfg: StorageConfig) -> str | None:
    return cfg.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def has_aws_credentials() -> bool:
    """Whether boto3 can find credentials (environment, profile or cluster identity)."""
    import boto3

    return boto3.Session().get_credentials() is not None


def filesystem(uri: str, cfg: StorageConfig) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and bare path for a URI, configured for our endpoint and retries."""
    scheme = urlparse(uri).scheme
    if scheme == "s3":
        import s3fs

        fs = s3fs.S3FileSystem(
            anon=cfg.anonymous,
            endpoint_url=s3_endpoint(cfg),
            client_kwargs={"region_name": cfg.region or os.environ.get("AWS_REGION", "us-east-1")},
            config_kwargs={"retries": botocore_retries(cfg)},
        )
        # s3fs wraps each botocore call in its own loop of ``retries`` tries (SlowDown, resets),
        # which would multiply botocore's budget: one try here leaves botocore the only layer.
        fs.retries = 1
        return fs, uri[len("s3://") :]
    if scheme in ("http", "https"):
        return fsspec.filesystem(scheme), uri
    if scheme in ("", "file"):
        path = uri[len("file://") :] if scheme == "file" else uri
        return fsspec.filesystem("file"), os.path.abspath(path)
    raise StorageError(f"unsupported URI scheme {scheme!r} in {uri!r} (use s3://, https:// or a path)")


def _s3_client(cfg: StorageConfig) -> Any:
    """The process's boto3 client for input reads under ``cfg`` (one per distinct setting)."""
    return _cached_s3_client(
        s3_endpoint(cfg),
        cfg.region or os.environ.get("AWS_REGION", "us-east-1"),
        cfg.anonymous,
        cfg.retries,
        cfg.backoff_base_s,
        cfg.backoff_max_s,
        cfg.requests_per_second,
        cfg.request_burst,
    )


@functools.cache
def _cached_s3_client(
    endpoint: str | None,
    region: str,
    anonymous: bool,
    retries: int,
    backoff_base_s: float,
    backoff_max_s: float,
    rate: float | None,
    burst: int,
) -> Any:
    """One client per process and setting, so botocore's adaptive rate and retry quota see every
    read of the process, not one file's. botocore's retries wait at least ``storage.backoff_base_s``
    (``use_storage_backoff``). Every attempt of a GetObject, botocore's retries included, first
    passes the run-wide rate limit: the gate hangs on ``before-send``, which botocore emits once per
    attempt."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    from raypipe.ratelimit import request_gate

    cfg = StorageConfig(
        retries=retries,
        backoff_base_s=backoff_base_s,
        backoff_max_s=backoff_max_s,
        requests_per_second=rate,
        request_burst=burst,
    )
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        config=Config(
            retries=botocore_retries(cfg),
            signature_version=UNSIGNED if anonymous else None,
            connect_timeout=10,
            read_timeout=60,
        ),
    )
    use_storage_backoff(client, cfg)
    if rate:
        gate = request_gate(cfg)

        def wait_for_slot(**_: Any) -> None:
            gate()  # a handler that returned anything would stand in for the HTTP response

        client.meta.events.register("before-send.s3.GetObject", wait_for_slot)
    return client


class ResumableStream(io.RawIOBase):
    """A read-only stream over one object, fetched with one GET and resumed with a Range GET.

    Common Crawl asks for one GET per WARC file and no bulk range reads; when a connection breaks
    mid-file we reopen at the byte we reached, so a reset costs one extra request, not the file.

    Retries: an S3 GET is retried by botocore alone; an HTTPS GET by the loop here alone. A body
    that breaks mid-read is reopened after a backoff, at most ``storage.retries`` times in a row
    without progress. A resume is accepted only as ``206 Partial Content`` starting at the byte we
    asked for. A server that ignores ``Range`` answers 200 with the whole object: we re-read it from
    byte 0, check that the bytes already delivered are the same (CRC-32 of the prefix) and go on
    from there, or fail the file if they differ; a body is never spliced in at the wrong offset.
    (The running CRC-32, with ISA-L, costs 0.2% of the WARC read path on the shared WARCs.)
    Every HTTPS GET first passes the run-wide rate limit (S3 GETs do, inside botocore).
    """

    def __init__(self, uri: str, cfg: StorageConfig, rate_limited: bool = True):
        self.uri = uri
        self.cfg = cfg
        self.scheme = urlparse(uri).scheme
        self.remote = self.scheme in ("s3", "http", "https")
        self.policy = RetryPolicy.from_config(cfg)
        self.rate_limited = rate_limited
        self.pos = 0
        self._gate: Callable[[], float] | None = None
        self._body: Any = None
        self._eof = False
        self._crc: int | None = 0  # CRC-32 of bytes [0, pos) delivered so far; None after a seek
        self._etag: str | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Reposition lazily: the next read reopens the object at the new byte (a Range GET)."""
        target = {io.SEEK_SET: offset, io.SEEK_CUR: self.pos + offset}.get(whence)
        if target is None or target < 0:
            raise io.UnsupportedOperation("only absolute or relative seeks are supported")
        if target != self.pos:
            self._close_body()
            self.pos = target
            self._eof = False
            self._crc = 0 if target == 0 else None
        return self.pos

    def _open(self) -> Any:
        if self.scheme == "s3":
            return self._open_s3()
        if self.scheme in ("http", "https"):
            return self._open_http()
        path = self.uri[len("file://") :] if self.scheme == "file" else self.uri
        try:
            f = open(path, "rb")  # noqa: SIM115 - owned by this stream
        except FileNotFoundError:
            raise StorageError(f"input not found: {self.uri}") from None
        f.seek(self.pos)
        return f

    def _open_s3(self) -> Any:
        parsed = urlparse(self.uri)
        cfg = self.cfg if self.rate_limited else self.cfg.model_copy(update={"requests_per_second": None})
        kwargs: dict[str, Any] = {"Bucket": parsed.netloc, "Key": parsed.path.lstrip("/")}
        if self.pos:
            kwargs["Range"] = f"bytes={self.pos}-"
            if self._etag:
                kwargs["IfMatch"] = self._etag  # a replaced object answers 412, never other bytes
        resp = _s3_client(cfg).get_object(**kwargs)
        self._etag = self._etag or resp.get("ETag")
        status = resp["ResponseMetadata"]["HTTPStatusCode"]
        try:
            return self._accept(resp["Body"], status, resp.get("ContentRange"))
        except BaseException:
            resp["Body"].close()
            raise

    def _open_http(self) -> Any:
        import requests

        if self.rate_limited:
            if self._gate is None:
                from raypipe.ratelimit import request_gate

                self._gate = request_gate(self.cfg)
            self._gate()
        headers = {"Range": f"bytes={self.pos}-"} if self.pos else {}
        if self.pos and self._etag:
            headers["If-Range"] = self._etag  # changed since: the server answers 200, caught below
        resp = requests.get(self.uri, stream=True, timeout=(10, 60), headers=headers)
        if resp.status_code >= 400:
            err = requests.HTTPError(f"HTTP {resp.status_code} for {self.uri}", response=resp)
            resp.close()
            raise err
        etag = resp.headers.get("ETag")
        if not self._etag and etag and not etag.startswith("W/"):
            self._etag = etag
        resp.raw.decode_content = False
        try:
            return self._accept(resp.raw, resp.status_code, resp.headers.get("Content-Range"))
        except BaseException:
            resp.close()
            raise

    def _accept(self, body: Any, status: int, content_range: str | None) -> Any:
        """The body positioned at ``self.pos``, or a StorageError when that cannot be had safely."""
        if not self.pos:
            if status != 200:
                raise StorageError(f"read {self.uri}: expected 200 OK, got {status}")
            return body
        if status == 206:
            if not (content_range or "").startswith(f"bytes {self.pos}-"):
                raise StorageError(
                    f"read {self.uri}: asked for bytes {self.pos}- but got Content-Range {content_range!r}"
                )
            return body
        if status != 200:
            raise StorageError(f"read {self.uri}: a Range request got {status}, not 206 Partial Content")
        if self._crc is None:
            raise StorageError(f"read {self.uri}: the server ignored Range after a seek; cannot resume safely")
        log.warning("%s ignored Range at byte %d: re-reading from byte 0", redact(self.uri), self.pos)
        crc, left = 0, self.pos
        while left:
            chunk = body.read(min(left, 1 << 20))
            if not chunk:
                raise StorageError(f"read {self.uri}: the object is now shorter than the {self.pos} bytes read")
            crc = isal_zlib.crc32(chunk, crc)
            left -= len(chunk)
        if crc != self._crc:
            raise StorageError(f"read {self.uri}: the object changed while being read; refusing to splice")
        return body

    def readinto(self, buf: Any) -> int:
        if self._eof:
            return 0
        view = memoryview(buf).cast("B")
        failures = 0
        while True:
            opening = self._body is None
            try:
                if opening:
                    self._body = self._open()
                    opening = False
                data = self._body.read(min(len(view), _READ_PIECE))
                break
            except StorageError:
                self._close_body()
                raise
            except Exception as e:  # noqa: BLE001 - classified below
                self._close_body()
                # botocore has already spent the retry budget on a failed S3 GET: no second layer.
                done_by_botocore = opening and self.scheme == "s3"
                if done_by_botocore or not is_retriable(e) or failures >= self.policy.retries:
                    raise StorageError(f"read {self.uri} at byte {self.pos}: {type(e).__name__}: {e}") from None
                wait = self.policy.delay(failures)
                failures += 1
                log.warning(
                    "retrying %s at byte %d in %.1fs after %s", redact(self.uri), self.pos, wait, type(e).__name__
                )
                time.sleep(wait)
        if not data:
            self._eof = True
            return 0
        n = len(data)
        view[:n] = data
        self.pos += n
        if self._crc is not None and self.remote:
            self._crc = isal_zlib.crc32(data, self._crc)
        return n

    def readall(self) -> bytes:
        """The rest of the object in 1 MiB reads (io's default readall reads 8 KiB at a time)."""
        chunks = []
        buf = bytearray(1 << 20)
        while n := self.readinto(buf):
            chunks.append(bytes(buf[:n]))
        return b"".join(chunks)

    def _close_body(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            try:
                body.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail too
                pass

    def close(self) -> None:
        self._close_body()
        super().close()


def open_input(uri: str, cfg: StorageConfig, buffer_size: int = 1 << 20) -> io.BufferedReader:
    """A buffered, resumable, streaming reader for one input object."""
    return io.BufferedReader(ResumableStream(uri, cfg), buffer_size=buffer_size)


def read_bytes(uri: str, cfg: StorageConfig) -> bytes:
    with open_input(uri, cfg) as f:
        return f.read()


def _commoncrawl_listing(crawl_id: str, cfg: StorageConfig) -> list[str]:
    """WARC URIs of one Common Crawl dump: over S3 with credentials, over HTTPS without."""
    key = f"crawl-data/{crawl_id}/warc.paths.gz"
    use_s3 = has_aws_credentials() and not cfg.anonymous
    base = "s3://commoncrawl/" if use_s3 else cfg.commoncrawl_https.rstrip("/") + "/"
    listing = gzip.decompress(read_bytes(base + key, cfg)).decode()
    return [base + line.strip() for line in listing.splitlines() if line.strip()]


def expand_inputs(spec: str | list[str], cfg: StorageConfig, limit_files: int | None = None) -> list[str]:
    """Turn the ``input`` setting into a sorted, de-duplicated list of WARC URIs."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for item in specs:
        if CRAWL_ID.match(item):
            out.extend(_commoncrawl_listing(item, cfg))
            continue
        fs, path = filesystem(item, cfg)
        scheme = urlparse(item).scheme
        if scheme in ("http", "https"):
            out.append(item)
            continue
        prefix = "s3://" if scheme == "s3" else ""
        if any(ch in path for ch in "*?["):
            matches = sorted(fs.glob(path))
            if not matches:
                raise StorageError(f"input glob matched nothing: {item}")
            out.extend(prefix + m for m in matches if not fs.isdir(m))
        elif fs.isdir(path):
            found = sorted(p for p in fs.find(path) if re.search(r"\.(warc|arc)(\.gz)?$", p) and "/." not in p)
            if not found:
                raise StorageError(f"input directory has no .warc/.warc.gz files: {item}")
            out.extend(prefix + p for p in found)
        elif fs.exists(path):
            out.append(prefix + path)
        else:
            raise StorageError(f"input not found: {item}")
    seen: set[str] = set()
    uris = [u for u in out if not (u in seen or seen.add(u))]
    uris = uris if CRAWL_ID.match(specs[0]) else sorted(uris)
    return uris[:limit_files] if limit_files else uris


class OutputStore:
    """All writes of a run go through here, and none may leave the output prefix.

    Keys are relative; ``..``, absolute keys and other buckets are rejected. Small files are
    written atomically (temporary name, then the final one) so a reader never sees half a file.
    """

    def __init__(self, prefix: str, cfg: StorageConfig):
        self.prefix = prefix.rstrip("/")
        self.cfg = cfg
        self.fs, self.root = filesystem(self.prefix, cfg)
        self.is_s3 = self.prefix.startswith("s3://")

    def call(self, fn: Callable[[], T], what: str) -> T:
        """Run one storage operation and name it in the error if it fails.

        No retries here: on S3 botocore has already retried every request in ``fn`` (one layer,
        ``storage.retries``), and a local filesystem error does not heal by trying again.
        """
        try:
            return fn()
        except StorageError:
            raise
        except Exception as e:  # noqa: BLE001 - every failure becomes one clear StorageError
            raise StorageError(f"{what}: {type(e).__name__}: {e}") from None

    def key(self, rel: str, allow_root: bool = False) -> str:
        """The filesystem path of a key under the prefix; refuses anything that would escape it."""
        rel = rel.replace("\\", "/")
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if rel.startswith("/") or "://" in rel or any(p == ".." for p in parts) or not (parts or allow_root):
            raise StorageError(f"refusing to write outside the output prefix: {rel!r}")
        return "/".join([self.root, *parts])

    def uri(self, rel: str) -> str:
        return ("s3://" if self.is_s3 else "") + self.key(rel, allow_root=True)

    def exists(self, rel: str) -> bool:
        return self.call(lambda: self.fs.exists(self.key(rel)), f"stat {self.uri(rel)}")

    def read_bytes(self, rel: str) -> bytes:
        """One object's bytes, through the resumable reader: a body cut mid-read is resumed with a
        Range GET, which a plain s3fs read (one try, see ``filesystem``) would not do. Reads of our
        own output do not count against the input rate limit."""
        with io.BufferedReader(ResumableStream(self.uri(rel), self.cfg, rate_limited=False)) as f:
            return f.read()

    def write_bytes(self, rel: str, data: bytes) -> str:
        """Write one object atomically: a temporary key first, then the final key."""
        final = self.key(rel)
        tmp = self.key(f"_tmp/{rel.replace('/', '__')}.{os.getpid()}.{random.getrandbits(32):08x}")

        def go() -> None:
            if not self.is_s3:
                self.fs.makedirs(os.path.dirname(final), exist_ok=True)
                self.fs.makedirs(os.path.dirname(tmp), exist_ok=True)
            with self.fs.open(tmp, "wb") as f:
                f.write(data)
            self.fs.mv(tmp, final)

        self.call(go, f"write {self.uri(rel)}")
        return self.uri(rel)

    def write_text(self, rel: str, text: str) -> str:
        return self.write_bytes(rel, text.encode())

    def list(self, rel: str) -> list[str]:
        """Keys (relative to the prefix) of every object under ``rel``; empty if none."""
        base = self.key(rel, allow_root=True)

        def go() -> list[str]:  # find() of a missing folder is empty: no existence check (a request on S3)
            return sorted(p[len(self.root) + 1 :] for p in self.fs.find(base))

        return self.call(go, f"list {self.uri(rel)}")

    def delete(self, rel: str) -> None:
        path = self.key(rel)
        self.call(
            lambda: self.fs.rm(path, recursive=True) if self.fs.exists(path) else None,
            f"delete {self.uri(rel)}",
        )

    def delete_keys(self, rels: list[str]) -> None:
        """Delete many objects at once: on S3 one DeleteObjects call per 1,000 keys (s3fs batches
        them), not one call each; on a local disk the folders left empty go too."""
        paths = sorted({self.key(r) for r in rels})
        if not paths:
            return

        def go() -> None:
            if self.is_s3:
                self.fs.rm(paths)
                return
            for path in paths:
                if os.path.lexists(path):
                    os.remove(path)
            for folder in sorted({os.path.dirname(p) for p in paths}, key=len, reverse=True):
                while folder.startswith(self.root + os.sep) and os.path.isdir(folder) and not os.listdir(folder):
                    os.rmdir(folder)
                    folder = os.path.dirname(folder)

        self.call(go, f"delete {len(paths)} objects under {self.uri('')}")

    def arrow_filesystem(self) -> Any:
        """A pyarrow filesystem over the same fsspec filesystem (same endpoint, same credentials),
        for pyarrow and Ray Data readers."""
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        return PyFileSystem(FSSpecHandler(self.fs))

    def iter_files(self, rel: str, suffix: str = "") -> Iterator[str]:
        yield from (k for k in self.list(rel) if k.endswith(suffix))
