"""One training round end to end: data, fastText, thresholds, held-out metrics, persistence.

The held-out precision/recall/F1 stored with the model are cross-fitted: the held-out data is cut
in two halves by hash, the rule is fitted on one half and measured on the other, both ways, and
the counts are pooled. Measuring on the data the thresholds were fitted on would flatter them.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from raypipe.classify.model import METRICS_FILE, agent_proba, load_model, read_uri, save_model, train_fasttext
from raypipe.classify.pages import seeds_as_pages
from raypipe.classify.rule import SelectionRule, fit_rule
from raypipe.classify.thresholds import at_prevalence
from raypipe.classify.train import (
    bucket,
    cap_per_source,
    documentation_sites,
    held_out_seeds,
    round_data,
    seed_group,
    similarity_labels,
)
from raypipe.config import ClassifyConfig, StorageConfig
from raypipe.store.storage import OutputStore

log = logging.getLogger(__name__)
REPORTED_PREVALENCES = (0.01, 0.001)  # besides the configured one: a general crawl and a rarer topic
# (texts, group of each text or None) -> seed_similarity per text, seeds of that group ignored
SimilarityFn = Callable[[Sequence[str], Sequence[str | None]], np.ndarray]


@dataclass
class TrainedClassifier:
    model: Any
    rule: SelectionRule
    metrics: dict[str, Any]


def _scored_frame(agent: np.ndarray, sim: np.ndarray | None) -> pd.DataFrame:
    frame = pd.DataFrame({"agent_score": agent})
    frame["seed_similarity"] = np.nan if sim is None else sim
    return frame


def selection_counts(rule: SelectionRule, pos: pd.DataFrame, neg: pd.DataFrame) -> dict[str, int]:
    tp = int(rule.apply(pos)["selected"].sum())
    fp = int(rule.apply(neg)["selected"].sum())
    return {"tp": tp, "fp": fp, "fn": len(pos) - tp, "tn": len(neg) - fp}


def prevalence_figures(c: dict[str, int], prevalences: Sequence[float]) -> dict[str, dict[str, float]]:
    """``at_prevalence`` of held-out counts, keyed ``"p=0.01"``: the headline figures of a round."""
    return {f"p={p:g}": at_prevalence(c["tp"], c["fn"], c["fp"], c["tn"], p) for p in sorted(set(prevalences))}


def prf_from_counts(c: dict[str, int]) -> dict[str, float]:
    precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 0.0
    recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4), **c}


def cross_fitted(
    fit: Callable[[np.ndarray, np.ndarray], SelectionRule], pos: pd.DataFrame, neg: pd.DataFrame, seed: int
) -> dict[str, float]:
    """P/R/F1 of rules fitted on one half of the held-out data and applied to the other half."""
    pos_half = np.array([bucket(str(i), f"xfit{seed}") < 0.5 for i in range(len(pos))])
    neg_half = np.array([bucket(str(i), f"xfit{seed}n") < 0.5 for i in range(len(neg))])
    total = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for side in (True, False):
        rule = fit(pos_half == side, neg_half == side)
        counts = selection_counts(rule, pos[pos_half != side], neg[neg_half != side])
        total = {k: total[k] + counts[k] for k in total}
    return prf_from_counts(total)


def train_classifier(
    seeds: pd.DataFrame,
    pages: pd.DataFrame,
    cfg: ClassifyConfig,
    seed: int,
    extra_positives: pd.DataFrame | None = None,
    similarity: SimilarityFn | None = None,
) -> TrainedClassifier:
    """Train one round and fit its selection rule.

    ``seeds``: id, text, source (the seed table). ``pages``: url, text (the bounded sample of the
    crawl's extracted pages). ``extra_positives``: url, text (pages an earlier round selected).
    ``similarity`` is required by the ``cascade`` and ``embed_all`` modes (see
    ``calibrate.CalibrationSimilarity``); with it, sampled pages are first labelled by their seed
    similarity (``train.similarity_labels``) so agent pages in the sample do not become negatives.
    """
    embedding = cfg.mode != "fasttext_only"
    if embedding and similarity is None:
        raise ValueError(f"classify.mode={cfg.mode} needs seed similarity for calibration: pass a seed index")
    pages = pages[["url", "text"]].drop_duplicates("url").reset_index(drop=True)
    extra = extra_positives if extra_positives is not None else pd.DataFrame(columns=["url", "text"])
    seed_held = held_out_seeds(seeds, cfg.holdout_fraction, seed)
    held = seeds.loc[seed_held, ["id", "text", "source"]]
    per_source = math.ceil(cfg.calibration_size / max(1, held["source"].nunique()))
    cal_pos = cap_per_source(held, per_source, seed).reset_index(drop=True)
    groups = [seed_group(t, s) for t, s in zip(cal_pos["text"], cal_pos["source"], strict=True)]
    if cfg.seed_pages:
        seeds = seeds.assign(text=seeds_as_pages(seeds["text"].tolist()))
        cal_pos = cal_pos.assign(text=seeds_as_pages(cal_pos["text"].tolist()))
    pos_sim = page_sim = None
    labels = np.zeros(len(pages), dtype=np.int8)
    if embedding:
        pos_sim = similarity(cal_pos["text"].tolist(), groups)
        page_sim = similarity(pages["text"].tolist(), [None] * len(pages))
        sites = documentation_sites(pages["url"].tolist(), pages["text"].tolist(), page_sim, cfg)
        labels = similarity_labels(page_sim, pos_sim, cfg, sites)
        extra = pd.concat([extra, pages.loc[labels == 1, ["url", "text"]]], ignore_index=True)
    data = round_data(seeds, seed_held, pages[labels == 0], cfg, seed, extra)
    model, lr_used = train_fasttext(data.train_pos, data.train_neg, cfg, seed)
    cal_neg = data.cal_neg.assign(_b=[bucket(u, f"cal{seed}") for u in data.cal_neg["url"]])
    cal_neg = cal_neg.sort_values("_b").drop(columns="_b").reset_index(drop=True)
    pos_agent = agent_proba(model, cal_pos["text"].tolist(), cfg.max_tokens)
    neg_agent = agent_proba(model, cal_neg["text"].tolist(), cfg.max_tokens)
    neg_sim = None
    if page_sim is not None:
        neg_sim = cal_neg["url"].map(dict(zip(pages["url"], page_sim, strict=True))).to_numpy(dtype=np.float64)
    knobs = (cfg.embed_fraction, cfg.similarity_weight, cfg.prevalence)
    rule = fit_rule(cfg.mode, pos_agent, neg_agent, *knobs, neg_similarity=neg_sim)
    ft_rule = fit_rule("fasttext_only", pos_agent, neg_agent, *knobs)

    def fit_on(mode: str) -> Callable[[np.ndarray, np.ndarray], SelectionRule]:
        def fit(pm: np.ndarray, nm: np.ndarray) -> SelectionRule:
            if mode == "fasttext_only":
                return fit_rule(mode, pos_agent[pm], neg_agent[nm], *knobs)
            return fit_rule(mode, pos_agent[pm], neg_agent[nm], *knobs, neg_similarity=neg_sim[nm])

        return fit

    held_out = {}
    prevalences = (cfg.prevalence, *REPORTED_PREVALENCES)
    for mode in ("fasttext_only", "embed_all", "cascade") if embedding else ("fasttext_only",):
        counts = cross_fitted(fit_on(mode), _scored_frame(pos_agent, pos_sim), _scored_frame(neg_agent, neg_sim), seed)
        held_out[mode] = {"at_prevalence": prevalence_figures(counts, prevalences), "balanced": counts}
    counts = {
        **data.counts,
        "sampled_pages": len(pages),
        "sampled_pages_retrieved_as_positives": int((labels == 1).sum()),
        "sampled_pages_not_used_as_negatives": int((labels == -1).sum()),
        "calibration_positives": len(cal_pos),
        "calibration_negatives": len(cal_neg),
    }
    metrics = {
        "config": cfg.model_dump(mode="json"),
        "seed": seed,
        "fasttext_lr_used": lr_used,
        "counts": counts,
        "calibration_positives_by_source": cal_pos["source"].value_counts().sort_index().to_dict(),
        "rule": rule.to_dict(),
        "fasttext_only_rule": ft_rule.to_dict(),
        "held_out": held_out,
        "held_out_method": "2-fold cross-fit over held-out seed groups rendered as pages (positives) and held-out "
        "sampled pages (negatives): thresholds fitted for classify.prevalence on one half, counted on the other. "
        "at_prevalence: precision implied at each prevalence, 95% interval from Wilson intervals of recall and FPR; "
        "balanced: the counts and the F1 of a 1:1 view (not what a crawl sees)",
    }
    s = held_out[cfg.mode]["at_prevalence"][f"p={cfg.prevalence:g}"]
    print(
        f"classifier ({cfg.mode}) held-out at prevalence {cfg.prevalence:g}: precision={s['precision']:.4f} "
        f"{s['precision_ci95']} recall={s['recall']:.4f} fpr={s['fpr']:.5f} "
        f"(positives {s['positives']}, negatives {s['negatives']})",
        flush=True,
    )
    return TrainedClassifier(model, rule, metrics)


def round_folder(round_number: int) -> str:
    return f"classifier/round-{round_number}"


def save_classifier(trained: TrainedClassifier, store: OutputStore, round_number: int) -> str:
    """``classifier/round-<k>/model.bin`` + ``metrics.json`` (with the rule); returns the model URI."""
    return save_model(trained.model, {**trained.metrics, "round": round_number}, store, round_folder(round_number))


def load_classifier(model_uri: str, storage_cfg: StorageConfig) -> TrainedClassifier:
    model, metrics = load_model(model_uri, storage_cfg)
    return TrainedClassifier(model, SelectionRule.from_dict(metrics["rule"]), metrics)


def load_rule(model_uri: str, storage_cfg: StorageConfig) -> SelectionRule:
    """Just the fitted rule, from the metrics.json next to a model (no model bytes are read)."""
    folder = model_uri.rsplit("/", 1)[0]
    return SelectionRule.from_dict(json.loads(read_uri(f"{folder}/{METRICS_FILE}", storage_cfg))["rule"])
