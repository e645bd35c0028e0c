"""Property-based fuzzing in the suite (a small budget; ``bench/fuzz.py`` runs 10,000+ cases):
damaged WARC files built from real records never crash the reader and every record is counted;
random bytes, charsets and tag soup never crash the extractor and every page keeps its row."""

from __future__ import annotations

import gzip

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import shared_data_dir
from tests.support.fuzz_targets import check_extract, check_warc, html_cases, real_members, warc_cases

BUDGET = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_reader_survives_damaged_warcs(shared_data):
    @BUDGET
    @given(warc_cases(str(shared_data_dir())))
    def check(case):
        check_warc(case)

    check()


@BUDGET
@given(st.lists(html_cases(), min_size=1, max_size=4))
def test_extractor_survives_any_bytes_and_charset(cases):
    check_extract(cases)


def test_known_damage_is_accounted_for(shared_data):
    """Regressions the fuzzer found: junk before the first member lost the whole file; junk between
    members was counted as a skipped record that was never read; a record fastwarc skips silently
    went uncounted."""
    members = real_members(str(shared_data_dir()))[:6]
    stats = check_warc((b"\x00\x00\x00" + b"".join(members), 6))
    assert stats.records == 6 and stats.damage["garbage_between_records"] == 1
    stats = check_warc((members[0] + b"junk\r\n" + b"".join(members[1:]), 6))
    assert stats.records == 6 and stats.damage["garbage_between_records"] == 1
    mangled = gzip.compress(gzip.decompress(members[1]).replace(b"WARC/1.0\r\n", b"WARC/1.0 \r\n", 1))
    stats = check_warc((members[0] + mangled + b"".join(members[2:]), 6))
    assert stats.records >= 6
