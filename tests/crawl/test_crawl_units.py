"""Crawler parts that need no socket: URLs, scope, robots.txt, sitemaps, links, API names, the gate."""

from __future__ import annotations

import asyncio
import gzip
import itertools

import pytest

from raypipe.config import ConfigError, load_config
from raypipe.crawl.links import extract_links, parse_html
from raypipe.crawl.politeness import HostGate
from raypipe.crawl.robots import parse_sitemap, product_token, rules_from_answer
from raypipe.crawl.seed_records import extract_api_names, page_to_seed_record
from raypipe.crawl.urls import Scope, Site, host_key, normalize_url, shard_of


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("HTTP://Docs.Example.COM:80/a/../b/./c.html#frag", "http://docs.example.com/b/c.html"),
        ("https://x.org:443", "https://x.org/"),
        ("http://x.org:8080/a b", "http://x.org:8080/a%20b"),
        ("http://user:secret@x.org/p", "http://x.org/p"),
        ("http://x.org/p?b=2&a=1", "http://x.org/p?b=2&a=1"),
        ("mailto:docs@x.org", None),
        ("javascript:void(0)", None),
        ("ftp://x.org/file", None),
        ("http://[::1]:80/x", "http://[::1]/x"),
    ],
)
def test_normalize_url(raw, expected):
    assert normalize_url(raw) == expected


def test_normalize_relative_and_sorted_query():
    assert normalize_url("../c.html#x", "http://x.org/a/b.html") == "http://x.org/c.html"
    assert normalize_url("//Other.org:80/x", "https://x.org/") == "https://other.org:80/x"
    assert normalize_url("/p?b=2&a=1&c", "http://x.org/", sort_query=True) == "http://x.org/p?a=1&b=2&c"


def test_host_key_and_stable_sharding():
    assert host_key("http://127.0.0.1:8080/x") == "127.0.0.1:8080"
    assert host_key("https://docs.x.org/") == "docs.x.org"
    hosts = [f"h{i}.example.org" for i in range(200)]
    shards = [shard_of(h, 4) for h in hosts]
    assert shards == [shard_of(h, 4) for h in hosts]
    assert set(shards) == {0, 1, 2, 3}
    assert shard_of("docs.python.org", 7) == 6  # fixed value: the same on every process and run


def test_scope_host_prefix_and_patterns():
    site = Site.from_start_url("http://docs.x.org/en/latest/index.html", use_path_prefix=True)
    assert site == Site("docs.x.org", "/en/latest/")
    scope = Scope((site,), include=(), exclude=(r"/_modules/",))
    assert scope.reject_reason("http://docs.x.org/en/latest/api.html") is None
    assert scope.reject_reason("http://docs.x.org/en/stable/api.html") == "scope"
    assert scope.reject_reason("http://other.org/en/latest/api.html") == "scope"
    assert scope.reject_reason("http://docs.x.org/en/latest/_modules/x.html") == "exclude"
    only_api = Scope((site,), include=(r"/api",))
    assert only_api.reject_reason("http://docs.x.org/en/latest/guide.html") == "exclude"
    whole_host = Site.from_start_url("http://docs.x.org/en/latest/index.html", use_path_prefix=False)
    assert whole_host.contains("http://docs.x.org/blog/")


def test_config_rejects_bad_regex():
    with pytest.raises(ConfigError, match="invalid regex"):
        load_config(None, ["input=[]", "output=/tmp/x", "crawl.exclude_patterns=['(unclosed']"])


def test_robots_rules_delay_and_sitemaps():
    body = (
        b"User-agent: otherbot\nDisallow: /\n\n"
        b"User-agent: *\nDisallow: /private/\nCrawl-delay: 0.5\nSitemap: http://x.org/sm.xml\n"
    )
    rules = rules_from_answer(200, body, "raypipe-crawler/0.1 (+https://x)")
    assert rules.agent == "raypipe-crawler"
    assert rules.allowed("http://x.org/docs/a.html")
    assert not rules.allowed("http://x.org/private/a.html")
    assert rules.crawl_delay == 0.5  # kept as asked (the stdlib dropped a fractional delay entirely)
    assert rules.sitemaps == ["http://x.org/sm.xml"]
    assert rules_from_answer(200, b"User-agent: *\nRequest-rate: 1/3\n", "bot").crawl_delay == 3.0
    assert not rules_from_answer(200, b"User-agent: otherbot\nDisallow: /\n", "otherbot/2").allowed("http://x.org/")
    assert product_token("") == "*"


ROBOTS_9309 = b"""User-agent: *
Disallow: /*.pdf$
Disallow: /tmp*/cache
Disallow: /docs
Allow: /docs/api
Disallow: /guide/
Allow: /guide/public/
Disallow: /guide/public/drafts
Allow: /page
Disallow: /page
Crawl-delay: 2.5
"""


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/doc.pdf", False),  # `$` anchors the end: the stdlib read the rule literally and allowed it
        ("/a/b/report.pdf", False),  # `*` matches any run of characters, slashes included
        ("/doc.pdf.html", True),  # ... but `$` means the path ends there
        ("/doc.pdf?x=1", True),  # the query is part of the matched path, so it does not end in .pdf
        ("/tmp/cache/x", False),
        ("/tmp-2024/cache", False),
        ("/tmp/other", True),
        ("/docs", False),
        ("/docs/guide.html", False),
        ("/docs/api/x", True),  # the longer Allow beats the shorter Disallow, whatever their order
        ("/docs/api", True),
        ("/guide/intro", False),
        ("/guide/public/a.html", True),  # longest match: Allow /guide/public/ over Disallow /guide/
        ("/guide/public/drafts/b.html", False),  # and a still longer Disallow over that Allow
        ("/page", True),  # equal length: Allow wins the tie (RFC 9309, 2.2.2)
        ("/elsewhere", True),
    ],
)
def test_robots_follow_rfc_9309(path, allowed):
    rules = rules_from_answer(200, ROBOTS_9309, "raypipe-crawler/0.1 (+https://x)")
    assert rules.allowed(f"http://x.org{path}") is allowed
    assert rules.crawl_delay == 2.5


def test_robots_most_specific_group_wins():
    body = b"User-agent: *\nDisallow: /\n\nUser-agent: raypipe-crawler\nDisallow: /private\nCrawl-delay: 3\n"
    rules = rules_from_answer(200, body, "raypipe-crawler/0.1")
    assert rules.allowed("http://x.org/docs") and not rules.allowed("http://x.org/private/a")
    assert rules.crawl_delay == 3.0
    other = rules_from_answer(200, body, "otherbot/1.0")
    assert not other.allowed("http://x.org/docs") and other.crawl_delay == 0.0


@pytest.mark.parametrize(("status", "allowed"), [(404, True), (410, True), (401, False), (403, False), (503, False)])
def test_robots_answer_status(status, allowed):
    assert rules_from_answer(status, b"", "bot").allowed("http://x.org/a") is allowed
    assert rules_from_answer(None, b"", "bot").allowed("http://x.org/a") is False


def test_parse_sitemap_index_gzip_and_bomb():
    urlset = (
        b'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        b"<url><loc> http://x.org/a </loc></url><url><loc>http://x.org/b</loc></url></urlset>"
    )
    assert parse_sitemap(urlset, 10, 10_000) == (["http://x.org/a", "http://x.org/b"], [])
    assert parse_sitemap(gzip.compress(urlset), 1, 10_000) == (["http://x.org/a"], [])
    index = b"<sitemapindex><sitemap><loc>http://x.org/s1.xml</loc></sitemap></sitemapindex>"
    assert parse_sitemap(index, 10, 10_000) == ([], ["http://x.org/s1.xml"])
    bomb = gzip.compress(b"<urlset>" + b" " * 5_000_000 + b"</urlset>")
    assert parse_sitemap(bomb, 10, 1000) == ([], [])
    assert parse_sitemap(b"not xml at all", 10, 1000) == ([], [])


def test_extract_links_base_href_and_dedup():
    html = (
        b"<html><head><base href='/docs/v2/'></head><body>"
        b"<a href='a.html#x'>a</a><a href='a.html'>a again</a><a href='mailto:x@y'>m</a>"
        b"<a href='HTTP://Other.ORG:80/'>o</a><map><area href='/img.html'></map><a>no href</a></body></html>"
    )
    assert extract_links(html, "http://x.org/docs/index.html") == [
        "http://x.org/docs/v2/a.html",
        "http://other.org/",
        "http://x.org/img.html",
    ]


def test_api_names_from_code_headings_and_signatures():
    html = (
        "<html><body><main><h1>aiohttp.ClientSession ¶</h1>"
        "<p>Use <code>ClientSession.get</code> or <code>True</code> and <code>index.html</code>.</p>"
        "<pre>import aiohttp\nfrom yarl import URL\nasync with aiohttp.ClientSession() as s:\n"
        "    resp = await s.get(url)\n    print(len(resp.headers))</pre>"
        "<dl><dt>aiohttp.request(method, url, **kwargs)</dt></dl>"
        "<h2>Make a Request</h2><h2>Quickstart</h2><h3>StreamReader</h3><p><code>e.g.</code></p></main></body></html>"
    ).encode()
    names = extract_api_names(parse_html(html, "utf-8"))
    for expected in (
        "aiohttp.ClientSession",
        "ClientSession.get",
        "aiohttp",
        "yarl",
        "aiohttp.request",
        "StreamReader",
    ):
        assert expected in names
    for unwanted in ("True", "print", "len", "index.html", "Make a Request", "Make", "Quickstart", "e.g", "s.get"):
        assert unwanted not in names


def test_page_to_seed_record_shape_and_min_chars():
    body = "<p>" + "The session object keeps a connection pool for all requests. " * 10 + "</p>"
    html = f"<html><body><main><h1>aiohttp.ClientSession</h1>{body}</main></body></html>".encode()
    record = page_to_seed_record("http://127.0.0.1:9/docs/a.html", html, None, 200)
    assert set(record) == {"id", "kind", "text", "source", "license", "apis"}
    assert record["kind"] == "api_doc" and record["license"] is None
    assert record["source"] == "crawl:127.0.0.1:9"
    assert record["apis"] == ["aiohttp.ClientSession"]
    assert "connection pool" in record["text"]
    assert page_to_seed_record("http://x.org/", b"<html><body><p>tiny</p></body></html>", None, 200) is None


def test_gate_spaces_starts_and_caps_concurrency():
    async def scenario() -> tuple[list[float], int]:
        gate = HostGate(concurrency=2, delay_s=0.05)
        starts: list[float] = []
        active = peak = 0

        async def request(hold: float) -> None:
            nonlocal active, peak
            async with gate.slot():
                starts.append(asyncio.get_running_loop().time())
                active += 1
                peak = max(peak, active)
                await asyncio.sleep(hold)
                active -= 1

        await asyncio.gather(*(request(0.2 if i % 3 == 0 else 0.0) for i in range(9)))
        return starts, peak

    starts, peak = asyncio.run(scenario())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.05 - 1e-3
    assert peak == 2
