"""Picking thresholds from scores the run computed itself, never from hand-tuned constants.

Every function takes positive and negative scores of held-out data and returns a threshold with a
stated rule; "selected" always means ``score >= threshold``.
"""

from __future__ import annotations

import numpy as np


def prf(pos_scores: np.ndarray, neg_scores: np.ndarray, threshold: float, neg_weight: float = 1.0) -> dict[str, float]:
    """Precision, recall and F1 of ``score >= threshold``; negatives may carry a weight."""
    tp = float(np.sum(np.asarray(pos_scores) >= threshold))
    fp = float(np.sum(np.asarray(neg_scores) >= threshold)) * neg_weight
    fn = len(pos_scores) - tp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def balanced_weight(n_pos: int, n_neg: int) -> float:
    """Weight per negative that gives both classes the same total weight."""
    return n_pos / n_neg if n_neg else 1.0


def f1_threshold(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """The threshold maximizing F1 on a class-balanced view of the held-out scores.

    Balanced because the held-out class ratio is an accident of sample sizes, not the crawl's.
    Among thresholds with the best F1 the midpoint between the best candidate and the next
    lower score is returned, so a page scoring just under a held-out positive still passes.
    """
    pos = np.asarray(pos_scores, dtype=np.float64)
    neg = np.asarray(neg_scores, dtype=np.float64)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("threshold choice needs held-out positives and negatives")
    weight = balanced_weight(len(pos), len(neg))
    candidates = np.unique(np.concatenate([pos, neg]))
    pos_sorted, neg_sorted = np.sort(pos), np.sort(neg)
    tp = len(pos) - np.searchsorted(pos_sorted, candidates, side="left")
    fp = (len(neg) - np.searchsorted(neg_sorted, candidates, side="left")) * weight
    f1 = 2 * tp / (2 * tp + fp + (len(pos) - tp))
    best = int(np.argmax(f1))
    lower = candidates[best - 1] if best > 0 else 0.0
    return float((candidates[best] + lower) / 2)


def recall_threshold(pos_scores: np.ndarray, target: float) -> float:
    """The highest threshold that keeps at least ``target`` of the held-out positives."""
    pos = np.sort(np.asarray(pos_scores, dtype=np.float64))
    if len(pos) == 0:
        raise ValueError("recall threshold needs held-out positives")
    allowed_misses = int(np.floor((1.0 - target) * len(pos) + 1e-9))
    return float(pos[min(allowed_misses, len(pos) - 1)])
