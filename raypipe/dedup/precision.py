"""Precision of near-dedup decisions, checked against the exact Jaccard similarity of shingle sets.

MinHash only estimates similarity and LSH only proposes pairs, so the phase measures what it did:
a deterministic sample of candidate pairs (chosen by a hash of the pair, the same whatever the
number of workers) is compared on the exact word-shingle sets of both texts. A pair is correct
when its exact Jaccard similarity reaches the threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from raypipe.dedup.normalize import normalize_text, words


def shingle_set(text: str, shingle_words: int) -> set[tuple[str, ...]]:
    """The exact word shingles of a text (the MinHash input, before hashing)."""
    toks = words(normalize_text(text))
    k = min(shingle_words, len(toks))
    return {tuple(toks[i : i + k]) for i in range(len(toks) - k + 1)} if toks else set()


def exact_jaccard(a: str, b: str, shingle_words: int) -> float:
    """Jaccard similarity of the shingle sets of two texts."""
    sa, sb = shingle_set(a, shingle_words), shingle_set(b, shingle_words)
    union = len(sa | sb)
    return len(sa & sb) / union if union else 1.0


def pair_hashes(pairs: pd.DataFrame) -> np.ndarray:
    """A stable 64-bit hash of each ``(src, dst)`` row: the sample's order, unrelated to the ids' order."""
    key = pairs["src"].astype(str) + "\x00" + pairs["dst"].astype(str)
    return pd.util.hash_pandas_object(key, index=False).to_numpy(dtype=np.uint64)


def pair_sample_mask(pairs: pd.DataFrame, fraction: float) -> np.ndarray:
    """Deterministic Bernoulli sample of ``(src, dst)`` rows: keep a pair when its hash is small."""
    return pair_hashes(pairs) < np.uint64(min(int(fraction * 2**64), 2**64 - 1))


def precision_report(
    pairs: pd.DataFrame, texts: dict[str, str], threshold: float, shingle_words: int
) -> dict[str, Any]:
    """Compare sampled pairs (``src, dst, est_jaccard, verified``) with their exact Jaccard.

    ``candidates`` covers every LSH candidate; ``kept`` only the pairs that passed verification
    (the ones that merged documents).
    """
    sources, targets = pairs["src"].tolist(), pairs["dst"].tolist()
    exact = np.array([exact_jaccard(texts[s], texts[d], shingle_words) for s, d in zip(sources, targets, strict=True)])
    est = pairs["est_jaccard"].to_numpy(dtype=float)
    verified = pairs["verified"].to_numpy(dtype=bool)

    def part(mask: np.ndarray) -> dict[str, Any]:
        n = int(mask.sum())
        with_est = mask & np.isfinite(est)  # survivor pairs carry no MinHash estimate
        return {
            "pairs": n,
            "precision": round(float((exact[mask] >= threshold).mean()), 4) if n else None,
            "mean_exact_jaccard": round(float(exact[mask].mean()), 4) if n else None,
            "mean_abs_estimate_error": round(float(np.abs(exact[with_est] - est[with_est]).mean()), 4)
            if with_est.any()
            else None,
        }

    return {
        "threshold": threshold,
        "candidates": part(np.ones(len(exact), dtype=bool)),
        "kept": part(verified),
    }
