"""The crawler against real HTTP servers on 127.0.0.1 (one port = one host), on real Ray and real S3.

The sites are built from the real library documentation in ../shared and misbehave in every way
the issue lists; the servers record arrivals, so politeness is measured where a site would see it.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from collections import Counter

import pandas as pd
import pytest
import yaml
from fastwarc.warc import ArchiveIterator as FastArchiveIterator
from fastwarc.warc import WarcRecordType
from warcio.archiveiterator import ArchiveIterator

from raypipe.config import ExtractConfig, RunConfig, StorageConfig, load_config
from raypipe.crawl.coordinator import coordinate
from raypipe.crawl.run import crawl_command, crawl_scope, load_start_urls
from raypipe.crawl.seed_records import crawl_warcs_to_seed_records
from raypipe.crawl.shard import FrontierItem, ShardCrawler
from raypipe.crawl.urls import shard_of
from raypipe.store.storage import OutputStore, read_bytes
from raypipe.store.warc import read_warc_file
from tests.support.crawl_site import DocServer, Page, build_api_site, build_click_site, load_docs, page

pytestmark = pytest.mark.integration

# Server-side arrivals lag the client's (gated) request starts by a varying latency; on a loaded
# 2-core machine we measured up to ~80 ms, so one gap may look that much shorter than the delay.
TOLERANCE_S = 0.1
# The mean gap is (last arrival - first arrival) / n: one late first arrival (a new connection's set-up) shortens it by
# a few ms although every request left the crawler >= delay after the previous one.
MEAN_TOLERANCE_S = 0.02


def crawl_config(output: str, **crawl: object) -> RunConfig:
    base = {
        "host_delay_s": 0.2,
        "host_concurrency": 2,
        "retries": 1,
        "backoff_base_s": 0.05,
        "backoff_max_s": 0.2,
        "connect_timeout_s": 2,
        "read_timeout_s": 0.5,
        "total_timeout_s": 5,
        "poll_interval_s": 0.05,
    }
    return RunConfig.model_validate({"input": [], "output": output, "crawl": {**base, **crawl}})


def read_log(store: OutputStore, subdir: str = "crawl") -> pd.DataFrame:
    frames = [pd.read_parquet(io.BytesIO(store.read_bytes(k))) for k in store.list(f"{subdir}/log")]
    return pd.concat(frames, ignore_index=True)


def test_page_budget_and_unfriendly_robots_in_process(tmp_path):
    """One shard without Ray: max_pages, robots.txt that fails (503) or asks too long a crawl-delay."""
    budget, failing, slowpoke = DocServer(), DocServer(), DocServer()
    try:
        links = [(f"p{i}.html", f"page {i}") for i in range(1, 6)]
        budget.pages["/site/index.html"] = Page(page("index", "<p>index</p>", links))
        for i in range(1, 6):
            budget.pages[f"/site/p{i}.html"] = Page(page(f"p{i}", f"<p>page {i}</p>", links))
        failing.pages["/robots.txt"] = Page(b"down", status=503, content_type="text/plain")
        failing.pages["/d/index.html"] = Page(page("d", "<p>d</p>", []))
        slowpoke.pages["/robots.txt"] = Page(b"User-agent: *\nCrawl-delay: 100\n", content_type="text/plain")
        slowpoke.pages["/e/index.html"] = Page(page("e", "<p>e</p>", []))
        starts = [f"{budget.base}/site/index.html", f"{failing.base}/d/index.html", f"{slowpoke.base}/e/index.html"]
        cfg = crawl_config(str(tmp_path / "out"), start_urls=starts, max_pages_per_site=3, host_delay_s=0.05)
        urls = load_start_urls(cfg)
        shard = ShardCrawler(cfg, 0, 1, crawl_scope(cfg, urls))
        stats = asyncio.run(coordinate([shard], [FrontierItem(u, 0, "seed") for u in urls], 0.02))[0]
    finally:
        for server in (budget, failing, slowpoke):
            server.stop()

    pages_hit = [h.path for h in budget.hits if h.path.startswith("/site/")]
    assert len(pages_hit) == 3 and pages_hit[0] == "/site/index.html"
    assert [h.path for h in failing.hits] == ["/robots.txt", "/robots.txt"]  # 503 retried once, then give up
    assert [h.path for h in slowpoke.hits] == ["/robots.txt"]
    log = read_log(OutputStore(str(tmp_path / "out"), StorageConfig()))
    by_url = log.set_index("url")
    assert (log["reason"] == "max_pages").sum() == 3
    assert by_url.loc[f"{failing.base}/d/index.html", "reason"] == "robots"
    assert by_url.loc[f"{slowpoke.base}/e/index.html", "reason"] == "robots"
    assert "crawl-delay 100s" in by_url.loc[f"{slowpoke.base}/e/index.html", "detail"]
    assert stats["pages_archived"] == 3 and stats["reasons"] == {"max_pages": 3, "robots": 2}
    rows = [
        r
        for f in stats["warc_files"]
        for t in read_warc_file(f, StorageConfig(), ExtractConfig())
        for r in t.to_pylist()
    ]
    assert sorted(r["url"] for r in rows if r["url"]) == sorted(f"{budget.base}{p}" for p in pages_hit)
    seeds = crawl_warcs_to_seed_records(
        stats["warc_files"], cfg.model_copy(update={"crawl": cfg.crawl.model_copy(update={"min_seed_chars": 1})})
    )
    assert len(seeds) == 3 and set(seeds["source"]) == {f"crawl:{budget.host}"}
    assert crawl_warcs_to_seed_records(stats["warc_files"], cfg).empty  # "page 1" is below min_seed_chars


@pytest.fixture
def doc_sites(shared_data):
    """Host A (aiohttp docs, every kind of trouble), host B (click docs, crawl-delay) on different
    shards, and host C, which is linked but out of scope."""
    offsite = DocServer()
    api = DocServer()
    click = DocServer()
    spare: list[DocServer] = []
    while shard_of(click.host, 2) == shard_of(api.host, 2):  # make B's links cross shards
        spare.append(click)
        click = DocServer()
    for server in spare:
        server.stop()
    build_api_site(api, load_docs(shared_data, "aiohttp"), f"{offsite.base}/x.html", f"{click.base}/click/hidden.html")
    build_click_site(click, load_docs(shared_data, "click"), f"{offsite.base}/y.html")
    yield api, click, offsite
    for server in (api, click, offsite):
        server.stop()


def warc_records_warcio(data: bytes) -> list[tuple[str, str | None]]:
    out = []
    warcinfo_id = None
    for record in ArchiveIterator(io.BytesIO(data), check_digests="raise"):
        record.content_stream().read()
        if record.rec_type == "warcinfo":
            warcinfo_id = record.rec_headers.get_header("WARC-Record-ID")
        else:
            assert record.rec_headers.get_header("WARC-Warcinfo-ID") == warcinfo_id
        if record.rec_type == "request":
            assert record.http_headers.protocol == "GET" and record.http_headers.statusline.endswith(" HTTP/1.1")
        out.append((record.rec_type, record.rec_headers.get_header("WARC-Target-URI")))
    return out


def warc_records_fastwarc(data: bytes) -> list[tuple[str, int | None]]:
    for record in FastArchiveIterator(io.BytesIO(data), parse_http=False):
        assert record.verify_block_digest(), record.headers.get("WARC-Target-URI")
    out = []
    for record in FastArchiveIterator(io.BytesIO(data), parse_http=True):
        if record.record_type == WarcRecordType.response:
            assert record.verify_payload_digest(), record.headers.get("WARC-Target-URI")
            out.append(("response", record.http_headers.status_code))
        elif record.record_type == WarcRecordType.request:
            out.append(("request", None))
        else:
            out.append((record.headers.get("WARC-Type"), None))
    return out


def test_distributed_crawl_of_doc_sites(doc_sites, s3_server, s3_env, tmp_path):
    """The CLI entry (YAML + --set) on real Ray with output on real S3."""
    import ray

    api, click, offsite = doc_sites
    s3_server.create_bucket("raypipe-crawl")
    start_file = f"{api.base}/docs/index.html\n# a comment line\n{click.base}/click/index.html\n"
    s3_server.client().put_object(Bucket="raypipe-crawl", Key="start_urls.txt", Body=start_file.encode())
    crawl = crawl_config(
        "s3://raypipe-crawl/run1",
        start_urls_uri="s3://raypipe-crawl/start_urls.txt",
        max_page_bytes=200_000,
        exclude_patterns=["/excluded/"],
        warc_rotate_bytes=20_000,
        actor_num_cpus=0.25,
    ).crawl.model_dump(exclude_defaults=True)
    config_file = tmp_path / "crawl.yaml"
    config_file.write_text(yaml.safe_dump({"output": "s3://raypipe-crawl/run1", "crawl": crawl}))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        began = time.monotonic()
        stats = crawl_command(str(config_file), ["crawl.max_redirects=3"])  # shards: one per host here, 2
        crawl_seconds = time.monotonic() - began
    finally:
        ray.shutdown()
    cfg = load_config(config_file, base={"input": []})
    assert stats["shards"] == 2
    store = OutputStore(cfg.output, cfg.storage)

    # Scope: the out-of-scope host and paths outside the start URL's directory are never requested.
    assert offsite.hits == []
    assert api.requested(lambda p: p.startswith("/outside/")) == []
    # robots.txt: disallowed paths never requested, though linked and listed in the sitemap.
    assert api.requested(lambda p: "/private/" in p) == []
    assert click.requested(lambda p: "/admin/" in p) == []
    assert api.hits[0].path == "/robots.txt" and click.hits[0].path == "/robots.txt"
    # Politeness, measured at the servers: start gaps >= delay, never more than 2 in flight.
    gaps_a, gaps_b = api.start_gaps(), click.start_gaps()
    assert min(gaps_a) >= 0.2 - TOLERANCE_S and sum(gaps_a) / len(gaps_a) >= 0.2 - MEAN_TOLERANCE_S, gaps_a
    # host B: robots.txt asks a fractional Crawl-delay, 0.5 s, honoured as given (above host A's 0.2 s)
    assert min(gaps_b) >= 0.5 - TOLERANCE_S and sum(gaps_b) / len(gaps_b) >= 0.5 - MEAN_TOLERANCE_S, gaps_b
    assert api.max_in_flight <= 2 and click.max_in_flight <= 2
    print(
        f"\npoliteness: host A gaps min {min(gaps_a):.3f}s mean {sum(gaps_a) / len(gaps_a):.3f}s (delay 0.2), "
        f"host B gaps min {min(gaps_b):.3f}s mean {sum(gaps_b) / len(gaps_b):.3f}s "
        f"(crawl-delay 0.5), max in flight A={api.max_in_flight} B={click.max_in_flight}; "
        f"run_crawl {crawl_seconds:.1f}s (crawl {stats['seconds']:.1f}s, then seed records)"
    )
    # Retries: the flaky page was asked twice and archived; the slow one timed out twice.
    assert len(api.requested(lambda p: p == "/docs/flaky.html")) == 2
    assert len(api.requested(lambda p: p == "/docs/slow.html")) == 2
    assert len(api.requested(lambda p: p == "/docs/reset.html")) == 2

    log = read_log(store)
    pages = log[log["kind"] == "page"].set_index("url")
    a, b = api.base, click.base
    expect = {
        f"{a}/docs/private/secret.html": "robots",
        f"{a}/docs/private/s.html": "robots",
        f"{b}/click/admin/panel.html": "robots",
        f"{a}/outside/page.html": "scope",
        f"{offsite.base}/x.html": "scope",
        f"{offsite.base}/y.html": "scope",
        "https://example.invalid/docs/": "scope",
        f"{a}/docs/excluded/page.html": "exclude",
        f"{a}/docs/deep/4.html": "depth",
        f"{a}/docs/data.json": "content_type",
        f"{a}/docs/big.html": "too_large",
        f"{a}/docs/missing.html": "error",
        f"{a}/docs/slow.html": "error",
        f"{a}/docs/old.html": "redirect",
        f"{a}/docs/chain/4.html": "max_redirects",
    }
    for url, reason in expect.items():
        assert url in pages.index, url
        assert reason in set(pages.loc[[url], "reason"]), (url, pages.loc[[url], "reason"].tolist())
    duplicates = log[log["reason"] == "duplicate"]
    assert {f"{a}/docs/loop-a.html", f"{a}/docs/abc.html"} <= set(duplicates["url"])
    assert pages.loc[f"{a}/docs/missing.html", "status"] == 404
    assert pages.loc[f"{a}/docs/flaky.html", "status"] == 200 and pages.loc[f"{a}/docs/flaky.html", "attempts"] == 2
    assert "Timeout" in pages.loc[f"{a}/docs/slow.html", "detail"]
    assert pages.loc[f"{a}/docs/reset.html", "status"] == 200 and pages.loc[f"{a}/docs/reset.html", "attempts"] == 2
    assert pages.loc[f"{a}/docs/moved.html", "status"] == 200
    assert pages.loc[f"{a}/docs/orphan.html", "status"] == 200  # only the gzipped sitemap names it
    hidden = pages.loc[f"{b}/click/hidden.html"]  # linked only from host A: routed across shards
    assert hidden["status"] == 200 and hidden["referrer"] == f"{a}/docs/index.html"
    assert hidden["shard"] == shard_of(click.host, 2) != shard_of(api.host, 2)
    for server in (api, click):  # the frontier dedups: only retried URLs are asked twice
        asked = Counter(h.path for h in server.hits)
        assert all(
            n == 1 for p, n in asked.items() if p not in ("/docs/flaky.html", "/docs/slow.html", "/docs/reset.html")
        ), asked
    assert not log["fetched_at"].isna().all() and set(log["host"]) >= {api.host, click.host}

    # WARC: rotated files under crawl/warc/, valid for warcio (digests checked), fastwarc and raypipe.
    assert len(stats["warc_files"]) > 2
    for name in stats["warc_files"]:
        assert re.fullmatch(r"s3://raypipe-crawl/run1/crawl/warc/00[01]-\d{5}\.warc\.gz", name), name
    archived = set(log.loc[log["warc_file"].notna(), "url"])
    warcio_uris, fast_types, html_rows = [], Counter(), []
    for uri in stats["warc_files"]:
        data = read_bytes(uri, cfg.storage)
        records = warc_records_warcio(data)
        assert records[0][0] == "warcinfo" and records.count(("warcinfo", None)) == 1
        warcio_uris += [u for t, u in records if t == "response"]
        assert Counter(t for t, _ in records)["request"] == Counter(t for t, _ in records)["response"]
        fast_types.update(t for t, _ in warc_records_fastwarc(data))
        for table in read_warc_file(uri, cfg.storage, ExtractConfig()):
            for row in table.to_pylist():
                if row["url"] is None:
                    assert json.loads(row["file_stats"])["errors"] == []
                else:
                    html_rows.append(row)
    assert set(warcio_uris) == archived and len(warcio_uris) == len(archived)
    assert fast_types["response"] == len(archived) == fast_types["request"]
    ok_html = log[(log["kind"] == "page") & (log["status"] == 200) & log["reason"].isna()]
    assert sorted(r["url"] for r in html_rows) == sorted(ok_html["url"])
    assert stats["pages_archived"] == len(ok_html) >= 12

    # Seed records from the crawled pages.
    seeds = pd.read_json(io.BytesIO(store.read_bytes("crawl/seeds/api_docs.jsonl")), lines=True)
    assert list(seeds.columns) == ["id", "kind", "text", "source", "license", "apis"]
    assert stats["seed_records"] == len(seeds) >= 8 and seeds["id"].is_unique
    assert set(seeds["source"]) == {f"crawl:{api.host}", f"crawl:{click.host}"}
    all_apis = {name for names in seeds["apis"] for name in names}
    assert {"aiohttp.ClientSession", "click.command", "click.option"} <= all_apis
    assert json.loads(store.read_bytes("crawl/stats.json"))["pages_archived"] == stats["pages_archived"]
