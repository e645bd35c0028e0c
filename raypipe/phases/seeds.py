"""Phase 1, seeds: the seed corpus (files, harvested modules, crawled doc sites) -> the FAISS seed index."""

from __future__ import annotations

import logging
import time
from typing import Any

from raypipe.config import RunConfig
from raypipe.store.state import RunState
from raypipe.store.storage import OutputStore

log = logging.getLogger(__name__)


def run(cfg: RunConfig, store: OutputStore, state: RunState) -> dict[str, Any]:
    """Phase 1: seed corpus (files, harvested modules, crawled doc sites) -> FAISS seed index.

    Skipped on a rerun once its completion record exists: the index is the unit.
    """
    done = state.finished("seeds")
    if done:
        log.info("seeds: index already built (%d seeds), skipping", done["seeds"])
        return done
    import pandas as pd

    from raypipe.retrieve.index import build_seed_index_on_cluster
    from raypipe.seeds import load_seeds

    start = time.time()
    state.set_phase("seeds", "running", started=start)
    seeds = load_seeds(cfg.seeds, cfg.storage)
    report = seeds.attrs.get("load_report", {})
    crawl_stats = None
    if cfg.crawl.start_urls or cfg.crawl.start_urls_uri:
        from raypipe.crawl import crawl_warcs_to_seed_records
        from raypipe.crawl import run_crawl as crawl_docs

        crawl_stats = crawl_docs(cfg, store)
        crawled = crawl_warcs_to_seed_records(crawl_stats["warc_files"], cfg)
        seeds = pd.concat([seeds, crawled.reindex(columns=seeds.columns)], ignore_index=True)
        seeds = seeds.drop_duplicates(subset=["id"], keep="first").reset_index(drop=True)
        seeds.attrs["load_report"] = report
    log.info("seeds: %d seed records (%s)", len(seeds), seeds["kind"].value_counts().to_dict())
    meta = build_seed_index_on_cluster(seeds, cfg.retrieve, cfg.output, cfg.storage)
    summary = {
        "seeds": len(seeds),
        "by_kind": seeds["kind"].value_counts().sort_index().to_dict(),
        "by_source": seeds["source"].value_counts().sort_index().to_dict(),
        "duplicates_removed": report.get("duplicates_removed", 0),
        "distinct_apis": int(seeds["apis"].explode().dropna().nunique()) if "apis" in seeds else 0,
        "harvest": report.get("harvest"),
        "index": {k: meta[k] for k in ("model", "index_type", "n_vectors", "dim")},
        "docs_crawl": crawl_stats and {k: v for k, v in crawl_stats.items() if k != "warc_files"},
        "seconds": round(time.time() - start, 2),
    }
    state.set_phase("seeds", "done", started=start, seeds=len(seeds), summary=summary)
    return summary
