"""Training data for one round: positives from seeds, negatives from sampled pages, held-out splits.

Why split by *group*: thresholds are picked on held-out seeds, and a seed held out at random
usually has near-twins in training (the same API family, the same provider's endpoints), which
makes held-out scores optimistic and the thresholds too high for pages about APIs the seeds never
mention. Holding out whole groups (a library, a REST provider, a module) measures what the
classifier does on unseen APIs, which is what the crawl is made of.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from raypipe.classify.preprocess import normalize_text
from raypipe.config import ClassifyConfig

MIN_GROUPS_FOR_GROUP_SPLIT = 10
_GROUP_SPLIT = re.compile(r"[\s./:(]")


def bucket(key: str, salt: str) -> float:
    """A stable number in [0, 1) per key: the same split on every run and machine."""
    return int.from_bytes(hashlib.blake2b(f"{salt}\x00{key}".encode(), digest_size=8).digest(), "big") / 2.0**64


def seed_group(text: str, source: str) -> str:
    """The API family a seed documents: its source plus the first word of its title.

    Seed texts start with a title (``click 8.1.7 documentation``, ``Datadog API - ...``,
    ``json.dumps``), so the first word names the library, provider or module.
    """
    first_line = (text or "").strip().split("\n", 1)[0]
    head = _GROUP_SPLIT.split(first_line.strip(), maxsplit=1)[0].lower()
    return f"{source}:{head}"


def held_out_seeds(seeds: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of seeds held out for threshold choice.

    Rule: within each source, whole groups (``seed_group``) are held out with probability
    ``fraction``; a source with fewer than 10 groups (one template for every record) is split
    by seed id instead, so it still contributes to both sides.
    """
    groups = [seed_group(t, s) for t, s in zip(seeds["text"], seeds["source"], strict=True)]
    frame = pd.DataFrame({"source": seeds["source"].to_numpy(), "group": groups, "id": seeds["id"].to_numpy()})
    n_groups = frame.groupby("source")["group"].transform("nunique")
    key = np.where(n_groups >= MIN_GROUPS_FOR_GROUP_SPLIT, frame["group"], frame["id"])
    return np.array([bucket(k, f"holdout{seed}") < fraction for k in key], dtype=bool)


def held_out_pages(keys: pd.Series, fraction: float, seed: int) -> np.ndarray:
    return np.array([bucket(str(k), f"pages{seed}") < fraction for k in keys], dtype=bool)


def cap_per_source(seeds: pd.DataFrame, cap: int, seed: int) -> pd.DataFrame:
    """At most ``cap`` seeds per source, a hash-ordered (random but stable) subset."""
    order = seeds.assign(_b=[bucket(i, f"cap{seed}") for i in seeds["id"]]).sort_values(["source", "_b"])
    return order.groupby("source", sort=True).head(cap).drop(columns="_b")


def chunks(text: str, cfg: ClassifyConfig) -> list[str]:
    """A long document as several examples of ``chunk_tokens`` tokens, up to ``max_tokens`` in all.

    Long library pages otherwise contribute only their opening (often a title and a table of
    contents); their reference sections are what pages about other libraries share with them.
    """
    tokens = normalize_text(text, cfg.max_tokens).split()
    return [" ".join(tokens[i : i + cfg.chunk_tokens]) for i in range(0, len(tokens), cfg.chunk_tokens)]


def balance(positives: list[str], negatives: list[str], seed: int, max_repeat: int = 4) -> tuple[list[str], list[str]]:
    """Equal class sizes: the smaller class is repeated (at most ``max_repeat`` times over) and the
    larger one subsampled to match, so neither the seed count nor the sample size sets the prior."""
    rng = np.random.default_rng(seed)
    small, large = (positives, negatives) if len(positives) <= len(negatives) else (negatives, positives)
    target = min(len(large), max_repeat * len(small))
    reps = -(-target // max(len(small), 1))
    grown = (small * reps)[:target]
    shrunk = [large[i] for i in np.sort(rng.choice(len(large), size=target, replace=False))]
    return (grown, shrunk) if small is positives else (shrunk, grown)


def domain(url: str) -> str:
    host = (urlparse(url).hostname or "").lower()
    return host[4:] if host.startswith("www.") else host


_CODE_TOKEN = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+|\w+\(|\w*_\w+|[a-z]+[A-Z]\w*|::|->|[{};=<>]")
"""A whitespace token that reads as code: a dotted name, a call, snake_case or camelCase, an
operator or a brace."""


def code_token_share(text: str) -> float:
    """The share of a text's whitespace tokens that read as code (``_CODE_TOKEN``)."""
    tokens = (text or "").split()
    return sum(bool(_CODE_TOKEN.search(t)) for t in tokens) / len(tokens) if tokens else 0.0


def documentation_sites(
    urls: Sequence[str], texts: Sequence[str], page_similarity: np.ndarray, cfg: ClassifyConfig
) -> np.ndarray:
    """Mask of sampled pages whose site, as a whole, sits near the seeds and reads like code.

    Why sites: a real documentation page is usually less like the seeds than held-out seeds are
    (on the development set only a sixth of them reach the ``purge_quantile`` of held-out seed
    groups), so the page-level purge leaves most documentation of a docs-heavy crawl among the
    negatives, where it teaches fastText to reject those very pages and raises the thresholds
    above them. Documentation comes in sites, and a site's pages are alike.

    Rule: a domain with at least ``domain_min_pages`` sampled pages is a documentation site when
    its median seed_similarity reaches the ``purge_site_quantile`` of the pages of *small* domains
    (fewer sampled pages than that) and its median ``code_token_share`` reaches
    ``site_code_share``. The small domains are the crawl's long tail of ordinary sites, whatever
    share of it large docs sites take: a bar taken over the whole sample would rise with the
    documentation in it and let a docs-heavy crawl keep its docs as negatives.

    Why code as well: similarity alone took large technical but ordinary sites (Archive-It's
    archive.org catalogue and forum, iana.org, data.gov.uk: medians 0.22-0.23) for documentation
    sites as readily as real ones (emscripten, hackage: 0.24), and their pages, never negatives,
    then became round 2's positives. On the development set the median code-token share of every
    documentation site is 0.031 or more and of those three sites 0.008-0.018. The code bar is a
    constant, not a quantile of the small domains like the similarity bar: the small domains of a
    crawl of a few hundred pages are a hundred pages, whose 0.9 quantile of code share moved
    between 0.023 and 0.046 from one development crawl to the next.
    """
    mask = np.zeros(len(urls), dtype=bool)
    sim = np.asarray(page_similarity, dtype=np.float64)
    if cfg.purge_site_quantile is None or not len(urls) or np.isnan(sim).all():
        return mask
    code = np.array([code_token_share(t) for t in texts], dtype=np.float64)
    frame = pd.DataFrame({"domain": [domain(u) for u in urls], "sim": sim, "code": code})
    size = frame.groupby("domain")["sim"].transform("size").to_numpy()
    small = (size < cfg.domain_min_pages) & ~np.isnan(sim)
    bars = frame[small] if small.any() else frame[~np.isnan(sim)]
    sim_bar = float(bars["sim"].quantile(cfg.purge_site_quantile))
    stats = (
        frame[frame["domain"] != ""]
        .groupby("domain")
        .agg(size=("sim", "size"), sim=("sim", "median"), code=("code", "median"))
    )
    near = (stats["size"] >= cfg.domain_min_pages) & (stats["sim"] >= sim_bar) & (stats["code"] >= cfg.site_code_share)
    return frame["domain"].isin(set(stats.index[near])).to_numpy()


def similarity_labels(
    page_similarity: np.ndarray,
    positive_similarity: np.ndarray,
    cfg: ClassifyConfig,
    sites: np.ndarray | None = None,
) -> np.ndarray:
    """Label sampled pages by their seed_similarity: 1 = retrieved positive, 0 = negative, -1 = unused.

    Why: the crawl's own sample is only a clean set of negatives when agent pages are rare in the
    crawl. In a topical crawl (or a test WARC that is half documentation) many sampled pages are
    exactly what we look for, and training on them as negatives teaches fastText to reject them.
    seed_similarity does not depend on the sample, so it can tell: a page at least as close to the
    seeds as the ``purge_quantile`` of held-out seed groups is not used as a negative, and one at
    least as close as the ``retrieved_positive_quantile`` joins the positives (the paper's "pages
    retrieved with high seed similarity"). NaN similarity (no text) leaves a page unused. Pages in
    the ``sites`` mask (``documentation_sites``) are left unused too.
    """
    pos = np.asarray(positive_similarity, dtype=np.float64)
    pos = pos[~np.isnan(pos)]
    sim = np.asarray(page_similarity, dtype=np.float64)
    labels = np.zeros(len(sim), dtype=np.int8)
    if len(pos) == 0:
        return labels
    labels[np.isnan(sim) | (sim >= np.quantile(pos, cfg.purge_quantile))] = -1
    if sites is not None:
        labels[sites] = -1
    if cfg.retrieved_positive_quantile is not None:
        labels[sim >= np.quantile(pos, cfg.retrieved_positive_quantile)] = 1
    return labels


PAGE_POSITIVE_MAX_REPEAT = 10


def with_share(page_examples: list[str], seed_examples: int, share: float) -> list[str]:
    """Page positives repeated until they are ``share`` of all positives (at most 10 times over).

    Why: the pages an earlier round selected or retrieval found are real documentation as the
    crawl serves it, what the classifier must learn; unweighted, a few dozen of them beside
    thousands of seed examples changed nothing (measured in bench/selection_quality.py).
    """
    if not page_examples or share <= 0:
        return page_examples
    cap = PAGE_POSITIVE_MAX_REPEAT * len(page_examples)
    want = cap if share >= 1 else round(share / (1 - share) * seed_examples)
    n = max(len(page_examples), min(want, cap))
    return (page_examples * -(-n // len(page_examples)))[:n]


@dataclass
class RoundData:
    """Everything one round trains on (texts normalized, chunked, balanced) and its held-out pages."""

    train_pos: list[str]
    train_neg: list[str]
    cal_neg: pd.DataFrame
    counts: dict[str, int]


def round_data(
    seeds: pd.DataFrame,
    seed_held: np.ndarray,
    pages: pd.DataFrame,
    cfg: ClassifyConfig,
    seed: int,
    extra_positives: pd.DataFrame | None = None,
) -> RoundData:
    """Cap, chunk and balance one round's training data.

    ``seeds``: id, text, source; ``seed_held`` marks the held-out ones (``held_out_seeds``).
    ``pages``: url, text (the sampled pages, used as negatives). ``extra_positives``: url, text
    (pages selected by an earlier round or retrieved by similarity); they leave the negatives and
    join the positives. A share of the pages is held out (``cal_neg``) to pick thresholds.
    """
    extra = extra_positives if extra_positives is not None else pd.DataFrame(columns=["url", "text"])
    pages = pages[~pages["url"].isin(set(extra["url"]))]
    page_held = held_out_pages(pages["url"], cfg.holdout_fraction, seed)
    train_seeds = cap_per_source(seeds[~seed_held], cfg.max_positives_per_source, seed)
    extra_train = cap_per_source(extra.assign(id=extra["url"], source="pages"), cfg.max_positives_per_source, seed)
    pos = [c for t in train_seeds["text"] for c in chunks(t, cfg)]
    page_pos = with_share([c for t in extra_train["text"] for c in chunks(t, cfg)], len(pos), cfg.page_positive_share)
    pos += page_pos
    neg = [c for t in pages.loc[~page_held, "text"] for c in chunks(t, cfg)]
    train_pos, train_neg = balance(pos, neg, seed)
    counts = {
        "seeds_train": int((~seed_held).sum()),
        "seeds_train_capped": len(train_seeds),
        "seeds_held_out": int(seed_held.sum()),
        "pages_train": int((~page_held).sum()),
        "pages_held_out": int(page_held.sum()),
        "extra_positives": len(extra),
        "extra_positives_train": len(extra_train),
        "examples_pos_pages": len(page_pos),
        "examples_pos": len(pos),
        "examples_neg": len(neg),
        "examples_pos_balanced": len(train_pos),
        "examples_neg_balanced": len(train_neg),
    }
    return RoundData(train_pos, train_neg, pages.loc[page_held, ["url", "text"]].reset_index(drop=True), counts)
