"""MinHash LSH: band buckets grouped by a distributed shuffle, turned into candidate edges.

Two documents become a candidate pair when all ``rows`` MinHash values of at least one of the
``bands`` bands agree. For Jaccard similarity ``s`` that happens with probability
``1 - (1 - s**rows)**bands`` (the S-curve). The default 42 bands x 6 rows (of 256 permutations)
puts nearly every pair at the 0.7 threshold in a shared bucket:

======  =====  =====  =====  =====  =====  =====
s        0.3    0.5    0.6    0.7    0.75   0.8
P(pair)  0.03   0.48   0.87   0.995  1.00   1.00
======  =====  =====  =====  =====  =====  =====

Why 0.7 and 256 permutations: FineWeb aims its MinHash at 0.75 similarity, and copies of a page
with a few percent of words changed sit at 5-gram Jaccard 0.70-0.80; the old 0.8 threshold kept
them (a cluster kept two members). Every candidate is verified: its Jaccard similarity is
estimated from the two sketches (here, 256 values: standard error about 0.03 at 0.7), and a pair
whose estimate is within ``verify_margin`` of ``threshold`` is decided by the exact Jaccard of the
two shingle sets instead (:mod:`raypipe.dedup.verify`), which removes the false candidates the
recall-leaning curve lets in without the estimate's errors on either side of the threshold.
``bench/dedup.py`` measures recall on pairs at exact Jaccard 0.70-0.80 and precision.

Each bucket is a star: every member is paired with the bucket's smallest rank key (not all
pairs), so a bucket of ``m`` documents yields ``m - 1`` edges and connectivity is kept.
Documents with identical text share every bucket; only the exact-dedup survivor of each text (the
smallest rank key, :mod:`raypipe.dedup.survivor`) takes part (the others are exact duplicates,
labelled by :mod:`raypipe.dedup.exact`). Edges name both ends by ``doc_id`` (``src``, ``dst``) and by
rank key (``src_rank``, ``dst_rank``): the connected components run on rank keys, so each
component's smallest node is its survivor under the rule.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import ray.data

from raypipe.dedup.minhash import estimated_jaccard
from raypipe.dedup.shuffle import partitioned_map
from raypipe.dedup.survivor import order_column
from raypipe.stage import map_table


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """Probability that two documents of this Jaccard similarity share at least one bucket."""
    return 1.0 - (1.0 - similarity**rows) ** bands


def bucket_rows(batch: pd.DataFrame) -> pd.DataFrame:
    """One row per (document, band bucket): ``bucket, doc_id, rank_key, text_hash, minhash_sketch``
    (``rank_key`` is the ``doc_id`` where the rows carry none)."""
    counts = batch["lsh_buckets"].map(len).to_numpy()
    if counts.sum() == 0:
        empty = {"bucket": np.empty(0, np.uint64), "doc_id": [], "rank_key": [], "text_hash": [], "minhash_sketch": []}
        return pd.DataFrame(empty)
    buckets = np.concatenate([np.asarray(b, dtype=np.uint64) for b in batch["lsh_buckets"] if len(b)])
    take = np.repeat(np.arange(len(batch)), counts)
    return pd.DataFrame(
        {
            "bucket": buckets,
            "doc_id": batch["doc_id"].to_numpy()[take],
            "rank_key": batch[order_column(batch)].to_numpy()[take],
            "text_hash": batch["text_hash"].to_numpy()[take],
            "minhash_sketch": batch["minhash_sketch"].to_numpy()[take],
        }
    )


def distinct_edges(batch: pd.DataFrame) -> pd.DataFrame:
    """One row per (src, dst); copies from different bands are identical (same sketches)."""
    return batch.sort_values(["src", "dst"], kind="stable").drop_duplicates(["src", "dst"]).reset_index(drop=True)


def bucket_edges(batch: pd.DataFrame, threshold: float, verify: bool, collapse_exact: bool) -> pd.DataFrame:
    """Star edges (member -> member of smallest rank key) of every bucket with two or more members.

    With ``collapse_exact``, only the exact-dedup survivor of each text is a member (the others are
    labelled by exact dedup); without it, exact copies become near duplicates too.
    """
    nodes = batch if "rank_key" in batch.columns else batch.assign(rank_key=batch["doc_id"])
    if collapse_exact:
        nodes = nodes.sort_values(["bucket", "text_hash", "rank_key"], kind="stable")
        nodes = nodes.drop_duplicates(["bucket", "text_hash"], keep="first")
    nodes = nodes.sort_values(["bucket", "rank_key"], kind="stable").reset_index(drop=True)
    rank = nodes.groupby("bucket", sort=False).cumcount().to_numpy()
    src_idx = np.nonzero(rank > 0)[0]  # every member but the smallest of its bucket
    if not len(src_idx):
        return pd.DataFrame(
            {
                **{c: [] for c in ("src", "dst", "src_rank", "dst_rank")},
                "est_jaccard": np.empty(0),
                "verified": np.empty(0, bool),
            }
        )
    dst_idx = src_idx - rank[src_idx]  # position of the bucket's smallest member
    sk = np.frombuffer(b"".join(nodes["minhash_sketch"]), dtype=np.uint8).reshape(len(nodes), -1)
    est = estimated_jaccard(sk[src_idx], sk[dst_idx])
    edges = pd.DataFrame(
        {
            "src": nodes["doc_id"].to_numpy()[src_idx],
            "dst": nodes["doc_id"].to_numpy()[dst_idx],
            "src_rank": nodes["rank_key"].to_numpy()[src_idx],
            "dst_rank": nodes["rank_key"].to_numpy()[dst_idx],
            "est_jaccard": est,
            "verified": est >= threshold if verify else np.ones(len(src_idx), dtype=bool),
        }
    )
    return edges.drop_duplicates(["src", "dst"]).reset_index(drop=True)


def candidate_edges(
    fingerprints: ray.data.Dataset, threshold: float, verify: bool, num_partitions: int, collapse_exact: bool = True
) -> ray.data.Dataset:
    """Candidate pairs ``(src, dst, src_rank, dst_rank, est_jaccard, verified)`` of ``(doc_id,
    text_hash, lsh_buckets, minhash_sketch[, rank_key])`` rows; ``src`` is paired with ``dst``, its
    bucket's member of smallest rank key."""
    rows = map_table(fingerprints, bucket_rows, batch_format="pandas")
    kwargs = {"threshold": threshold, "verify": verify, "collapse_exact": collapse_exact}
    edges = partitioned_map(rows, "bucket", bucket_edges, num_partitions, fn_kwargs=kwargs).materialize()
    if not edges.count():
        # No candidate at all: a shuffle of nothing fails in Ray's hash-shuffle reduce (its empty
        # blocks carry no _partition column), so there is nothing to regroup.
        return edges
    # A pair met in several bands whose buckets fell in different partitions comes out once per
    # partition: regroup by src so that every pair is counted (and sampled) once on any cluster size.
    return partitioned_map(edges, "src", distinct_edges, num_partitions)
