"""Hypothesis strategies and checked targets for fuzzing the WARC reader and the extractor.

Shared by the suite (``tests/store/test_fuzz.py``, a small budget) and ``bench/fuzz.py`` (10,000+ cases).
WARC cases start from real gzip members of ../shared/data WARC files and damage them the ways
real archives break: flipped bits, cut files, bytes inserted or deleted, mangled WARC headers,
binary bodies labelled HTML, whole files left uncompressed. HTML cases are random bytes, text in
real and wrong charsets, and generated tag soup. A target returns nothing and raises when the code
under test breaks a promise: an exception escapes, or the funnel does not add up.
"""

from __future__ import annotations

import functools
import gzip
import io
import zlib
from pathlib import Path

import pyarrow as pa
from hypothesis import strategies as st

from raypipe.config import ExtractConfig, QualityConfig
from raypipe.extract import extract_and_select
from raypipe.store.warc import SCHEMA, FileStats, iter_html_records

# Small real files: CC-style request/response/metadata triples, wget pages, revisits, warcinfo.
SOURCE_FILES = (
    "warc/cc/resiliparse_warcfile_CC-MAIN-2020-34.warc.gz",
    "warc/cc/cmoncrawl_mini_CC-MAIN-2022-05.warc.gz",
    "warc/edge_cases/warcio_example.warc.gz",
    "warc/archive/dolma_sample-0000.warc.gz",
)
FUZZ_CFG = ExtractConfig(max_html_bytes=20_000, max_record_bytes=400_000, timeout_s=5.0)
CHARSETS = ["utf-8", "cp1252", "windows-1251", "gb2312", "shift_jis", "utf-16", "latin-1", "koi8-r", "euc-kr"]


def split_members(data: bytes) -> list[bytes]:
    """The raw gzip members of a record-compressed WARC file, in order."""
    members = []
    pos = 0
    while pos < len(data):
        dec = zlib.decompressobj(31)
        dec.decompress(data[pos:])
        end = len(data) - len(dec.unused_data)
        members.append(data[pos:end])
        pos = end
    return members


@functools.cache
def real_members(data_dir: str) -> tuple[bytes, ...]:
    """Every gzip member of the source files (records of every type, each its own member)."""
    out: list[bytes] = []
    for rel in SOURCE_FILES:
        out.extend(split_members((Path(data_dir) / rel).read_bytes()))
    return tuple(out)


def _mutate_header(record: bytes, how: str, value: int, junk: bytes) -> bytes:
    """Damage the WARC header block of one uncompressed record."""
    head, sep, body = record.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if how == "drop_line" and len(lines) > 1:
        del lines[1 + value % (len(lines) - 1)]
    elif how == "content_length":
        lines = [b"Content-Length: %d" % value if ln.lower().startswith(b"content-length") else ln for ln in lines]
    elif how == "garbage_line":
        lines.insert(1 + value % max(1, len(lines) - 1), junk)
    elif how == "version":
        lines[0] = junk or b"WARC/9.9"
    elif how == "type":
        lines = [b"WARC-Type: " + junk if ln.startswith(b"WARC-Type") else ln for ln in lines]
    elif how == "no_terminator":
        return head + b"\r\n" + body
    return b"\r\n".join(lines) + sep + body


def _html_body_swap(record: bytes, payload: bytes) -> bytes:
    """Replace the HTTP body of a response record with ``payload``, labelled text/html, lengths fixed."""
    head, _, rest = record.partition(b"\r\n\r\n")
    http_head, _, _ = rest.partition(b"\r\n\r\n")
    if not http_head.startswith(b"HTTP/"):
        return record
    http_lines = [ln for ln in http_head.split(b"\r\n") if not ln.lower().startswith((b"content-", b"transfer-"))]
    http = b"\r\n".join([*http_lines, b"Content-Type: text/html", b"Content-Length: %d" % len(payload)])
    block = http + b"\r\n\r\n" + payload
    lines = [
        b"Content-Length: %d" % len(block) if ln.lower().startswith(b"content-length") else ln
        for ln in head.split(b"\r\n")
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + block + b"\r\n\r\n"


@st.composite
def warc_cases(draw: st.DrawFn, data_dir: str) -> tuple[bytes, int | None]:
    """A WARC file built from real members, then damaged a few times.

    Returns (bytes, expected record count): the count is known while member boundaries are
    intact (record-level edits, junk between members), else None.
    """
    pool = real_members(data_dir)
    members = list(draw(st.lists(st.sampled_from(pool), min_size=0, max_size=6)))
    for i in range(len(members)):
        edit = draw(st.sampled_from(["keep", "keep", "keep", "header", "binary_html"]))
        if edit == "keep":
            continue
        record = gzip.decompress(members[i])
        if edit == "header":
            how = draw(
                st.sampled_from(["drop_line", "content_length", "garbage_line", "version", "type", "no_terminator"])
            )
            value = draw(st.integers(min_value=-5, max_value=1 << 40))
            junk = draw(st.binary(max_size=40))
            record = _mutate_header(record, how, value, junk)
        else:
            record = _html_body_swap(record, draw(st.binary(max_size=3000)))
        members[i] = gzip.compress(record)
    plain = draw(st.integers(0, 9)) == 0  # sometimes an uncompressed WARC file
    if plain:
        data = bytearray(b"".join(gzip.decompress(m) for m in members))
    else:
        gaps = [draw(st.sampled_from([b"", b"", b"", b"\x00" * 3, b"junk\r\n", b"\x1f\x8b"])) for _ in members]
        data = bytearray(b"".join(gap + m for gap, m in zip(gaps, members, strict=True)))
    byte_edits = draw(st.integers(0, 4))
    for _ in range(byte_edits):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        pos = draw(st.integers(0, max(0, len(data))))
        if kind == "flip" and data:
            data[min(pos, len(data) - 1)] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.one_of(st.binary(max_size=64), st.just(b"\x1f\x8b\x08"), st.just(b"WARC/1.0\r\n")))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
    return bytes(data), (len(members) if not plain and not byte_edits else None)


def check_warc(case: tuple[bytes, int | None], cfg: ExtractConfig = FUZZ_CFG) -> FileStats:
    """Read a WARC case: no exception, every record is a row or a counted skip, and where the
    member boundaries are intact no record goes uncounted (a damaged header may make one member
    read as more than one record, never as fewer)."""
    data, expected = case
    stats = FileStats("fuzz://case")
    rows = list(iter_html_records(io.BufferedReader(io.BytesIO(data)), "fuzz://case", cfg, stats))
    assert stats.records == stats.html_responses + sum(stats.skipped.values()), stats
    if expected is not None:
        assert stats.records >= expected, (expected, stats)
    assert len(rows) == stats.html_responses
    for row in rows:
        assert isinstance(row["html"], bytes) and len(row["html"]) <= cfg.max_html_bytes
        assert row["url"] is None or isinstance(row["url"], str)
    return stats


_TAGS = ["p", "div", "span", "a", "script", "style", "table", "tr", "td", "li", "ul", "h1", "pre", "br", "title"]


@st.composite
def html_documents(draw: st.DrawFn) -> str:
    """Tag soup: nested, unclosed and stray tags around random text, sometimes deeply nested."""
    parts = []
    for _ in range(draw(st.integers(0, 30))):
        tag = draw(st.sampled_from(_TAGS))
        kind = draw(st.sampled_from(["open", "close", "text", "attr"]))
        if kind == "open":
            parts.append(f"<{tag}>")
        elif kind == "close":
            parts.append(f"</{tag}>")
        elif kind == "attr":
            parts.append(f"<{tag} {draw(st.text(max_size=20))}='{draw(st.text(max_size=20))}'>")
        else:
            parts.append(draw(st.text(max_size=200)))
    if draw(st.integers(0, 19)) == 0:
        parts.insert(0, "<div>" * draw(st.integers(100, 3000)))
    return (
        "<html><head>"
        + draw(st.sampled_from(["", "<meta charset='utf-8'>", "<meta charset=koi8-r>"]))
        + ("</head><body>" + "".join(parts))
    )


@st.composite
def html_cases(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """(payload bytes, declared charset): real and wrong charsets, undeclared, garbage and binary."""
    source = draw(st.sampled_from(["binary", "text", "soup", "soup"]))
    if source == "binary":
        payload = draw(st.binary(max_size=4000))
    else:
        text = draw(st.text(max_size=2000)) if source == "text" else draw(html_documents())
        payload = text.encode(draw(st.sampled_from(CHARSETS)), errors="replace")
    declared = draw(
        st.one_of(
            st.none(),
            st.sampled_from([*CHARSETS, "bogus", "", "UTF-8; foo", "x-user-defined", "utf-7", "base64"]),
            st.text(max_size=20),
        )
    )
    return payload, declared


_CFG = ExtractConfig(timeout_s=5.0)


def check_extract(cases: list[tuple[bytes, str | None]]) -> pa.Table:
    """Run one batch through extraction and its verdict: one output row per input, each kept or with a reason."""
    rows = []
    for i, (payload, charset) in enumerate(cases):
        row = dict.fromkeys(SCHEMA.names)
        row.update(
            url=f"http://fuzz.example/{i}",
            warc_record_id=f"<urn:uuid:fuzz-{i}>",
            source_file="fuzz://case",
            record_index=i,
            html=payload,
            html_truncated=False,
            charset=charset,
        )
        rows.append(row)
    out = extract_and_select(pa.Table.from_pylist(rows, schema=SCHEMA), _CFG, QualityConfig())
    assert out.num_rows == len(cases)
    for doc in out.to_pylist():
        assert isinstance(doc["text"], str)
        assert (doc["stream"] is not None) == (doc["drop_reason"] is None)
        assert doc["language"] is None or isinstance(doc["language"], str)
    return out
