"""The selection rule: agent_score and seed_similarity -> ``selected`` and ``drop_reason``.

Every threshold is fitted by ``fit_rule`` from held-out data of the run itself (seeds of held-out
groups as positives, held-out sampled pages of the crawl as negatives); nothing is hand-set.

Every threshold is chosen for a crawl of the configured prevalence (``classify.prevalence``): it
maximizes the F1 expected when that share of pages are agent pages (``thresholds.prevalence_threshold``),
since a crawl is never class-balanced and at 1% every point of false-positive rate costs far more
precision than it would on a balanced view.

Rules, by mode:

* ``fasttext_only`` (the paper's): selected iff ``agent_score >= ft_threshold``.
* ``embed_all``: the combined score ``c = (1-w) * z(logit(agent_score)) + w * z(seed_similarity)``,
  each signal standardized (``z``) by its mean and spread over the held-out sampled pages, so ``w``
  (``similarity_weight``) means the same whatever the model's calibration; selected iff
  ``c >= combined_threshold``. Standardizing by the *pages* matters: fastText is far more
  confident on held-out seeds than on real documentation pages, so a rule fitted on raw
  probabilities would trust it too much. ``combined_threshold`` spends the false-positive budget
  of the ``fasttext_only`` rule fitted for the prevalence: it passes the same share of held-out
  sampled pages (``thresholds.fpr_threshold``), and similarity decides which. Why not fit it for
  F1 on the held-out seeds like ``ft_threshold``: held-out seeds sit far nearer the seed index
  than real documentation pages do (held-out seed groups' 5th percentile of seed_similarity is
  about a docs site's median), so that fit sat above nearly every held-out negative, where real
  pages, less like the seeds, fall under it too. With the matched budget the development set's
  recall rose by 0.002-0.018 at the same false-positive rate on ordinary pages.
* ``cascade``: a page is embedded only if ``agent_score >= pass_threshold``, then the
  ``embed_all`` rule applies. ``pass_threshold`` lets through ``embed_fraction`` of the held-out
  sampled pages used as negatives (ordinary pages: the ones near seeds were kept out, see
  ``train.similarity_labels``): the embedding budget, spent entirely, keeps the most recall it can.
  A recall target on held-out seeds is not used: seeds score far higher than real pages do, so a
  gate fitted on them keeps too little on the web (issue 13: ROC AUC 0.69 on real docs pages).

A page that is not selected gets a ``drop_reason``: an existing one (quality, language...) is kept,
else ``low_agent_score`` or ``low_seed_similarity`` (the signal whose standardized value argued
more against the page; a cascade reject is ``low_agent_score``), or ``no_text``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from raypipe.classify.thresholds import fpr_threshold, prevalence_threshold

LOW_AGENT_SCORE = "low_agent_score"
LOW_SEED_SIMILARITY = "low_seed_similarity"
NO_TEXT = "no_text"
MODES = ("cascade", "embed_all", "fasttext_only")
_EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class SelectionRule:
    """Fitted thresholds and standardization; JSON-serializable through ``to_dict``."""

    mode: str
    ft_threshold: float
    pass_threshold: float | None = None
    combined_threshold: float | None = None
    similarity_weight: float = 0.0
    agent_mean: float = 0.0
    agent_std: float = 1.0
    similarity_mean: float = 0.0
    similarity_std: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown selection mode {self.mode!r}; expected one of {MODES}")
        if self.mode != "fasttext_only" and self.combined_threshold is None:
            raise ValueError(
                f"mode {self.mode!r} needs a rule calibrated with seed similarity; "
                "train with a seed index or use mode fasttext_only"
            )
        if self.mode == "cascade" and self.pass_threshold is None:
            raise ValueError("mode 'cascade' needs a pass_threshold")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SelectionRule:
        return cls(**data)

    def with_mode(self, mode: str) -> SelectionRule:
        return SelectionRule.from_dict({**self.to_dict(), "mode": mode})

    def agent_z(self, agent_score: np.ndarray) -> np.ndarray:
        return (logit(agent_score) - self.agent_mean) / self.agent_std

    def similarity_z(self, seed_similarity: np.ndarray) -> np.ndarray:
        return (np.asarray(seed_similarity, dtype=np.float64) - self.similarity_mean) / self.similarity_std

    def combined(self, agent_score: np.ndarray, seed_similarity: np.ndarray) -> np.ndarray:
        """The combined score (NaN where seed_similarity is missing)."""
        w = self.similarity_weight
        return (1 - w) * self.agent_z(agent_score) + w * self.similarity_z(seed_similarity)

    def to_embed(self, batch: pd.DataFrame) -> np.ndarray:
        """Rows the embedding stage should score: not dropped already, and past the cascade's gate."""
        keep = _undropped(batch) & batch["agent_score"].notna().to_numpy()
        if self.mode == "cascade":
            keep &= batch["agent_score"].fillna(0.0).to_numpy() >= self.pass_threshold
        return keep if self.mode != "fasttext_only" else np.zeros(len(batch), dtype=bool)

    def apply(self, batch: pd.DataFrame) -> pd.DataFrame:
        """Add ``selected`` and fill ``drop_reason`` for every page that is not selected."""
        out = batch.copy()
        agent = out["agent_score"].to_numpy(dtype=np.float64)
        reason = out["drop_reason"].astype(object).to_numpy() if "drop_reason" in out else np.full(len(out), None)
        reason = np.where(pd.isna(reason), None, reason).astype(object)
        free = (reason == None) & ~np.isnan(agent)  # noqa: E711 - elementwise comparison on an object array
        reason[(reason == None) & np.isnan(agent)] = NO_TEXT  # noqa: E711
        if self.mode == "fasttext_only":
            passed = agent >= self.ft_threshold
            reason[free & ~passed] = LOW_AGENT_SCORE
            selected = free & passed
        else:
            if self.mode == "cascade":
                gate = agent >= self.pass_threshold
                reason[free & ~gate] = LOW_AGENT_SCORE
                free &= gate
            sim = out["seed_similarity"].to_numpy(dtype=np.float64) if "seed_similarity" in out else np.nan
            score = self.combined(agent, np.broadcast_to(sim, agent.shape))
            passed = score >= self.combined_threshold
            blame_agent = self.agent_z(agent) <= self.similarity_z(np.broadcast_to(sim, agent.shape))
            failed = free & ~passed
            reason[failed & blame_agent] = LOW_AGENT_SCORE
            reason[failed & ~blame_agent] = LOW_SEED_SIMILARITY
            selected = free & passed
        out["selected"] = selected
        out["drop_reason"] = pd.Series(reason, index=out.index, dtype=object)
        return out


def _undropped(batch: pd.DataFrame) -> np.ndarray:
    if "drop_reason" not in batch:
        return np.ones(len(batch), dtype=bool)
    return batch["drop_reason"].isna().to_numpy()


MIN_FALSE_POSITIVES = 10
"""Held-out false positives a threshold fit must be able to see at its prevalence (see below)."""


def resolvable_prevalence(prevalence: float, negatives: int) -> float:
    """The prevalence a threshold can be fitted for with ``negatives`` held-out negatives.

    One held-out false positive moves the estimated false-positive rate by ``1/negatives``; at a
    prevalence far below that, a single one outweighs any recall and the fit climbs above every
    held-out negative, where it no longer measures anything (on 65 negatives at 1%, real docs pages
    fell to 5% recall). So the fit targets at least ``MIN_FALSE_POSITIVES / negatives``: each
    held-out false positive then costs at most a tenth of the precision. A crawl sample of a few
    thousand pages resolves 1%; a small run is fitted for what it can resolve.
    """
    return min(0.5, max(prevalence, MIN_FALSE_POSITIVES / max(negatives, 1)))


def fit_rule(
    mode: str,
    pos_agent: np.ndarray,
    neg_agent: np.ndarray,
    embed_fraction: float,
    similarity_weight: float,
    prevalence: float,
    neg_similarity: np.ndarray | None = None,
) -> SelectionRule:
    """Fit every threshold from held-out scores (positives: held-out seed groups as pages; negatives:
    held-out sampled pages) for a crawl of ``prevalence``. ``neg_similarity`` may be shorter (a
    subsample) but pairs index by index with ``neg_agent[:len]``; without it only the fastText
    thresholds are fitted. See the module docstring for the rules."""
    pos_agent = np.asarray(pos_agent, dtype=np.float64)
    neg_agent = np.asarray(neg_agent, dtype=np.float64)
    prevalence = resolvable_prevalence(prevalence, len(neg_agent))
    ft_threshold = prevalence_threshold(pos_agent, neg_agent, prevalence)
    pass_threshold = float(np.quantile(neg_agent, 1 - embed_fraction, method="higher"))
    if neg_similarity is None:
        return SelectionRule(mode, ft_threshold, pass_threshold)
    neg_sim = np.asarray(neg_similarity, dtype=np.float64)
    na = neg_agent[: len(neg_sim)]
    neg_ok = ~np.isnan(neg_sim)
    if not neg_ok.any():
        raise ValueError("the combined rule needs held-out negatives with seed similarity")
    neg_logit = logit(na[neg_ok])
    draft = SelectionRule(
        "fasttext_only",
        ft_threshold,
        pass_threshold,
        similarity_weight=similarity_weight,
        agent_mean=float(neg_logit.mean()),
        agent_std=float(max(neg_logit.std(), _EPS)),
        similarity_mean=float(neg_sim[neg_ok].mean()),
        similarity_std=float(max(neg_sim[neg_ok].std(), _EPS)),
    )
    budget = float(np.mean(na[neg_ok] >= ft_threshold))
    combined_threshold = fpr_threshold(draft.combined(na[neg_ok], neg_sim[neg_ok]), budget)
    return SelectionRule.from_dict({**draft.to_dict(), "mode": mode, "combined_threshold": combined_threshold})
