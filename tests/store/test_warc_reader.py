"""The WARC reader on every folder of ../shared/data/warc, checked against warcio counts, plus
damaged files built at test time: the rest of a file is still read and every record is counted."""

from __future__ import annotations

import io

import pytest
from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeadersParser

from raypipe.config import ExtractConfig, StorageConfig
from raypipe.store.warc import FileStats, iter_html_records, read_warc_file


def warcio_counts(path) -> tuple[int, int, list[int]]:
    """(records, 200 HTML responses, record offsets) computed with warcio, independently."""
    records = html = 0
    with open(path, "rb") as f:
        for rec in ArchiveIterator(f):
            records += 1
            headers = rec.http_headers
            if rec.rec_type == "response" and headers is None and "msgtype=response" in (rec.content_type or ""):
                # warcio skips HTTP parsing for odd target-URI schemes (one page here is 'xhttps://')
                try:
                    headers = StatusAndHeadersParser(["HTTP/1.0", "HTTP/1.1"]).parse(rec.raw_stream)
                except EOFError:  # an empty payload is no HTML response
                    headers = None
            if rec.rec_type == "response" and headers:
                ctype = (headers.get_header("Content-Type") or "").lower()
                if headers.get_statuscode() == "200" and ctype.startswith(("text/html", "application/xhtml")):
                    html += 1
    with open(path, "rb") as f:
        it = ArchiveIterator(f)
        offsets = [it.get_record_offset() for _ in it]
    return records, html, offsets


def read_bytes_with_stats(data: bytes):
    stats = FileStats("mem")
    rows = list(iter_html_records(io.BufferedReader(io.BytesIO(data)), "mem", ExtractConfig(), stats))
    return rows, stats


def all_warcs(shared_data):
    return sorted(p for p in (shared_data / "warc").rglob("*") if p.is_file() and ".warc" in p.name)


def test_every_shared_warc_matches_warcio(shared_data):
    folders = set()
    for path in all_warcs(shared_data):
        if "clipped" in path.name:
            continue  # warcio cannot count a clipped member either; see the dedicated test
        records, html, _ = warcio_counts(path)
        rows, stats = read_bytes_with_stats(path.read_bytes())
        assert stats.records == records, path.name
        assert stats.html_responses == html == len(rows), path.name
        assert stats.html_responses + sum(stats.skipped.values()) == stats.records, path.name
        folders.add(path.parent.name)
    assert folders == {"archive", "built", "cc", "edge_cases"}


def test_edge_cases(shared_data):
    edge = shared_data / "warc" / "edge_cases"
    rows, stats = read_bytes_with_stats((edge / "resiliparse_clipped_truncated.warc.gz").read_bytes())
    assert rows == [] and stats.skipped == {"truncated_gzip": 1}
    rows, stats = read_bytes_with_stats((edge / "warcio_example-iana.org-chunked.warc").read_bytes())
    assert len(rows) == 1 and rows[0]["html"].lstrip().lower().startswith(b"<!doctype html")  # de-chunked
    rows, stats = read_bytes_with_stats((edge / "warcio_example.warc.gz").read_bytes())
    assert stats.skipped["type_revisit"] == 1 and len(rows) == 1


@pytest.fixture
def sample(shared_data):
    path = shared_data / "warc" / "archive" / "dolma_sample-0000.warc.gz"
    records, html, offsets = warcio_counts(path)
    return path.read_bytes(), records, html, offsets


def test_garbage_between_records_is_skipped(sample):
    data, records, html, off = sample
    rows, stats = read_bytes_with_stats(data[: off[10]] + b"\x00garbage\xff" * 50 + data[off[10] :])
    assert (stats.records, len(rows)) == (records, html)
    assert stats.damage["garbage_between_records"] == 1  # bytes, not a record: the funnel still adds up
    assert stats.records == stats.html_responses + sum(stats.skipped.values())


def test_corrupt_member_mid_file_loses_only_that_record(sample):
    data, records, html, off = sample
    damaged = bytearray(data)
    for i in range(off[10] + 30, off[10] + 60):
        damaged[i] ^= 0xFF
    rows, stats = read_bytes_with_stats(bytes(damaged))
    assert stats.skipped["corrupt_gzip"] == 1
    assert stats.records == records
    assert len(rows) >= html - 1


def test_truncated_file_counts_the_last_record(sample):
    data, records, html, off = sample
    rows, stats = read_bytes_with_stats(data[: off[11] + (off[12] - off[11]) // 2])
    assert stats.skipped["truncated_gzip"] == 1
    assert stats.records == 12


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.warc.gz"
    empty.write_bytes(b"")
    tables = list(read_warc_file(str(empty), StorageConfig(), ExtractConfig()))
    assert len(tables) == 1 and tables[0].column("file_stats")[0].as_py()  # only the file marker
    tables = list(read_warc_file(str(tmp_path / "missing.warc.gz"), StorageConfig(), ExtractConfig()))
    stats = tables[-1].column("file_stats")[0].as_py()
    assert '"read_error": 1' in stats and "input not found" in stats


def test_html_is_size_capped(shared_data):
    path = shared_data / "warc" / "built" / "web-00000.warc.gz"
    cfg = ExtractConfig(max_html_bytes=1000)
    tables = list(read_warc_file(str(path), StorageConfig(), cfg))
    sizes = [len(h) for t in tables for h in t.column("html").to_pylist() if h is not None]
    assert sizes and max(sizes) <= 1000
