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
    """The threshold maximizing F1 on a class-balanced view of the held-out scores (prevalence 0.5).

    Kept for the balanced figure only: a crawl is nowhere near balanced, see ``prevalence_threshold``.
    """
    return prevalence_threshold(pos_scores, neg_scores, 0.5)


def prevalence_threshold(pos_scores: np.ndarray, neg_scores: np.ndarray, prevalence: float) -> float:
    """The threshold maximizing the F1 expected in a crawl where ``prevalence`` of pages are positives.

    With recall r and false-positive rate f measured on held-out data, a crawl of N pages yields
    TP = r p N, FP = f (1-p) N and FN = (1-r) p N, so F1 = 2 r p / (r p + p + f (1-p)). The held-out
    class sizes are an accident of sampling; the crawl's prevalence is what sets how many false
    positives a point of recall is worth (at 1% a 1.9% FPR alone caps precision near 0.34). Among
    thresholds with the best F1 the midpoint between the best candidate and the next lower score is
    returned, so a page scoring just under a held-out positive still passes.
    """
    pos = np.asarray(pos_scores, dtype=np.float64)
    neg = np.asarray(neg_scores, dtype=np.float64)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("threshold choice needs held-out positives and negatives")
    if not 0 < prevalence < 1:
        raise ValueError(f"prevalence must be in (0, 1), got {prevalence}")
    candidates = np.unique(np.concatenate([pos, neg]))
    recall = (len(pos) - np.searchsorted(np.sort(pos), candidates, side="left")) / len(pos)
    fpr = (len(neg) - np.searchsorted(np.sort(neg), candidates, side="left")) / len(neg)
    f1 = 2 * recall * prevalence / (recall * prevalence + prevalence + fpr * (1 - prevalence))
    best = int(np.argmax(f1))
    lower = candidates[best - 1] if best > 0 else 0.0
    return float((candidates[best] + lower) / 2)


def fpr_threshold(neg_scores: np.ndarray, fpr: float) -> float:
    """The lowest threshold that passes at most ``fpr`` of ``neg_scores``: just above the highest
    negative that must be excluded."""
    neg = np.sort(np.asarray(neg_scores, dtype=np.float64))[::-1]
    if len(neg) == 0:
        raise ValueError("threshold choice needs held-out negatives")
    allowed = int(np.floor(fpr * len(neg) + 1e-9))
    if allowed >= len(neg):
        return float(neg[-1])
    return float(np.nextafter(neg[allowed], np.inf))


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default); (0, 1) with no trials.

    Why Wilson: false positives are rare events counted on a few thousand negatives, where the
    normal approximation gives intervals below zero and a zero count would claim certainty.
    """
    if trials <= 0:
        return 0.0, 1.0
    phat = successes / trials
    denom = 1 + z * z / trials
    centre = (phat + z * z / (2 * trials)) / denom
    half = z * np.sqrt(phat * (1 - phat) / trials + z * z / (4 * trials * trials)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def precision_at(recall: float, fpr: float, prevalence: float) -> float:
    """Precision in a crawl with this prevalence: r p / (r p + fpr (1 - p)); 0 when nothing is selected."""
    tp = recall * prevalence
    fp = fpr * (1 - prevalence)
    return float(tp / (tp + fp)) if tp + fp > 0 else 0.0


def at_prevalence(tp: int, fn: int, fp: int, tn: int, prevalence: float) -> dict[str, float]:
    """Recall, FPR and the precision they imply at ``prevalence``, each with a 95% interval.

    The precision interval propagates the Wilson intervals of recall and FPR: its low end pairs
    the lowest plausible recall with the highest plausible FPR, its high end the reverse.
    """
    n_pos, n_neg = tp + fn, fp + tn
    recall = tp / n_pos if n_pos else 0.0
    fpr = fp / n_neg if n_neg else 0.0
    r_lo, r_hi = wilson_interval(tp, n_pos)
    f_lo, f_hi = wilson_interval(fp, n_neg)
    precision = precision_at(recall, fpr, prevalence)
    return {
        "prevalence": prevalence,
        "precision": round(precision, 4),
        "precision_ci95": [
            round(precision_at(r_lo, f_hi, prevalence), 4),
            round(precision_at(r_hi, f_lo, prevalence), 4),
        ],
        "recall": round(recall, 4),
        "recall_ci95": [round(r_lo, 4), round(r_hi, 4)],
        "fpr": round(fpr, 6),
        "fpr_ci95": [round(f_lo, 6), round(f_hi, 6)],
        "f1": round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0,
        "positives": n_pos,
        "negatives": n_neg,
    }


def recall_threshold(pos_scores: np.ndarray, target: float) -> float:
    """The highest threshold that keeps at least ``target`` of the held-out positives."""
    pos = np.sort(np.asarray(pos_scores, dtype=np.float64))
    if len(pos) == 0:
        raise ValueError("recall threshold needs held-out positives")
    allowed_misses = int(np.floor((1.0 - target) * len(pos) + 1e-9))
    return float(pos[min(allowed_misses, len(pos) - 1)])
