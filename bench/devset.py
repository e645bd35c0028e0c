"""A labelled development set of REAL documentation pages, as their sites serve them (issue 13).

Why: the selection figures so far came from pages rendered out of the very seed files the model
trains on. This set holds the built HTML that projects publish (Sphinx, Doxygen, javadoc, rustdoc,
haddock, gtk-doc, gi-docgen, YARD/RDoc, mdBook, ...) next to real non-documentation pages, so
recall, precision and thresholds can be measured on pages a crawl would meet.

Sources
-------
* Debian ``*-doc`` packages (see ``SOURCES``): ``apt-get download`` fetches the ``.deb`` into the
  cache (nothing is installed) and ``dpkg-deb -x`` unpacks it; every ``.html``/``.htm`` (and
  Debian-compressed ``.html.gz``) file under the package's HTML root is a candidate page. The root
  is the deepest folder holding all of the source's HTML files (or the source's ``under`` folder).
  The exact package versions used are written to ``devset.json``.
* Ordinary web pages: ``shared/data/html/*/pages/*.html.gz`` with their original URL from each
  ``index.jsonl`` (``kind=web``); the HTML responses of the real web archives in
  ``shared/data/warc`` but ``built/`` (Archive-It's archive.org, iana.org, data.gov.uk, Common
  Crawl; ``kind=web``, read with the job's own WARC reader), which bring what a crawl sample holds
  and the single pages do not: large sites of many pages that are not documentation; and the C4
  and Wikipedia texts of ``shared/data/mix/text`` wrapped as minimal HTML pages (``kind=text_only``).

Labels (``label_path``; checked in this order on the page's path relative to its root and on the
first segment of its ``<title>``)
------
* dropped, in neither class: source-code listings (``_modules/``, ``_sources/``, ``src/``,
  ``src-html/``, ``class-use/``, Doxygen ``*_source.html``, javadoc ``package-use.html``), mdBook's
  ``print.html`` (a concatenation of the whole book), pages in translation folders (``fr/``,
  ``de/``, ...), pages over 2 MiB, and near-empty stubs: fewer than ``MIN_WORDS`` (50) words in the text resiliparse's
  main-content extraction keeps (redirect pages, frame sets, empty members). Stubs are dropped
  from both classes.
* ``label=0, kind=site_nondocs`` (hard negatives): pages of the same sites that are not about
  using an API: changelogs, release notes, news, history, what's-new; licences and copyright;
  authors, contributors, credits, thanks, contributing guides, codes of conduct, community and
  mailing-list and bug-reporting pages; and generated
  index/search/navigation pages (Sphinx ``genindex``/``search``/``py-modindex``, javadoc
  ``index-all``/``allclasses``/``*-tree``/``deprecated-list``/``help-doc``/``*-frame``, haddock
  ``doc-index*``, Doxygen member lists ``functions*``/``globals*``/``namespacemembers*``/
  ``classes``/``files``/``annotated``/``hierarchy``, gtk-doc ``api-index-*``/``ix*``, rustdoc
  ``all.html``/``help.html``/``settings.html``). Names only such pages carry (``NONDOC_STEM``,
  ``NONDOC_DIR``) decide alone; names that API pages share (``WEAK_STEM``: ``functions``,
  ``globals``, ``history``, ``notes``, ``search``, ``frame``...) count only when the title confirms
  (``WEAK_TITLE``), the page has no title, or it has 3+ headings naming a version (a changelog);
  a title such as "Release notes", "Changelog", "Index", "What's new in ..." decides on any page
  (``NONDOC_TITLE``).
* ``label=1, kind=docs``: every other page of a documentation package: API references
  (module/class/function/package pages) and user guides/manuals of the project.
* ``label=0, kind=web`` / ``kind=text_only``: every ordinary web page / wrapped text.

Sampling: per project, candidate paths are ordered by sha1 of ``project/path`` and walked in that
order until ``CAP_DOCS`` (120) docs pages and ``CAP_NONDOCS`` (40) hard negatives survive the stub
filter, so no project dominates and the sample is the same on every run. Identical pages (same
sha1 of the HTML) are kept once.

URLs: the project's public documentation site (``Source.base``) joined with the page's path
relative to its root (a leading ``html/`` folder and ``.gz`` are removed). Web pages keep their
original URL. Wikipedia texts get ``https://en.wikipedia.org/wiki/<subject>`` (the subject is the
words before the first " is"/" was"/" are"); C4 texts carry no URL upstream, so they get
``https://c4.example.org/<slug of the first words>-<sha1[:8]>``.

Split: by PROJECT, never by page. Within each ecosystem the projects are ordered by sha1 of their
name and alternately assigned to ``dev`` and ``test`` (the first one to ``dev`` or ``test`` by the
parity of sha1 of the ecosystem's name), so both splits see every ecosystem with two or more
projects. Web and text-only pages are split by the parity of sha1 of their URL. Adding a project
may move projects of its own ecosystem between splits: rebuild and reuse the whole set, never mix
versions.

Reserved for held-out evaluation: nothing of SQLAlchemy, Scrapy, Flask, boltons or itsdangerous
(any package, project or URL that names them) may enter; ``build`` asserts it. The libraries whose
docs are in ``seeds/api_docs_pypi`` are left out too (``SEED_PROJECTS``), so the set measures APIs
the seeds never saw.

Output under ``--out``: ``pages.parquet`` (url, project, ecosystem, label, kind, split, html, sha1),
``devset.json`` (counts, package versions, the rules' parameters), ``dev.warc.gz`` and
``test.warc.gz`` (WARC/1.1 response records with synthesized HTTP headers, readable by
``jobs/build_forge.py``).

    apt-get update   # once, so apt-get download finds the packages
    PYTHONPATH=$PWD .venv/bin/python -m bench.devset --out .bench/devset [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import html as htmlmod
import io
import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

DEFAULT_OUT = Path(".bench/devset")
DEFAULT_CACHE = Path(".bench/devset_cache")
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CAP_DOCS = 120
CAP_NONDOCS = 40
MIN_WORDS = 50
MAX_BYTES = 2 * 1024 * 1024
WARC_DATE = "2024-05-18T01:58:10Z"
RESERVED = ("sqlalchemy", "scrapy", "flask", "boltons", "itsdangerous")
SEED_PROJECTS = ("aiohttp", "werkzeug", "click", "attrs", "urllib3", "jinja2", "markupsafe", "more-itertools", "pluggy")
COLUMNS = ["url", "project", "ecosystem", "label", "kind", "split", "html", "sha1"]


@dataclass(frozen=True)
class Source:
    """One project's documentation inside a Debian package."""

    package: str
    project: str
    ecosystem: str
    base: str
    under: tuple[str, ...] = ()  # folders (relative to the package's HTML root) holding this project's pages


def _src(package: str, project: str, ecosystem: str, base: str, *under: str) -> Source:
    return Source(package, project, ecosystem, base, under)


SOURCES: tuple[Source, ...] = (
    # Python (Sphinx, one MkDocs)
    _src("python-bs4-doc", "beautifulsoup4", "python", "https://www.crummy.com/software/BeautifulSoup/bs4/doc/"),
    _src("python-mako-doc", "mako", "python", "https://docs.makotemplates.org/en/latest/"),
    _src("python-lxml-doc", "lxml", "python", "https://lxml.de/"),
    _src("python-psycopg2-doc", "psycopg2", "python", "https://www.psycopg.org/docs/"),
    _src("python-pymongo-doc", "pymongo", "python", "https://pymongo.readthedocs.io/en/3.11.0/"),
    _src("python-pygments-doc", "pygments", "python", "https://pygments.org/docs/"),
    _src("python-pyparsing-doc", "pyparsing", "python", "https://pyparsing-docs.readthedocs.io/en/latest/"),
    _src("python-kombu-doc", "kombu", "python", "https://docs.celeryq.dev/projects/kombu/en/stable/"),
    _src("python-celery-doc", "celery", "python", "https://docs.celeryq.dev/en/stable/"),
    _src("python-peewee-doc", "peewee", "python", "https://docs.peewee-orm.com/en/latest/"),
    _src("python-natsort-doc", "natsort", "python", "https://natsort.readthedocs.io/en/stable/"),
    _src("python-pexpect-doc", "pexpect", "python", "https://pexpect.readthedocs.io/en/stable/"),
    _src("python-fsspec-doc", "fsspec", "python", "https://filesystem-spec.readthedocs.io/en/latest/"),
    _src("python-h5py-doc", "h5py", "python", "https://docs.h5py.org/en/stable/"),
    _src("python-pycurl-doc", "pycurl", "python", "http://pycurl.io/docs/latest/"),
    _src("python-pil-doc", "pillow", "python", "https://pillow.readthedocs.io/en/stable/"),
    _src("python-mpmath-doc", "mpmath", "python", "https://mpmath.org/doc/current/"),
    _src("python-djangorestframework-doc", "djangorestframework", "python", "https://www.django-rest-framework.org/"),
    _src("python-cmd2-doc", "cmd2", "python", "https://cmd2.readthedocs.io/en/stable/"),
    _src("python-paste-doc", "paste", "python", "https://pythonpaste.readthedocs.io/en/latest/"),
    _src("python-ply-doc", "ply", "python", "https://www.dabeaz.com/ply/"),
    # C and C++ (Doxygen, gtk-doc, gi-docgen, hand-written manuals)
    _src("libfmt-doc", "fmt", "c_cpp", "https://fmt.dev/9.1.0/"),
    _src("libeigen3-doc", "eigen", "c_cpp", "https://eigen.tuxfamily.org/dox/"),
    _src("libglfw3-doc", "glfw", "c_cpp", "https://www.glfw.org/docs/3.3/"),
    _src("libjansson-doc", "jansson", "c_cpp", "https://jansson.readthedocs.io/en/2.14/"),
    _src("libxml2-doc", "libxml2", "c_cpp", "https://gnome.pages.gitlab.gnome.org/libxml2/"),
    _src("libglib2.0-doc", "glib", "c_cpp", "https://developer-old.gnome.org/"),
    _src("libgtk-3-doc", "gtk3", "c_cpp", "https://developer-old.gnome.org/"),
    _src("libcairo2-doc", "cairo", "c_cpp", "https://www.cairographics.org/manual/"),
    _src("libpango1.0-doc", "pango", "c_cpp", "https://docs.gtk.org/"),
    _src("libjson-glib-doc", "json-glib", "c_cpp", "https://gnome.pages.gitlab.gnome.org/json-glib/"),
    _src("libsdl2-doc", "sdl2", "c_cpp", "https://www.libsdl.org/release/SDL-2.26.5-docs/"),
    _src("libjsoncpp-doc", "jsoncpp", "c_cpp", "https://open-source-parsers.github.io/jsoncpp-docs/doxygen/"),
    _src("libmsgpack-doc", "msgpack-c", "c_cpp", "https://msgpack.github.io/msgpack-c/v4.0.0/"),
    _src("sqlite3-doc", "sqlite", "c_cpp", "https://www.sqlite.org/"),
    _src("libsfml-doc", "sfml", "c_cpp", "https://www.sfml-dev.org/documentation/2.5.1/"),
    # Java (javadoc)
    _src("libjsoup-java-doc", "jsoup", "java", "https://javadoc.io/doc/org.jsoup/jsoup/1.15.3/"),
    _src(
        "libcommons-lang3-java-doc",
        "commons-lang3",
        "java",
        "https://commons.apache.org/proper/commons-lang/apidocs/",
    ),
    _src("junit4-doc", "junit4", "java", "https://junit.org/junit4/"),
    _src("libcommons-io-java-doc", "commons-io", "java", "https://commons.apache.org/proper/commons-io/apidocs/"),
    _src(
        "libcommons-math3-java-doc",
        "commons-math3",
        "java",
        "https://commons.apache.org/proper/commons-math/javadocs/api-3.6.1/",
    ),
    _src("libjcommander-java-doc", "jcommander", "java", "https://javadoc.io/doc/com.beust/jcommander/1.78/"),
    _src("libjline-java-doc", "jline", "java", "https://javadoc.io/doc/jline/jline/1.0/"),
    _src("libjimfs-java-doc", "jimfs", "java", "https://javadoc.io/doc/com.google.jimfs/jimfs/1.2/"),
    _src("libjavassist-java-doc", "javassist", "java", "https://www.javassist.org/html/"),
    _src("libh2-java-doc", "h2database", "java", "https://h2database.com/javadoc/"),
    _src("libargparse4j-java-doc", "argparse4j", "java", "https://argparse4j.github.io/apidocs/"),
    # Rust (rustdoc, mdBook)
    # std re-exports core and alloc, so their pages are near-duplicates: one project, one split.
    _src("rust-doc", "rust-std", "rust", "https://doc.rust-lang.org/1.63.0/", "std", "core", "alloc", "proc_macro"),
    _src("rust-doc", "rust-book", "rust", "https://doc.rust-lang.org/1.63.0/", "book"),
    _src("rust-doc", "rust-reference", "rust", "https://doc.rust-lang.org/1.63.0/", "reference"),
    _src("rust-doc", "rust-by-example", "rust", "https://doc.rust-lang.org/1.63.0/", "rust-by-example"),
    _src("rust-doc", "rust-nomicon", "rust", "https://doc.rust-lang.org/1.63.0/", "nomicon"),
    _src("rust-doc", "rust-unstable-book", "rust", "https://doc.rust-lang.org/1.63.0/", "unstable-book"),
    _src("rust-doc", "rustc-book", "rust", "https://doc.rust-lang.org/1.63.0/", "rustc"),
    _src("cargo-doc", "cargo", "rust", "https://doc.rust-lang.org/cargo/"),
    # JavaScript / Node / web
    _src("nodejs-doc", "nodejs", "js", "https://nodejs.org/docs/v18.20.4/api/"),
    _src("libjs-mathjax-doc", "mathjax", "js", "https://docs.mathjax.org/en/v2.7-latest/"),
    _src("highlight.js-doc", "highlight.js", "js", "https://highlightjs.readthedocs.io/en/latest/"),
    _src("node-nouislider-doc", "nouislider", "js", "https://refreshless.com/nouislider/"),
    _src("emscripten-doc", "emscripten", "js", "https://emscripten.org/docs/"),
    # Ruby (YARD, RDoc)
    _src("yard-doc", "yard", "ruby", "https://rubydoc.info/gems/yard/"),
    _src("ruby-mocha-doc", "mocha", "ruby", "https://mocha.jamesmead.org/"),
    _src("ruby-cri-doc", "cri", "ruby", "https://rubydoc.info/gems/cri/"),
    _src("ruby-rmagick-doc", "rmagick", "ruby", "https://rmagick.github.io/"),
    _src("ruby-uuidtools-doc", "uuidtools", "ruby", "https://rubydoc.info/gems/uuidtools/"),
    # Haskell (haddock)
    _src("libghc-aeson-doc", "aeson", "haskell", "https://hackage.haskell.org/package/aeson-2.0.3.0/docs/"),
    _src("libghc-lens-doc", "lens", "haskell", "https://hackage.haskell.org/package/lens-5.0.1/docs/"),
    _src("libghc-conduit-doc", "conduit", "haskell", "https://hackage.haskell.org/package/conduit-1.3.4.3/docs/"),
    _src(
        "libghc-http-client-doc",
        "http-client",
        "haskell",
        "https://hackage.haskell.org/package/http-client-0.7.13.1/docs/",
    ),
    _src("libghc-vector-doc", "vector", "haskell", "https://hackage.haskell.org/package/vector-0.12.3.1/docs/"),
    # Lua
    _src("lua5.2-doc", "lua", "lua", "https://www.lua.org/manual/5.2/"),
    _src("lua-sql-doc", "luasql", "lua", "https://lunarmodules.github.io/luasql/"),
    _src("lua-ldoc", "ldoc", "lua", "https://lunarmodules.github.io/ldoc/"),
    _src("luadoc", "luadoc", "lua", "https://keplerproject.github.io/luadoc/"),
    # Others
    _src("erlang-doc", "erlang-otp", "erlang", "https://www.erlang.org/doc/"),
    _src("libjs-of-ocaml-doc", "js_of_ocaml", "ocaml", "https://ocsigen.org/js_of_ocaml/5.0.1/"),
    _src("golang-1.19-doc", "go", "go", "https://go.dev/doc/"),
    _src("postgresql-doc-15", "postgresql", "sql", "https://www.postgresql.org/docs/15/"),
)

HTML_SUFFIXES = (".html", ".htm", ".html.gz", ".htm.gz")
LANG_DIRS = frozenset({"fr", "de", "es", "pt", "br", "it", "ja", "ko", "zh", "ru", "pl", "zh_cn", "pt_br", "zh-cn"})
DROP_DIRS = frozenset({"_modules", "_sources", "src", "src-html", "class-use", "source"})
DROP_STEM = re.compile(r"(_source|^package-use|^print)$")
NONDOC_DIR = frozenset({"news", "changelog", "changes", "release-notes", "releases", "release_notes", "blog"})
# Names that only non-API pages carry.
NONDOC_STEM = re.compile(
    r"^("
    r"change_?log.*|release[-_]?notes?.*|releases?|release-\d.*|\d+(_\d+)+|whats_?new.*|what_?s_?new.*|migration-notes"
    r"|(mit-|apache-|bsd-)?licen[cs]e.*|copying.*|copyright|epl-v\d+|[lg]?gpl.*"
    r"|authors|contributors|acknowledg(e)?ments?|maintainers|sponsors|donate|funding"
    r"|contributing|contribute|code[-_]of[-_]conduct"
    r"|genindex.*|searchindex|py-modindex|modindex|index-all|index-[\d.]+|doc-index.*|allclasses.*|allpackages.*"
    r"|deprecated-list|help-doc|overview-tree|package-tree|overview-frame|package-frame|.*-members"
    r"|api-index-.*|ix\d+|annotation-glossary|object-tree"
    r")$"
)
# Names that generated index pages and changelogs use, but API pages may use too (PostgreSQL's
# functions.html, Node's globals.html, a Frame class, a "history" command): non-API only when the
# title confirms it (WEAK_TITLE), the page has no title, or it has 3+ headings naming a version.
WEAK_STEM = re.compile(
    r"^(changes|history|news|notes|credits|thanks|people|team|legal|notice|conduct|search|deprecated|tree|frame"
    r"|functions(_\w+)?|globals(_\w+)?|namespacemembers(_\w+)?|classes|files|annotated|hierarchy|inherits"
    r"|all|help|settings)$"
)
WEAK_TITLE = re.compile(
    r"\b(change ?log|changes|release notes|release history|version history|news|what'?s new|members|globals"
    r"|class list|file list|class hierarchy|data structures|data fields|namespace list|list of all items"
    r"|rustdoc (help|settings)|search|index|deprecated|hierarchy|licen[cs]e|copyright|credits|thanks"
    r"|acknowledg\w*|code of conduct|authors|contributors|team|people)\b"
)
NONDOC_TITLE = re.compile(
    r"^(change ?log|changes|release notes|release history|news|what'?s new|whats new"
    r"|licen[cs]e|copyright|authors|contributors|credits|thanks|acknowledgements?|code of conduct|contributing"
    r"|index|general index|search|search page|python module index|module index|deprecated list|all classes"
    r"|index of symbols|all items|rustdoc settings|rustdoc help)$"
    r"|^(changes|release notes|what'?s new|news) (in|for|since|of|from|to)\b|^(\w+ )?(release|version) [\d.]+\b"
    r"|^index of\b|\b(release notes|change ?log|change history|changes from version|member list|licen[cs]e)\b"
    r"|\b(mailing lists?|community( resources)?|reporting bugs|bug report(s|ing)?|contributors? guide)\b"
    r"|\b(contributing to|news|release (guide|process))\b"
)
_VERSION_HEADING = re.compile(rb"<h[1-6][^>]*>[^<]{0,80}?\bv?\d+\.\d+", re.I)


def label_path(rel: str, title: str = "", html: bytes = b"") -> str:
    """``docs``, ``site_nondocs`` or ``drop`` for a docs-package page (the rule in the module doc).

    ``title`` and ``html`` may be left out to pre-screen by path alone (then a weak name counts as
    non-API, the way a page without a title does).
    """
    parts = [p.lower() for p in rel.split("/")]
    name = parts[-1]
    for suffix in HTML_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    name = name.removeprefix("file.")  # YARD renders README/NEWS/LICENSE files as file.NAME.html
    dirs = parts[:-1]
    if any(d in DROP_DIRS or d in LANG_DIRS for d in dirs) or DROP_STEM.search(name):
        return "drop"
    if any(d in NONDOC_DIR for d in dirs) or NONDOC_STEM.match(name):
        return "site_nondocs"
    low = title.strip().lower()
    if WEAK_STEM.match(name) and (
        not low or WEAK_TITLE.search(low) or len(_VERSION_HEADING.findall(html[:1_000_000])) >= 3
    ):
        return "site_nondocs"
    head = re.split(r"\s+[—–|:-]\s+|\s*[—–|]\s*", low, maxsplit=1)[0].strip()
    head = re.sub(r"^[a-z]?\.?[\d.]+\s+", "", head)  # "e.1. release 15.20" -> "release 15.20"
    head = re.sub(r"\s*\(.*\)$", "", head)  # "index (jsoup 1.15.3 api)" -> "index"
    if head and NONDOC_TITLE.search(head):
        return "site_nondocs"
    return "docs"


def reserved_hit(*names: str) -> str | None:
    """The reserved held-out project a package/project/URL names, if any."""
    joined = " ".join(names).lower()
    return next((r for r in RESERVED if r in joined), None)


def assign_project_splits(projects: dict[str, str]) -> dict[str, str]:
    """``{project: ecosystem}`` -> ``{project: split}``: alternate by sha1 order within each ecosystem."""
    by_eco: dict[str, list[str]] = {}
    for project, eco in projects.items():
        by_eco.setdefault(eco, []).append(project)
    out = {}
    for eco, names in by_eco.items():
        start = int(hashlib.sha1(eco.encode()).hexdigest(), 16) & 1
        for i, name in enumerate(sorted(names, key=lambda n: hashlib.sha1(n.encode()).hexdigest())):
            out[name] = ("dev", "test")[(i + start) & 1]
    return out


def url_split(url: str) -> str:
    """Split of a web or text-only page: parity of sha1 of its URL."""
    return ("dev", "test")[int(hashlib.sha1(url.encode()).hexdigest(), 16) & 1]


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.I | re.S)


def page_title(data: bytes) -> str:
    m = _TITLE.search(data[:200_000])
    return htmlmod.unescape(re.sub(r"\s+", " ", m.group(1).decode("utf-8", "replace"))).strip() if m else ""


def word_count(data: bytes) -> int:
    """Words in the main-content text resiliparse keeps (what the pipeline's extract stage sees)."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse(bytes_to_str(data, detect_encoding(data)))
    return len(extract_plain_text(tree, main_content=True, alt_texts=False, links=False).split())


# ---------------------------------------------------------------- Debian packages


def fetch_packages(packages: Iterable[str], cache: Path, log=print) -> dict[str, Path]:
    """``{package: unpacked folder}``; downloads (never installs) what the cache lacks."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    wanted = sorted(set(packages))
    missing = [p for p in wanted if not list(debs.glob(f"{p}_*.deb"))]
    if missing:
        log(f"apt-get download {len(missing)} packages into {debs}")
        cmd = ["apt-get", "download", *missing]
        if subprocess.run(cmd, cwd=debs, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update"], check=True, capture_output=True)
            subprocess.run(cmd, cwd=debs, check=True)
    out = {}
    for p in wanted:
        deb = sorted(debs.glob(f"{p}_*.deb"))[-1]
        target = cache / "x" / deb.stem
        if not (target / ".done").exists():
            target.mkdir(parents=True, exist_ok=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
            (target / ".done").touch()
        out[p] = target
    return out


def package_version(cache: Path, package: str) -> str:
    deb = sorted((cache / "debs").glob(f"{package}_*.deb"))[-1]
    return subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True).stdout.strip()


@functools.cache
def _html_files(root: Path) -> list[Path]:
    """Every HTML file of an unpacked package (cached: rust-doc alone holds 32,000 and serves 9 projects)."""
    return sorted(
        p for p in root.rglob("*") if p.name.lower().endswith(HTML_SUFFIXES) and p.is_file() and not p.is_symlink()
    )


def _read(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def source_pages(source: Source, unpacked: Path) -> Iterator[dict]:
    """The sampled, labelled pages of one project (rule and sampling in the module doc)."""
    files = _html_files(unpacked)
    if not files:
        return
    root = Path(_common_dir(files))
    if source.under:
        tops = {root / u for u in source.under}
        files = [f for f in files if any(t in f.parents for t in tops)]
    rels = {f: f.relative_to(root).as_posix() for f in files}
    order = sorted(files, key=lambda f: _sha1(f"{source.project}/{rels[f]}".encode()))
    kept = Counter()
    caps = {"docs": CAP_DOCS, "site_nondocs": CAP_NONDOCS}
    for f in order:
        rel = rels[f]
        if f.stat().st_size > MAX_BYTES or reserved_hit(rel):
            continue
        pre = label_path(rel)
        if pre == "drop" or kept[pre] >= caps[pre]:
            continue
        data = _read(f)
        if len(data) > MAX_BYTES:
            continue
        kind = label_path(rel, page_title(data), data)
        if kind == "drop" or kept[kind] >= caps[kind] or word_count(data) < MIN_WORDS:
            continue
        kept[kind] += 1
        yield {
            "url": source.base + _url_path(rel),
            "project": source.project,
            "ecosystem": source.ecosystem,
            "label": int(kind == "docs"),
            "kind": kind,
            "html": data,
        }
        if all(kept[k] >= caps[k] for k in caps):
            break


def _common_dir(files: list[Path]) -> str:
    import os

    return os.path.commonpath([str(f.parent) for f in files])


def _url_path(rel: str) -> str:
    rel = rel[:-3] if rel.endswith(".gz") else rel
    return rel[len("html/") :] if rel.startswith("html/") else rel


# ---------------------------------------------------------------- ordinary web negatives


def web_pages(data: Path) -> Iterator[dict]:
    """The real HTML pages of ``shared/data/html`` with their original URLs."""
    for index in sorted((data / "html").glob("*/index.jsonl")):
        for line in index.read_text().splitlines():
            item = json.loads(line)
            page = index.parent / item["file"]
            if not page.exists():
                continue
            url = item["url"].strip()  # a few index entries carry trailing blanks that WARC readers drop
            yield {
                "url": url,
                "project": url.split("/")[2] if "//" in url else index.parent.name,
                "ecosystem": "web",
                "label": 0,
                "kind": "web",
                "html": gzip.decompress(page.read_bytes()),
            }


def warc_pages(data: Path) -> Iterator[dict]:
    """The HTML responses of the real web archives under ``shared/data/warc``, as the job reads them."""
    from raypipe.config import ExtractConfig, StorageConfig
    from raypipe.store.warc import read_warc_file

    for path in sorted((data / "warc").rglob("*.warc*")):
        if not path.name.endswith((".warc", ".warc.gz")) or path.parent.name == "built":
            continue  # WAT/WET files hold no HTML; ``built/`` wraps the ``html/`` pages again
        for batch in read_warc_file(str(path), StorageConfig(), ExtractConfig()):
            for rec in batch.to_pylist():
                if rec["url"] is None:  # the file's closing marker
                    continue
                url = rec["url"].strip()
                yield {
                    "url": url,
                    "project": url.split("/")[2] if "//" in url else path.name,
                    "ecosystem": "web",
                    "label": 0,
                    "kind": "web",
                    "html": rec["html"],
                }


def wrap_text(title: str, text: str) -> bytes:
    """A minimal HTML page around plain text: one ``<p>`` per line."""
    paras = "\n".join(f"<p>{htmlmod.escape(p.strip())}</p>" for p in text.splitlines() if p.strip())
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{htmlmod.escape(title)}</title>'
        f"</head>\n<body>\n<h1>{htmlmod.escape(title)}</h1>\n{paras}\n</body></html>\n"
    ).encode()


def _slug(text: str, words: int = 8) -> str:
    return "-".join(re.findall(r"[a-z0-9]+", text.lower())[:words]) or "page"


def text_pages(data: Path) -> Iterator[dict]:
    """C4 and Wikipedia texts as minimal HTML pages (``kind=text_only``)."""
    folder = data / "mix" / "text"
    wiki = folder / "wiki_demo.txt.gz"
    if wiki.exists():
        for line in gzip.decompress(wiki.read_bytes()).decode().splitlines():
            if not line.strip():
                continue
            m = re.match(r"^(.{1,80}?)\s+(?:is|was|are|were|refers)\b", line)
            subject = m.group(1).strip() if m else " ".join(line.split()[:3])
            subject = re.sub(r"\s*\(.*$", "", subject)
            # "In Greek mythology, Achilles" -> "Achilles"; "The Academy Awards, popularly ..." -> "The Academy Awards"
            head, _, tail = subject.partition(", ")
            subject = (tail if head.startswith("In ") and tail else head).strip(" ,") or "Page"
            yield _text_row(f"https://en.wikipedia.org/wiki/{subject.replace(' ', '_')}", subject, line, "wikipedia")
    c4 = folder / "c4_demo.jsonl.gz"
    if c4.exists():
        for line in gzip.decompress(c4.read_bytes()).decode().splitlines():
            text = json.loads(line)["text"]
            url = f"https://c4.example.org/{_slug(text)}-{_sha1(text.encode())[:8]}"
            yield _text_row(url, " ".join(text.split()[:8]), text, "c4")


def _text_row(url: str, title: str, text: str, project: str) -> dict:
    return {
        "url": url,
        "project": project,
        "ecosystem": "web",
        "label": 0,
        "kind": "text_only",
        "html": wrap_text(title, text),
    }


# ---------------------------------------------------------------- output


def write_warc(frame: pd.DataFrame, path: Path) -> None:
    """WARC/1.1 response records (synthesized HTTP headers), one gzip member per record."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as out:
        writer = WARCWriter(out, gzip=True, warc_version="1.1")
        writer.write_record(
            writer.create_warcinfo_record(path.name, {"software": "raypipe bench.devset", "isPartOf": "raypipe-devset"})
        )
        for row in frame.itertuples(index=False):
            body = bytes(row.html)
            charset = _meta_charset(body)
            ctype = f"text/html; charset={charset}" if charset else "text/html"
            http = StatusAndHeaders(
                "200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))], protocol="HTTP/1.1"
            )
            record_id = f"<urn:uuid:{_uuid(row.url)}>"
            writer.write_record(
                writer.create_warc_record(
                    row.url,
                    "response",
                    payload=io.BytesIO(body),
                    length=len(body),
                    http_headers=http,
                    warc_headers_dict={
                        "WARC-Date": WARC_DATE,
                        "WARC-Record-ID": record_id,
                        "WARC-Identified-Payload-Type": "text/html",
                    },
                )
            )
    tmp.replace(path)


def _uuid(url: str) -> str:
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"devset:{url}"))


_CHARSET = re.compile(rb"""<meta[^>]+charset=["']?([A-Za-z0-9_-]+)""", re.I)


def _meta_charset(data: bytes) -> str | None:
    m = _CHARSET.search(data[:4096])
    return m.group(1).decode().lower() if m else None


def build(out: Path, cache: Path, data: Path, log=print) -> pd.DataFrame:
    """Build the whole set under ``out`` and return its pages."""
    for s in SOURCES:
        assert not reserved_hit(s.package, s.project, s.base), f"reserved project in SOURCES: {s}"
        assert s.project not in SEED_PROJECTS, f"seed project in SOURCES: {s}"
    unpacked = fetch_packages((s.package for s in SOURCES), cache, log)
    rows: list[dict] = []
    for s in SOURCES:
        got = list(source_pages(s, unpacked[s.package]))
        docs = sum(r["label"] for r in got)
        log(f"{s.project:22s} {s.ecosystem:8s} docs={docs:4d} nondocs={len(got) - docs}")
        rows.extend(got)
    splits = assign_project_splits({s.project: s.ecosystem for s in SOURCES})
    for r in rows:
        r["split"] = splits[r["project"]]
    for r in [*web_pages(data), *warc_pages(data), *text_pages(data)]:
        if reserved_hit(r["url"]):
            continue
        r["split"] = url_split(r["url"])
        rows.append(r)
    frame = pd.DataFrame(rows)
    frame["sha1"] = [_sha1(h) for h in frame["html"]]
    frame = frame.drop_duplicates("sha1").drop_duplicates("url").reset_index(drop=True)[COLUMNS]
    hits = [u for u, p in zip(frame["url"], frame["project"], strict=False) if reserved_hit(u, p)]
    assert not hits, f"reserved held-out projects leaked into the set: {hits[:5]}"
    out.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out / "pages.parquet", index=False)
    for split in ("dev", "test"):
        write_warc(frame[frame["split"] == split], out / f"{split}.warc.gz")
    summary = {
        "pages": len(frame),
        "counts": _counts(frame),
        "packages": {p: package_version(cache, p) for p in sorted({s.package for s in SOURCES})},
        "projects": {
            s.project: {"ecosystem": s.ecosystem, "package": s.package, "split": splits[s.project]} for s in SOURCES
        },
        "rules": {
            "cap_docs": CAP_DOCS,
            "cap_nondocs": CAP_NONDOCS,
            "min_words": MIN_WORDS,
            "max_bytes": MAX_BYTES,
            "reserved": list(RESERVED),
            "seed_projects_left_out": list(SEED_PROJECTS),
        },
    }
    (out / "devset.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    return frame


def _counts(frame: pd.DataFrame) -> dict:
    def count(cols: list[str]) -> dict:
        return {
            "/".join(map(str, k)) if isinstance(k, tuple) else str(k): int(v)
            for k, v in frame.groupby(cols).size().items()
        }

    return {
        "kind": count(["kind"]),
        "split": count(["split"]),
        "split_kind": count(["split", "kind"]),
        "ecosystem_kind": count(["ecosystem", "kind"]),
        "ecosystem_split_label": count(["ecosystem", "split", "label"]),
        "project_kind": count(["project", "kind"]),
        "projects_with_docs": int(frame.loc[frame["label"] == 1, "project"].nunique()),
        "ecosystems_with_docs": int(frame.loc[frame["label"] == 1, "ecosystem"].nunique()),
    }


def load_devset(path: str | Path = DEFAULT_OUT, split: str | None = None) -> pd.DataFrame:
    """The pages of a built set (``path`` is the ``--out`` folder or its ``pages.parquet``)."""
    path = Path(path)
    frame = pd.read_parquet(path / "pages.parquet" if path.is_dir() else path)
    if split is not None:
        frame = frame[frame["split"] == split].reset_index(drop=True)
    return frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="downloaded .debs and unpacked trees")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    args = parser.parse_args(argv)
    frame = build(args.out, args.cache, args.data, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(_counts(frame)["split_kind"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
