"""Phase 2b, score: train the fastText classifier on seeds against a sample of this crawl's pages,
then tag every extracted page with its classifier score and seed similarity and route it
(one ``Select``): ``scored/``.

Scores are kept as columns and the selection as a flag with a reason (tag first, select later),
so every decision can be audited in ``candidates/`` and re-made without re-extracting.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from raypipe.config import RunConfig
from raypipe.store.parts import EXTRACTED, SCORED, read_parts, write_dataset
from raypipe.store.state import RunState
from raypipe.store.storage import OutputStore
from raypipe.summary import SCORE_COLUMNS, score_summary

log = logging.getLogger(__name__)


def _headline(reports: list[Any], mode: str | None) -> dict[str, Any] | None:
    """The final round's held-out precision at the configured and reported prevalences, with 95%
    intervals, beside recall: the selection's headline figure (a balanced F1 says little about a
    crawl where 1% of pages are agent pages). None when a given model was used (no held-out data)."""
    if not reports:
        return None
    return (reports[-1].metrics.get("held_out") or {}).get(mode, {}).get("at_prevalence")


def run(cfg: RunConfig, store: OutputStore, state: RunState) -> dict[str, Any]:
    """Phase 2b: train the fastText classifier (seeds vs a reservoir sample of this crawl's pages,
    ``classify.rounds`` rounds), then score every extracted page and write ``scored/``."""
    done = state.finished("score")
    if done:
        log.info("score: already done, skipping")
        return done
    from raypipe.classify.classifier import load_rule
    from raypipe.classify.plan import add_selection
    from raypipe.classify.train_task import train_on_worker
    from raypipe.extract import extract_rules
    from raypipe.retrieve.stage import add_retrieval, retrieval_resources
    from raypipe.runtime import resources_within

    start = time.time()
    state.set_phase("score", "running", started=start)
    reports = []

    def retrieve(ds: Any) -> Any:
        return add_retrieval(ds, cfg.retrieve, cfg.output, cfg.storage)

    embedding = retrieval_resources(cfg.retrieve)
    with resources_within(embedding, cfg.ray.resource_wait_s, "retrieve.num_gpus"):
        if cfg.classify.model_uri:
            model_uri = cfg.classify.model_uri
            rule = load_rule(model_uri, cfg.storage).to_dict()
        else:
            kept = sum(u.get("drops", {}).get("kept", 0) for u in state.units("extract").values())
            gpus = embedding.gpus if cfg.classify.mode != "fasttext_only" else 0.0
            reports = train_on_worker(cfg, store, kept, gpus)
            model_uri = reports[-1].model_uri
            rule = reports[-1].rule.to_dict()
        ds = add_selection(
            read_parts(store, EXTRACTED),
            cfg.classify,
            model_uri,
            cfg.storage,
            retrieve=retrieve,
            drop_rules=extract_rules(cfg.extract, cfg.quality),
        )
        rows = write_dataset(ds, cfg, store, SCORED)
    thresholds = {"seed_similarity": rule.get("similarity_threshold"), "agent_score": rule.get("ft_threshold")}
    scored = score_summary(read_parts(store, SCORED, columns=SCORE_COLUMNS), thresholds)
    summary = {
        "pages": rows,
        "selected": scored["selected"],
        "embedded": scored["embedded"],
        "mode": rule.get("mode"),
        "rule": rule,
        "rounds": [
            {
                "round": r.round,
                "model": r.model_uri.removeprefix(cfg.output.rstrip("/") + "/"),  # relative: stats move with the run
                **r.counts,
                "metrics": r.metrics.get("held_out"),
            }
            for r in reports
        ],
        "precision_at_prevalence": _headline(reports, rule.get("mode")),
        "drop_reasons": scored["drop_reasons"],
        "top_domains": scored["top_domains"],
        "histograms": scored["histograms"],
        "seconds": round(time.time() - start, 2),
    }
    state.set_phase("score", "done", started=start, summary=summary)
    return summary
