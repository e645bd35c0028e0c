"""Damaged WARC files built at test time from real records of ../shared/data (never copied into
the repo): each breaks one way real archives break, and says what the reader must count.

Used by ``tests/store/test_bad_input.py`` (reader and extractor, no Ray) and by the end-to-end
reliability tests (the whole job over them must complete and its funnel must add up).
"""

from __future__ import annotations

import gzip
import random
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.fuzz_targets import split_members

# Config the e2e runs use too: small caps so "enormous" pages stay small on disk.
MAX_HTML_BYTES = 200_000
MAX_RECORD_BYTES = 1_000_000


@dataclass
class BadWarc:
    """One damaged file and what reading it must report."""

    path: Path
    records: int  # records the reader must count (rows + skips)
    html: int  # HTML responses it must still deliver
    skipped: dict[str, int] = field(default_factory=dict)  # skip reasons that must appear, at least this often
    damage: dict[str, int] = field(default_factory=dict)


def response_record(url: str, payload: bytes, content_type: str = "text/html", status: int = 200) -> bytes:
    """One uncompressed WARC/1.1 response record around an HTTP answer carrying ``payload``."""
    http = (
        f"HTTP/1.1 {status} OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    head = (
        "WARC/1.1\r\nWARC-Type: response\r\n"
        f"WARC-Record-ID: <urn:uuid:{random.Random(url).getrandbits(128):032x}>\r\n"
        "WARC-Date: 2024-05-18T01:58:10Z\r\n"
        f"WARC-Target-URI: {url}\r\n"
        "Content-Type: application/http; msgtype=response\r\n"
        f"Content-Length: {len(http)}\r\n\r\n"
    ).encode()
    return head + http + b"\r\n\r\n"


def _page(shared: Path, index: int) -> bytes:
    """A real page (trafilatura's test set), decompressed."""
    pages = sorted((shared / "html" / "trafilatura" / "pages").glob("*.html.gz"))
    return gzip.decompress(pages[index].read_bytes())


def build_bad_warcs(shared: Path, out: Path) -> dict[str, BadWarc]:
    """Write every damaged file under ``out``; returns them by name."""
    out.mkdir(parents=True, exist_ok=True)
    source = (shared / "warc" / "cc" / "resiliparse_warcfile_CC-MAIN-2020-34.warc.gz").read_bytes()
    members = split_members(source)  # warcinfo, then request/response/metadata triples
    responses = [i for i, m in enumerate(members) if b"WARC-Type: response" in gzip.decompress(m)[:600]]
    n, n_html = len(members), len(responses)
    files: dict[str, BadWarc] = {}

    def put(name: str, data: bytes, **expect) -> None:
        path = out / name
        path.write_bytes(data)
        files[name] = BadWarc(path, **expect)

    cut = responses[5]
    put(
        "bad-truncated.warc.gz",
        b"".join(members[:cut]) + members[cut][: len(members[cut]) // 2],
        records=cut + 1,
        html=5,
        skipped={"truncated_gzip": 1},
    )
    put(
        "bad-garbage.warc.gz",
        b"junk before the first record\n"
        + b"".join(m + (b"\x00garbage\xff" * 20 if i % 7 == 3 else b"") for i, m in enumerate(members)),
        records=n,
        html=n_html,
        damage={"garbage_between_records": 1 + len(range(3, n, 7))},
    )
    flipped = bytearray(members[responses[2]])
    for i in range(40, 90):
        flipped[i] ^= 0x5A
    put(
        "bad-corrupt.warc.gz",
        b"".join(bytes(flipped) if i == responses[2] else m for i, m in enumerate(members)),
        records=n,
        html=n_html - 1,
        skipped={"corrupt_gzip": 1},
    )
    mangled = []
    for i, m in enumerate(members):
        record = gzip.decompress(m)
        if i == responses[0]:
            record = record.replace(b"WARC/1.0\r\n", b"WRAC/9.x\r\n", 1)  # invalid version line
        elif i == responses[1]:
            record = record.replace(b"WARC-Type: response", b"WARC-Type: \xff\xfe", 1)  # invalid type
        mangled.append(gzip.compress(record))
    put(
        "bad-headers.warc.gz",
        b"".join(mangled),
        records=n,
        html=n_html - 2,
        skipped={"corrupt_record": 1, "type_unknown": 1},
    )
    rng = random.Random(8)
    binary = [
        response_record("http://bad.example/random.html", rng.randbytes(30_000)),
        response_record("http://bad.example/png.html", b"\x89PNG\r\n\x1a\n" + rng.randbytes(20_000)),
        response_record("http://bad.example/nul.html", b"<html><body>\x00\x00\x00" + b"\x00" * 5000),
    ]
    put("bad-binary-html.warc.gz", b"".join(gzip.compress(r) for r in binary), records=3, html=3)
    page = _page(shared, 3).decode("utf-8", "replace")
    russian = ("<html><body><p>" + "Пример текста на русском языке для проверки кодировки. " * 40 + "</p>").encode(
        "cp1251"
    )
    charsets = [
        response_record("http://bad.example/wrong-charset.html", russian, "text/html; charset=utf-8"),
        response_record("http://bad.example/undeclared.html", russian, "text/html"),
        response_record("http://bad.example/bogus-charset.html", page.encode(), "text/html; charset=no-such-codec"),
        response_record(
            "http://bad.example/latin1-as-utf16.html", page.encode("latin-1", "replace"), "text/html; charset=utf-16"
        ),
    ]
    put("bad-charsets.warc.gz", b"".join(gzip.compress(r) for r in charsets), records=4, html=4)
    big_page = b"<html><body>" + b"<p>An enormous page with many many words in it.</p>\n" * 40_000 + b"</body></html>"
    enormous = [
        response_record("http://bad.example/huge-html.html", big_page[: MAX_RECORD_BYTES // 2]),  # truncated HTML
        response_record("http://bad.example/too-large.html", big_page[: MAX_RECORD_BYTES * 3 // 2]),  # skipped
        response_record("http://bad.example/normal.html", _page(shared, 4)),
    ]
    put(
        "bad-enormous.warc.gz",
        b"".join(gzip.compress(r) for r in enormous),
        records=3,
        html=2,
        skipped={"too_large": 1},
    )
    put("bad-empty.warc.gz", b"", records=0, html=0)
    return files
