"""The development set's labelling rule, project split and output round trip (small in-memory inputs)."""

from __future__ import annotations

import pandas as pd
import pytest

from bench import devset


@pytest.mark.parametrize(
    ("rel", "title", "expected"),
    [
        ("html/reference/kombu.connection.html", "Connection - kombu.connection", "docs"),
        ("api/org/jsoup/nodes/Element.html", "Element (jsoup 1.15.3 API)", "docs"),
        ("html/group__Core.html", "SFML: Core module", "docs"),
        ("std/vec/struct.Vec.html", "Vec in std::vec - Rust", "docs"),
        ("html/changelog.html.gz", "Change history", "site_nondocs"),
        ("html/whatsnew-5.0.html", "What's new in Celery 5.0", "site_nondocs"),
        ("html/history.html", "Change history — natsort", "site_nondocs"),
        ("html/license.html", "License", "site_nondocs"),
        ("html/code_of_conduct.html", "Code of Conduct", "site_nondocs"),
        ("html/contributing.html", "Contributing", "site_nondocs"),
        ("html/genindex.html", "Index — pymongo 3.11.0 documentation", "site_nondocs"),
        ("html/search.html", "Search — pymongo", "site_nondocs"),
        ("api/index-all.html", "Index (jsoup 1.15.3 API)", "site_nondocs"),
        ("html/doc-index-A.html", "aeson-2.0.3.0 (Index - A)", "site_nondocs"),
        ("html/functions_func_a.html", "SFML: Class Members", "site_nondocs"),
        ("html/news/2021.html", "Project news", "site_nondocs"),
        ("html/release-15-1.html", "E.20. Release 15.1", "site_nondocs"),
        # a title decides when the path says nothing
        ("html/notes-page.html", "Release notes for 2.0", "site_nondocs"),
        ("html/appendix.html", "E.1. Release 15.20", "site_nondocs"),
        # an API page whose name merely contains a trigger word stays a docs page
        ("html/library/index-types.html", "Index Types", "docs"),
        ("html/api/history_buffer.html", "HistoryBuffer class", "docs"),
        # names that API pages share with index pages and changelogs: the title or the content decides
        ("postgresql/functions.html", "Chapter 9. Functions and Operators", "docs"),
        ("api/globals.html", "Global objects | Node.js v18.20.4 Documentation", "docs"),
        ("api/javassist/bytecode/analysis/Frame.html", "Frame (Javassist 3.27.0-GA API)", "docs"),
        ("html/features/history.html", "History — cmd2 2.4.1 documentation", "docs"),
        ("html/functions_eval_l.html", "SFML: Class Members - Enumerator", "site_nondocs"),
        ("html/globals_enum.html", "SDL: Globals", "site_nondocs"),
        ("html/namespacemembers.html", "", "site_nondocs"),
        ("lib/asn1-5.0.21/doc/html/notes.html", "Erlang -- asn1 Release Notes", "site_nondocs"),
        ("html/class_json_1_1_value-members.html", "JsonCpp: Member List", "site_nondocs"),
        ("sqlite3/35to36.html", "SQLite Changes From Version 3.5.9 To 3.6.0", "site_nondocs"),
        ("sqlite3/3_8_7_1.html", "SQLite Release 3.8.7.1 On 2014-10-29", "site_nondocs"),
        ("html/index-1.10.html", "Index of new symbols in 1.10: Cairo: A Vector Graphics Library", "site_nondocs"),
        ("docs/file.MIT-LICENSE.html", "File: MIT-LICENSE — Mocha 1.16.1", "site_nondocs"),
        ("glib/glib-changes.html", "Changes to GLib: GLib Reference Manual", "site_nondocs"),
        ("html/mailing-list.html", "Mailing Lists — Paste 3.0.0 documentation", "site_nondocs"),
        ("dox/structEigen_1_1dense_616e9.html", "Eigen: Member List", "site_nondocs"),
        ("sqlite3/oldnews.html", "SQLite Older News", "site_nondocs"),
        ("html/release_guide.html", "Release Guide — h5py 3.7.0 documentation", "site_nondocs"),
        ("html/api/licensing.html", "LicenseManager (Foo 1.0 API)", "docs"),
        ("sqlite3/lang_createindex.html", "CREATE INDEX", "docs"),
        # source listings, book concatenations and translations are in neither class
        ("html/_modules/kombu/connection.html", "kombu.connection source", "drop"),
        ("src/alloc/vec/mod.rs.html", "mod.rs - source", "drop"),
        ("html/Vector_8h_source.html", "Vector.h Source File", "drop"),
        ("book/print.html", "The Rust Programming Language", "drop"),
        ("fr/index.html", "LuaSQL: accès aux bases", "drop"),
        ("api/src-html/org/junit/runners/ParentRunner.html", "Source code", "drop"),
    ],
)
def test_label_path(rel: str, title: str, expected: str) -> None:
    assert devset.label_path(rel, title) == expected


def test_history_page_with_version_headings_is_a_changelog() -> None:
    body = b"".join(b"<h2>Version 2.%d.0</h2><p>Fixed things.</p>" % i for i in range(4))
    assert devset.label_path("html/history.html", "History — h5py", body) == "site_nondocs"
    assert devset.label_path("html/history.html", "History — h5py", b"<h2>Commands</h2>") == "docs"


def test_reserved_projects_are_recognised_and_absent_from_sources() -> None:
    assert devset.reserved_hit("https://docs.sqlalchemy.org/en/20/orm/") == "sqlalchemy"
    assert devset.reserved_hit("python-flask-login-doc") == "flask"
    assert devset.reserved_hit("ItsDangerous") == "itsdangerous"
    assert devset.reserved_hit("https://docs.celeryq.dev/en/stable/") is None
    for source in devset.SOURCES:
        assert devset.reserved_hit(source.package, source.project, source.base) is None
        assert source.project not in devset.SEED_PROJECTS


def test_project_split_is_deterministic_balanced_and_by_project() -> None:
    projects = {f"py{i}": "python" for i in range(7)} | {f"j{i}": "java" for i in range(4)} | {"solo": "go"}
    first = devset.assign_project_splits(projects)
    assert first == devset.assign_project_splits(dict(reversed(list(projects.items()))))
    assert set(first) == set(projects)
    for eco in ("python", "java"):
        sides = [first[p] for p, e in projects.items() if e == eco]
        assert abs(sides.count("dev") - sides.count("test")) <= 1, (eco, sides)
    # adding a project of another ecosystem leaves this ecosystem's assignment alone
    more = devset.assign_project_splits(projects | {"r0": "rust", "r1": "rust"})
    assert {p: more[p] for p in projects} == first
    assert {more["r0"], more["r1"]} == {"dev", "test"}


def test_url_split_and_wrapped_text() -> None:
    urls = [f"https://example.org/page/{i}" for i in range(200)]
    sides = [devset.url_split(u) for u in urls]
    assert sides == [devset.url_split(u) for u in urls]
    assert 60 < sides.count("dev") < 140
    page = devset.wrap_text("A <title>", "first line & more\n\nsecond line")
    assert page.count(b"<p>") == 2 and b"A &lt;title&gt;" in page and b"&amp; more" in page


def test_written_set_round_trips(tmp_path) -> None:
    """The parquet loader and the WARC writer on a two-page set: every page comes back once."""
    from warcio.archiveiterator import ArchiveIterator

    rows = [
        {"url": "https://x.org/a.html", "project": "x", "ecosystem": "python", "label": 1, "kind": "docs"},
        {"url": "https://y.org/b.html", "project": "y", "ecosystem": "web", "label": 0, "kind": "web"},
    ]
    frame = pd.DataFrame(rows)
    frame["split"] = ["dev", "test"]
    frame["html"] = [b"<html><head><meta charset='latin-1'></head><body>a</body></html>", b"<p>b</p>"]
    frame["sha1"] = [devset._sha1(h) for h in frame["html"]]
    frame.to_parquet(tmp_path / "pages.parquet", index=False)
    assert devset.load_devset(tmp_path, "test")["url"].tolist() == ["https://y.org/b.html"]
    assert len(devset.load_devset(tmp_path / "pages.parquet")) == 2
    devset.write_warc(frame, tmp_path / "all.warc.gz")
    with (tmp_path / "all.warc.gz").open("rb") as f:
        records = [
            (r.rec_headers, r.http_headers.get_header("Content-Type"), r.content_stream().read())
            for r in ArchiveIterator(f)
            if r.rec_type == "response"
        ]
    assert [h.get_header("WARC-Target-URI") for h, _, _ in records] == frame["url"].tolist()
    assert all(h.protocol == "WARC/1.1" for h, _, _ in records)
    assert all(h.get_header("WARC-Identified-Payload-Type") == "text/html" for h, _, _ in records)
    assert records[0][1] == "text/html; charset=latin-1" and records[1][1] == "text/html"
    assert [body for _, _, body in records] == frame["html"].tolist()
