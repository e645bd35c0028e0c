"""Bad input, one kind at a time, without Ray: every damaged file is read to the end, every record is
a row or a counted skip, every page gets a document row (kept or with a reason), and bad configs
and missing inputs fail with a message that names the problem."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from raypipe.cli import main
from raypipe.config import ConfigError, ExtractConfig, QualityConfig, StorageConfig, load_config
from raypipe.extract import extract_and_select
from raypipe.store.storage import StorageError, expand_inputs
from raypipe.store.warc import read_warc_file
from tests.support.bad_warcs import MAX_HTML_BYTES, MAX_RECORD_BYTES, build_bad_warcs

CFG = ExtractConfig(max_html_bytes=MAX_HTML_BYTES, max_record_bytes=MAX_RECORD_BYTES)


@pytest.fixture(scope="module")
def bad_files(shared_data, tmp_path_factory):
    return build_bad_warcs(shared_data, tmp_path_factory.mktemp("bad"))


def read(path):
    """(document rows after extraction, file stats) for one file, as the pipeline sees them."""
    tables = list(read_warc_file(str(path), StorageConfig(), CFG))
    out = pa.concat_tables(extract_and_select(t, CFG, QualityConfig()) for t in tables)
    docs = out.filter(pc.is_valid(out.column("url"))).to_pylist()
    stats = json.loads(out.filter(pc.is_null(out.column("url"))).column("file_stats")[0].as_py())
    return docs, stats


@pytest.mark.parametrize(
    "name",
    [
        "bad-truncated.warc.gz",
        "bad-garbage.warc.gz",
        "bad-corrupt.warc.gz",
        "bad-headers.warc.gz",
        "bad-binary-html.warc.gz",
        "bad-charsets.warc.gz",
        "bad-enormous.warc.gz",
        "bad-empty.warc.gz",
    ],
)
def test_damaged_file_is_read_and_accounted_for(bad_files, name):
    bad = bad_files[name]
    docs, stats = read(bad.path)
    assert stats["records"] == stats["html_responses"] + sum(stats["skipped"].values())  # the funnel adds up
    assert stats["records"] == bad.records, stats
    assert stats["html_responses"] == len(docs) == bad.html, stats
    for reason, count in bad.skipped.items():
        assert stats["skipped"].get(reason, 0) >= count, stats
    for reason, count in bad.damage.items():
        assert stats["damage"].get(reason, 0) == count, stats
    for d in docs:
        assert (d["stream"] is not None) == (d["drop_reason"] is None)
        assert isinstance(d["text"], str)


def test_binary_pages_labelled_html_are_dropped_with_a_reason(bad_files):
    docs, _ = read(bad_files["bad-binary-html.warc.gz"].path)
    assert {d["url"] for d in docs} == {f"http://bad.example/{n}.html" for n in ("random", "png", "nul")}
    assert all(d["drop_reason"] for d in docs)


def test_wrong_and_missing_charsets_still_decode(bad_files):
    docs = {d["url"].rsplit("/", 1)[1]: d for d in read(bad_files["bad-charsets.warc.gz"].path)[0]}
    assert "Пример текста" in docs["undeclared.html"]["text"]  # detected: cp1251, not mojibake
    assert docs["undeclared.html"]["language"] == "ru"
    assert docs["bogus-charset.html"]["text"]  # unknown codec name: detection takes over
    # Declared utf-8 but cp1251 bytes: decoding falls back instead of failing; the page is kept as a
    # row whatever it reads as.
    assert docs["wrong-charset.html"]["drop_reason"] in (None, "language", "empty_text") or docs["wrong-charset.html"][
        "drop_reason"
    ].startswith("quality:")


def test_enormous_pages_are_capped_or_skipped(bad_files):
    docs, stats = read(bad_files["bad-enormous.warc.gz"].path)
    urls = {d["url"] for d in docs}
    assert "http://bad.example/too-large.html" not in urls and stats["skipped"]["too_large"] == 1
    huge = next(d for d in docs if d["url"].endswith("huge-html.html"))
    assert huge["html_truncated"] is True


def test_missing_input_paths(tmp_path):
    with pytest.raises(StorageError, match="input not found"):
        expand_inputs(str(tmp_path / "nope.warc.gz"), StorageConfig())
    with pytest.raises(StorageError, match="glob matched nothing"):
        expand_inputs(str(tmp_path / "*.warc.gz"), StorageConfig())
    with pytest.raises(StorageError, match="no .warc/.warc.gz files"):
        expand_inputs(str(tmp_path), StorageConfig())
    vanished = tmp_path / "listed-then-gone.warc.gz"  # listed at planning time, gone at read time
    tables = list(read_warc_file(str(vanished), StorageConfig(), CFG))
    stats = tables[-1].column("file_stats")[0].as_py()
    assert '"read_error": 1' in stats and "input not found" in stats


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["storage.requests_per_second=0"], "storage.requests_per_second"),
        (["storage.request_burst=0"], "storage.request_burst"),
        (["storage.retries=-1"], "storage.retries"),
        (["extract.max_record_bytes=lots"], "extract.max_record_bytes"),
    ],
)
def test_bad_storage_and_extract_knobs(sets, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["input=s3://b/in", "output=s3://b/out", *sets])


def test_cli_bad_config_is_one_clear_line(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("input: s3://b/in\noutput: s3://b/out\nstorage:\n  retrys: 3\n")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'storage.retrys'" in err and "Traceback" not in err
