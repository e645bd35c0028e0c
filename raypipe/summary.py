"""Bounded summaries of a phase's rows, computed on the workers and merged on the driver.

The driver of a dump-sized run must never see one row per document: each batch is reduced on a
worker to one small partial (counts, fixed-bin histograms, a bounded heavy-hitters sketch of
domains), and the driver merges one partial per batch. Histograms use fixed ranges so partials add
exactly; the domain sketch is Misra-Gries, whose merge keeps at most ``capacity`` keys and
under-counts any key by at most total/capacity, so the top domains of a crawl come out right
while memory stays bounded whatever the crawl's size.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa

from raypipe.stage import map_table

DOMAIN_CAPACITY = 2000


def misra_gries(counts: Counter, capacity: int = DOMAIN_CAPACITY) -> Counter:
    """Cut a counter to at most ``capacity`` keys by the Misra-Gries rule (subtract the
    ``capacity+1``-th largest count from every key, drop those at or below zero)."""
    if len(counts) <= capacity:
        return counts
    cut = sorted(counts.values(), reverse=True)[capacity]
    return Counter({k: v - cut for k, v in counts.items() if v > cut})


def domain(url: str | None) -> str:
    return (urlparse(url).hostname or "?").removeprefix("www.") if url else "?"


@dataclass
class Histogram:
    lo: float
    hi: float
    bins: int = 40
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def add(self, values: np.ndarray) -> None:
        finite = values[np.isfinite(values)]
        self.merge(np.histogram(finite, bins=self.bins, range=(self.lo, self.hi))[0])

    def merge(self, counts: np.ndarray) -> None:
        counts = np.asarray(counts, dtype=np.int64)
        self.counts = counts if not len(self.counts) else self.counts + counts

    def to_dict(self, threshold: float | None) -> dict[str, Any]:
        edges = np.linspace(self.lo, self.hi, self.bins + 1).round(4).tolist()
        counts = self.counts if len(self.counts) else np.zeros(self.bins, dtype=np.int64)
        return {"bins": edges, "counts": counts.tolist(), "threshold": threshold}


SCORE_HISTOGRAMS = {"seed_similarity": (-0.2, 1.0), "agent_score": (0.0, 1.0)}
SCORE_COLUMNS = ["url", "selected", "stream", "drop_reason", *SCORE_HISTOGRAMS]


def score_partial(batch: pa.Table) -> pa.Table:
    """One batch of scored pages -> one row holding its partial summary (JSON)."""
    selected = np.asarray(batch.column("selected").fill_null(False).to_pylist(), dtype=bool)
    # Only this phase's own drops: pages it routed to the text stream. A page the extract phase
    # dropped (stream null) keeps that phase's reason and is counted there, once.
    streams = batch.column("stream").to_pylist()
    reasons = Counter(r for r, s in zip(batch.column("drop_reason").to_pylist(), streams, strict=True) if s == "text")
    urls = batch.column("url").to_pylist()
    part: dict[str, Any] = {
        "pages": batch.num_rows,
        "selected": int(selected.sum()),
        "drop_reasons": dict(reasons),
        "domains": dict(misra_gries(Counter(domain(u) for u, s in zip(urls, selected, strict=True) if s))),
        "histograms": {},
    }
    for name, (lo, hi) in SCORE_HISTOGRAMS.items():
        values = batch.column(name).cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
        part["embedded" if name == "seed_similarity" else f"{name}_scored"] = int(np.isfinite(values).sum())
        hist = Histogram(lo, hi)
        hist.add(values)
        part["histograms"][name] = hist.counts.tolist()
    return pa.table({"partial": [json.dumps(part)]})


def merge_score_partials(partials: Iterable[dict[str, Any]], thresholds: dict[str, float | None]) -> dict[str, Any]:
    """The score phase's summary from per-batch partials (bounded however many pages there are)."""
    pages = selected = embedded = 0
    reasons: Counter = Counter()
    domains: Counter = Counter()
    hists = {name: Histogram(lo, hi) for name, (lo, hi) in SCORE_HISTOGRAMS.items()}
    for part in partials:
        pages += part["pages"]
        selected += part["selected"]
        embedded += part["embedded"]
        reasons.update(part["drop_reasons"])
        domains = misra_gries(domains + Counter(part["domains"]))
        for name, counts in part["histograms"].items():
            hists[name].merge(counts)
    return {
        "pages": pages,
        "selected": selected,
        "embedded": embedded,
        "drop_reasons": dict(sorted(reasons.items())),
        "top_domains": dict(domains.most_common(20)),
        "histograms": {name: h.to_dict(thresholds.get(name)) for name, h in hists.items()},
    }


def score_summary(ds: Any, thresholds: dict[str, float | None]) -> dict[str, Any]:
    """Summarize a dataset of scored pages (at least ``SCORE_COLUMNS``; read only those) on the
    workers; the driver reads one row per batch."""
    rows = map_table(ds, score_partial, batch_size=4096)
    return merge_score_partials((json.loads(r["partial"]) for r in rows.iter_rows()), thresholds)
