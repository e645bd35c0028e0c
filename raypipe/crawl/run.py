"""``raypipe crawl``: start URLs -> WARC files, crawl log and API-doc seed records under the output prefix.

Layout under ``<output>/<crawl.output_subdir>/``: ``warc/<shard>-<n>.warc.gz``, ``log/<shard>.parquet``,
``seeds/api_docs.jsonl`` and ``stats.json`` (written last). The WARC files are ordinary ``input`` for
the extract phase.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from raypipe.config import RunConfig, load_config
from raypipe.crawl.coordinator import coordinate, start_ray_shards
from raypipe.crawl.seed_records import crawl_warcs_to_seed_records
from raypipe.crawl.shard import FrontierItem
from raypipe.crawl.urls import Scope, Site, host_key, normalize_url
from raypipe.store.storage import OutputStore, read_bytes

log = logging.getLogger(__name__)


def load_start_urls(cfg: RunConfig) -> list[str]:
    """Normalized, de-duplicated start URLs from ``crawl.start_urls`` and the ``crawl.start_urls_uri`` file."""
    raw = list(cfg.crawl.start_urls)
    if cfg.crawl.start_urls_uri:
        text = read_bytes(cfg.crawl.start_urls_uri, cfg.storage).decode("utf-8")
        raw += [line.split("#", 1)[0].strip() for line in text.splitlines()]
    urls: dict[str, None] = {}
    for item in raw:
        if not item:
            continue
        url = normalize_url(item, sort_query=cfg.crawl.sort_query)
        if url is None:
            raise ValueError(f"start URL is not http(s): {item!r}")
        urls.setdefault(url, None)
    if not urls:
        raise ValueError("no start URLs: set crawl.start_urls or crawl.start_urls_uri")
    return list(urls)


def crawl_scope(cfg: RunConfig, start_urls: list[str]) -> Scope:
    sites = tuple(dict.fromkeys(Site.from_start_url(u, cfg.crawl.scope_path_prefix) for u in start_urls))
    return Scope(sites, tuple(cfg.crawl.include_patterns), tuple(cfg.crawl.exclude_patterns))


def shard_count(cfg: RunConfig, start_urls: list[str]) -> int:
    """``crawl.shards``, else one per host up to the cluster's CPU count."""
    if cfg.crawl.shards:
        return cfg.crawl.shards
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(1, min(len({host_key(u) for u in start_urls}), cpus))


def summarize(shard_stats: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """The run's totals from every shard's numbers."""
    reasons: dict[str, int] = {}
    for s in shard_stats:
        for reason, n in s["reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + n
    return {
        "shards": len(shard_stats),
        "hosts": sorted(h for s in shard_stats for h in s["hosts"]),
        "requests": sum(s["requests"] for s in shard_stats),
        "pages_archived": sum(s["pages_archived"] for s in shard_stats),
        "bytes_archived": sum(s["bytes_archived"] for s in shard_stats),
        "skipped": dict(sorted(reasons.items())),
        "duplicate_links": sum(s["duplicate_links"] for s in shard_stats),
        "warc_files": sorted(f for s in shard_stats for f in s["warc_files"]),
        "log_files": sorted(s["log_file"] for s in shard_stats),
        "seconds": round(seconds, 3),
    }


def run_crawl(cfg: RunConfig, store: OutputStore) -> dict[str, Any]:
    """Crawl the start URLs on the current Ray cluster (started locally if none) and build seed records.

    Earlier output of ``crawl.output_subdir`` is removed first, so the folder always describes
    one crawl. Returns the stats also written to ``<subdir>/stats.json``.
    """
    import ray

    if not ray.is_initialized():
        ray.init(address=cfg.ray.address, num_cpus=None if cfg.ray.address else cfg.ray.num_cpus)
    subdir = cfg.crawl.output_subdir.strip("/")
    store.delete(subdir)
    start_urls = load_start_urls(cfg)
    shards = shard_count(cfg, start_urls)
    began = time.monotonic()
    handles = start_ray_shards(cfg, shards, crawl_scope(cfg, start_urls))
    seeds = [FrontierItem(u, 0, "seed") for u in start_urls]
    try:
        shard_stats = asyncio.run(coordinate(handles, seeds, cfg.crawl.poll_interval_s))
    finally:
        for handle in handles:
            ray.kill(handle.actor)
    stats = summarize(shard_stats, time.monotonic() - began)
    records = crawl_warcs_to_seed_records(stats["warc_files"], cfg)
    stats["seed_records"] = len(records)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records.to_dict(orient="records"))
    stats["seed_file"] = store.write_text(f"{subdir}/seeds/api_docs.jsonl", lines)
    store.write_text(f"{subdir}/stats.json", json.dumps(stats, indent=2, sort_keys=True))
    log.info("crawl done: %d pages archived in %d WARC files", stats["pages_archived"], len(stats["warc_files"]))
    return stats


def crawl_command(config_path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """What ``raypipe crawl CONFIG [--set k=v ...]`` runs; ``input`` may be left out of a crawl config."""
    cfg = load_config(config_path, overrides, base={"input": []})
    return run_crawl(cfg, OutputStore(cfg.output, cfg.storage))
