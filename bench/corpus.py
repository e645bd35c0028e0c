"""A benchmark WARC corpus built from the real pages under ``../shared/data/html``.

Why build one: the WARCs in ``../shared/data/warc`` hold ~900 pages in small files, too few to
time anything or to show that memory stays flat. Here every page becomes a Common-Crawl-like
``request`` + ``response`` pair (payload byte for byte, synthesized HTTP headers), one gzip member
per record, repeated ``scale`` times (copy k > 0 gets ``raypipe_copy=k`` in its URL and its own
record id). Every response carries ``WARC-Identified-Payload-Type: text/html`` as Common Crawl's
do: without it DataTrove's WarcReader guesses the type with libmagic and drops ~14% of these real
pages, which would make it look faster (DESIGN.md, "Benchmarking against peers fairly").

The output is deterministic (fixed record ids and dates) and cached under ``.bench/corpus``.
"""

from __future__ import annotations

import gzip
import io
import json
import multiprocessing
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from bench.peers import BENCH_DIR

CORPUS_VERSION = 1
WARC_DATE = "2024-05-18T01:58:10Z"
SOURCES = ("trafilatura", "scrapinghub_aeb")


@dataclass(frozen=True)
class Page:
    url: str
    charset: str | None
    html: bytes


def load_pages(shared: Path, limit: int | None = None) -> list[Page]:
    """Every page of the shared HTML sets, in index order (``limit`` takes the first N)."""
    pages = []
    for source in SOURCES:
        folder = shared / "html" / source
        for line in (folder / "index.jsonl").read_text().splitlines():
            item = json.loads(line)
            html = gzip.decompress((folder / item["file"]).read_bytes())
            pages.append(Page(item["url"], item.get("meta_charset"), html))
    return pages[:limit] if limit else pages


def _copy_url(url: str, copy: int) -> str:
    if copy == 0:
        return url
    base, _, fragment = url.partition("#")
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}raypipe_copy={copy}" + (f"#{fragment}" if fragment else "")


def _record_id(kind: str, url: str) -> str:
    return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{kind}:{url}')}>"


def _serialize(make_record) -> bytes:
    """One WARC record as bytes (warcio writes it; we compress it ourselves, see write_warc)."""
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=False)
    writer.write_record(make_record(writer))
    return buf.getvalue()


def _records(page: Page, copy: int) -> list[bytes]:
    """The request and response records of one page copy, uncompressed."""
    url = _copy_url(page.url, copy)
    host = url.split("/")[2] if "//" in url else "localhost"
    request = StatusAndHeaders(
        "GET / HTTP/1.1",
        [("Host", host), ("User-Agent", "raypipe-bench/1.0")],
        protocol="HTTP/1.1",
        is_http_request=True,
    )
    ctype = f"text/html; charset={page.charset}" if page.charset else "text/html"
    response = StatusAndHeaders(
        "200 OK", [("Content-Type", ctype), ("Content-Length", str(len(page.html)))], protocol="HTTP/1.1"
    )
    return [
        _serialize(
            lambda w: w.create_warc_record(
                url,
                "request",
                http_headers=request,
                warc_headers_dict={"WARC-Date": WARC_DATE, "WARC-Record-ID": _record_id("request", url)},
            )
        ),
        _serialize(
            lambda w: w.create_warc_record(
                url,
                "response",
                payload=io.BytesIO(page.html),
                length=len(page.html),
                http_headers=response,
                warc_headers_dict={
                    "WARC-Date": WARC_DATE,
                    "WARC-Record-ID": _record_id("response", url),
                    "WARC-Identified-Payload-Type": "text/html",
                },
            )
        ),
    ]


def _copy_members(copy: int) -> bytes:
    """Copy ``copy`` of every page as gzip members (runs in a worker process; pages come by fork)."""
    return b"".join(gzip.compress(r, compresslevel=1, mtime=0) for page in _PAGES for r in _records(page, copy))


_PAGES: list[Page] = []


def write_warc(pages: list[Page], scale: int, path: Path) -> list[int]:
    """Write ``scale`` copies of ``pages`` as one record-compressed WARC.

    Returns the byte offset at which each copy ends, so a smaller scale is a prefix of this file.
    zlib level 1 and a process per core keep a 16x build to about a minute here.
    """
    global _PAGES
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    ends = []
    _PAGES = pages
    with tmp.open("wb") as out, multiprocessing.get_context("fork").Pool(max(1, os.cpu_count() or 1)) as pool:
        info = _serialize(
            lambda w: w.create_warcinfo_record(path.name, {"software": "raypipe bench", "isPartOf": "raypipe-bench"})
        )
        out.write(gzip.compress(info, compresslevel=1, mtime=0))
        for members in pool.imap(_copy_members, range(scale)):
            out.write(members)
            ends.append(out.tell())
    _PAGES = []
    tmp.rename(path)
    return ends


def ensure_corpus(shared: Path, scales: tuple[int, ...], limit: int | None = None, root: Path = BENCH_DIR) -> dict:
    """``{scale: {path, scale, pages, html_bytes, file_bytes}}`` of cached corpus files.

    The largest scale is written once; every smaller one is a byte prefix of it (whole copies).
    """
    folder = root / "corpus"
    tag = f"v{CORPUS_VERSION}-{'all' if limit is None else limit}"
    manifest_path = folder / f"manifest-{tag}.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    if all(_fresh(manifest.get(str(s))) for s in scales):
        return {s: manifest[str(s)] for s in scales}
    pages = load_pages(shared, limit)
    top = max(scales)
    big = folder / f"pages-{tag}-{top}x.warc.gz"
    print(f"corpus: writing {top}x ({len(pages) * top} pages) to {big} (cached for later runs)", flush=True)
    ends = write_warc(pages, top, big)
    html = sum(len(p.html) for p in pages)
    for scale in sorted(scales):
        path = folder / f"pages-{tag}-{scale}x.warc.gz"
        if scale != top:
            with big.open("rb") as src, path.open("wb") as dst:
                dst.write(src.read(ends[scale - 1]))
        entry = {"path": str(path), "scale": scale, "pages": len(pages) * scale, "html_bytes": html * scale}
        manifest[str(scale)] = {**entry, "file_bytes": path.stat().st_size}
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return {s: manifest[str(s)] for s in scales}


def _fresh(entry: dict | None) -> bool:
    return bool(entry) and Path(entry["path"]).is_file() and Path(entry["path"]).stat().st_size == entry["file_bytes"]
