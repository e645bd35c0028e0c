"""One place for every byte raypipe reads or writes: ``s3://``, ``https://`` and local paths.

Why it exists: the same code must run against AWS, any S3-compatible endpoint (a test server on
127.0.0.1) and Common Crawl over HTTPS, with retries that survive throttling and resets, and with
writes that can never escape the configured output prefix. Credentials are never read here from
config: boto3 finds them in the environment or the cluster's identity.
"""

from __future__ import annotations

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

from raypipe.config import StorageConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

CRAWL_ID = re.compile(r"^CC-MAIN-\d{4}-\d{2}$")
_RETRIABLE_CODES = {
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "500",
    "502",
    "503",
    "504",
}
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


def is_retriable(exc: BaseException) -> bool:
    """True for throttling, 5xx answers and broken connections; False for 4xx and local errors."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    code = None
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", "")) or str(
            response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
        )
    elif response is not None:
        code = str(getattr(response, "status_code", "") or getattr(response, "status", ""))
    if code:
        return code in _RETRIABLE_CODES or code.startswith("5") or code == "429"
    name = type(exc).__name__
    return name in {
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
        "ResponseStreamingError",
        "IncompleteReadError",
        "ProtocolError",
        "ChunkedEncodingError",
        "ClientPayloadError",
        "ServerDisconnectedError",
        "ClientOSError",
        "IncompleteRead",
    }


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, so many workers never retry in lockstep."""

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

    def call(self, fn: Callable[[], T], what: str) -> T:
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except Exception as e:  # noqa: BLE001 - classified below
                if not is_retriable(e) or attempt == self.retries:
                    raise StorageError(f"{what}: {type(e).__name__}: {e}") from None
                wait = self.delay(attempt)
                log.warning("retrying %s in %.1fs after %s", redact(what), wait, type(e).__name__)
                time.sleep(wait)
        raise AssertionError("unreachable")


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
            config_kwargs={"retries": {"max_attempts": cfg.retries + 1, "mode": "adaptive"}},
        )
        return fs, uri[len("s3://") :]
    if scheme in ("http", "https"):
        return fsspec.filesystem(scheme), uri
    if scheme in ("", "file"):
        path = uri[len("file://") :] if scheme == "file" else uri
        return fsspec.filesystem("file"), os.path.abspath(path)
    raise StorageError(f"unsupported URI scheme {scheme!r} in {uri!r} (use s3://, https:// or a path)")


def _s3_client(cfg: StorageConfig) -> Any:
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    conf = Config(
        # Exactly one attempt: RetryPolicy does every retry (polite floor, jitter, rate limit).
        # botocore reads ``max_attempts`` as retries after the first, so it would add a hidden one.
        retries={"total_max_attempts": 1, "mode": "standard"},
        signature_version=UNSIGNED if cfg.anonymous else None,
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint(cfg),
        region_name=cfg.region or os.environ.get("AWS_REGION", "us-east-1"),
        config=conf,
    )


class ResumableStream(io.RawIOBase):
    """A read-only stream over one object, fetched with one GET and resumed with a Range GET.

    Common Crawl asks for one GET per WARC file and no bulk range reads; when a connection breaks
    mid-file we reopen at the byte we reached, so a reset costs one extra request, not the file.
    Every GET first passes the run-wide rate limit when ``requests_per_second`` is set.
    """

    def __init__(self, uri: str, cfg: StorageConfig):
        self.uri = uri
        self.cfg = cfg
        self.policy = RetryPolicy.from_config(cfg)
        self.pos = 0
        self._gate: Callable[[], float] | None = None
        self._body: Any = None
        self._client: Any = None
        self._eof = False

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
        return self.pos

    def _open(self) -> Any:
        parsed = urlparse(self.uri)
        if parsed.scheme in ("s3", "http", "https"):
            if self._gate is None:
                from raypipe.ratelimit import request_gate

                self._gate = request_gate(self.cfg)
            self._gate()
        if parsed.scheme == "s3":
            if self._client is None:
                self._client = _s3_client(self.cfg)
            kwargs = {"Bucket": parsed.netloc, "Key": parsed.path.lstrip("/")}
            if self.pos:
                kwargs["Range"] = f"bytes={self.pos}-"
            return self._client.get_object(**kwargs)["Body"]
        if parsed.scheme in ("http", "https"):
            import requests

            headers = {"Range": f"bytes={self.pos}-"} if self.pos else {}
            resp = requests.get(self.uri, stream=True, timeout=(10, 60), headers=headers)
            if resp.status_code >= 400:
                err = requests.HTTPError(f"HTTP {resp.status_code} for {self.uri}")
                err.response = resp
                resp.close()
                raise err
            resp.raw.decode_content = False
            return resp.raw
        path = self.uri[len("file://") :] if parsed.scheme == "file" else self.uri
        try:
            f = open(path, "rb")  # noqa: SIM115 - owned by this stream
        except FileNotFoundError:
            raise StorageError(f"input not found: {self.uri}") from None
        f.seek(self.pos)
        return f

    def readinto(self, buf: Any) -> int:
        if self._eof:
            return 0
        view = memoryview(buf).cast("B")

        def attempt() -> bytes:
            if self._body is None:
                self._body = self._open()
            try:
                return self._body.read(len(view))
            except Exception:
                self._close_body()
                raise

        data = self.policy.call(attempt, f"read {self.uri} at byte {self.pos}")
        if not data:
            self._eof = True
            return 0
        n = len(data)
        view[:n] = data
        self.pos += n
        return n

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
        self.policy = RetryPolicy.from_config(cfg)

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
        return self.policy.call(lambda: self.fs.exists(self.key(rel)), f"stat {self.uri(rel)}")

    def read_bytes(self, rel: str) -> bytes:
        def go() -> bytes:
            with self.fs.open(self.key(rel), "rb") as f:
                return f.read()

        return self.policy.call(go, f"read {self.uri(rel)}")

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

        self.policy.call(go, f"write {self.uri(rel)}")
        return self.uri(rel)

    def write_text(self, rel: str, text: str) -> str:
        return self.write_bytes(rel, text.encode())

    def list(self, rel: str) -> list[str]:
        """Keys (relative to the prefix) of every object under ``rel``; empty if none."""
        base = self.key(rel, allow_root=True)

        def go() -> list[str]:
            if not self.fs.exists(base):
                return []
            return sorted(p[len(self.root) + 1 :] for p in self.fs.find(base))

        return self.policy.call(go, f"list {self.uri(rel)}")

    def delete(self, rel: str) -> None:
        path = self.key(rel)
        self.policy.call(
            lambda: self.fs.rm(path, recursive=True) if self.fs.exists(path) else None,
            f"delete {self.uri(rel)}",
        )

    def arrow_filesystem(self) -> Any:
        """A pyarrow filesystem over the same fsspec filesystem (same endpoint, same credentials),
        for pyarrow and Ray Data readers."""
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        return PyFileSystem(FSSpecHandler(self.fs))

    def iter_files(self, rel: str, suffix: str = "") -> Iterator[str]:
        yield from (k for k in self.list(rel) if k.endswith(suffix))
