"""Iterative rounds: pages selected in round k become positives (and stop being negatives) in k+1.

Why rounds: round 1 only knows the seeds, which are not web pages; the pages it selects are real
documentation as the crawl renders it, so training on them moves the classifier toward the pages
it must find. They also leave the negatives, which matters when the crawl's own sample holds many
agent pages (a topical crawl): round 1 learned some of them as negatives.

Domain expansion (on by default, ``domain_expansion_share`` 0.1): when at least that share of a
domain's scored pages (and at least ``domain_min_pages`` of them) were selected, every scored page
of that domain joins the next round's positives, as DeepSeekMath did for math sites (domains with
over 10% of their pages collected). With seed similarity, the domain must also be a documentation
site of the sample (``train.documentation_sites``: its pages, as a whole, sit near the seeds and
read like code), so
an ordinary site where a few tutorial pages were selected does not turn into positives. Those pages
get ``page_positive_share`` of the positive examples (``train.with_share``): unweighted, a few
dozen real pages beside thousands of seed examples changed nothing. On the development set's
docs-heavy crawl (bench/selection_quality.py --split dev, 20% documentation) the second round
took the crawl's own documentation pages from recall 0.75 to 0.94 (F1 0.75 to 0.86).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from raypipe.classify.classifier import SimilarityFn, TrainedClassifier, save_classifier, train_classifier
from raypipe.classify.model import agent_proba
from raypipe.classify.rule import SelectionRule
from raypipe.classify.train import documentation_sites, domain
from raypipe.config import ClassifyConfig
from raypipe.store.storage import OutputStore

# (model URI, fitted rule) -> scored pages with at least url, text, selected
ScoreFn = Callable[[str, SelectionRule], pd.DataFrame]


def expanded_domains(scored: pd.DataFrame, share: float, min_pages: int) -> list[str]:
    """Domains with at least ``min_pages`` scored pages of which at least ``share`` were selected."""
    frame = pd.DataFrame({"domain": scored["url"].map(domain), "selected": scored["selected"].astype(bool)})
    frame = frame[frame["domain"] != ""]
    stats = frame.groupby("domain")["selected"].agg(["size", "mean"])
    return sorted(stats.index[(stats["size"] >= min_pages) & (stats["mean"] >= share)])


def next_positives(
    scored: pd.DataFrame, cfg: ClassifyConfig, sites: set[str] | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Selected pages, plus every page of an expanded domain; and the expanded domains.

    ``sites``: the sample's documentation sites (``train.documentation_sites``), when seed
    similarity is known; a domain must then be one of them to expand.
    """
    keep = scored["selected"].astype(bool)
    domains: list[str] = []
    if cfg.domain_expansion_share is not None:
        domains = expanded_domains(scored, cfg.domain_expansion_share, cfg.domain_min_pages)
        if sites is not None:
            domains = [d for d in domains if d in sites]
        keep |= scored["url"].map(domain).isin(domains)
    return scored.loc[keep, ["url", "text"]].drop_duplicates("url").reset_index(drop=True), domains


def site_domains(pages: pd.DataFrame, cfg: ClassifyConfig, similarity: SimilarityFn | None) -> set[str] | None:
    """Domains of the sample's documentation sites, or None without seed similarity."""
    if similarity is None or pages.empty:
        return None
    urls, texts = pages["url"].tolist(), pages["text"].tolist()
    mask = documentation_sites(urls, texts, similarity(texts, [None] * len(urls)), cfg)
    return {domain(u) for u, m in zip(urls, mask, strict=True) if m}


@dataclass
class RoundReport:
    round: int
    model_uri: str
    rule: SelectionRule
    metrics: dict[str, Any]
    counts: dict[str, Any] = field(default_factory=dict)


def run_rounds(
    seeds: pd.DataFrame,
    pages: pd.DataFrame,
    score: ScoreFn,
    cfg: ClassifyConfig,
    store: OutputStore,
    seed: int,
    similarity: SimilarityFn | None = None,
) -> list[RoundReport]:
    """Train ``cfg.rounds`` rounds; ``score`` runs a round's model over pages (the lead's crawl
    plan over the bootstrap files, or ``score_frame`` over an in-memory set). The last report's
    ``model_uri`` is the model for the crawl. Counts per round are printed and returned."""
    extra = pd.DataFrame(columns=["url", "text"])
    reports: list[RoundReport] = []
    for k in range(1, cfg.rounds + 1):
        trained = train_classifier(seeds, pages, cfg, seed, extra_positives=extra, similarity=similarity)
        uri = save_classifier(trained, store, k)
        counts: dict[str, Any] = {"seeds": len(seeds), "selected_before": len(extra), **trained.metrics["counts"]}
        report = RoundReport(k, uri, trained.rule, trained.metrics, counts)
        reports.append(report)
        if k < cfg.rounds:
            scored = score(uri, trained.rule)
            extra, domains = next_positives(scored, cfg, site_domains(pages, cfg, similarity))
            counts.update(
                scored_pages=len(scored),
                selected_pages=int(scored["selected"].astype(bool).sum()),
                expanded_domains=domains,
                next_round_positives=len(extra),
            )
        print(f"classifier round {k}: {counts}", flush=True)
    return reports


def score_frame(
    pages: pd.DataFrame, trained: TrainedClassifier, similarity: SimilarityFn | None = None
) -> pd.DataFrame:
    """Apply a trained classifier and its rule to an in-memory frame (url, text[, drop_reason]).

    The same computation as the Ray Data chain, in one process: for bootstrap-sized page sets.
    """
    out = pages.copy()
    out["agent_score"] = agent_proba(trained.model, out["text"].tolist(), trained.metrics["config"]["max_tokens"])
    embed = trained.rule.to_embed(out)
    out["seed_similarity"] = float("nan")
    if embed.any():
        if similarity is None:
            raise ValueError(f"mode {trained.rule.mode} needs seed similarity to score pages")
        texts = out.loc[embed, "text"].tolist()
        out.loc[embed, "seed_similarity"] = similarity(texts, [None] * len(texts))
    return trained.rule.apply(out)
