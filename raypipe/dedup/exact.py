"""Global exact dedup: documents whose normalized text is identical (see :mod:`raypipe.dedup.normalize`).

The key is the 128-bit ``text_hash`` of the normalized text. Rows are hash-partitioned by that key
across the cluster (every copy of a text meets in one partition, whatever file or worker it came
from); in each group the smallest ``doc_id`` survives, so the survivor depends only on the data,
never on the order rows arrive in or on the number of workers.
"""

from __future__ import annotations

import pandas as pd
import ray.data

from raypipe.dedup.shuffle import partitioned_map
from raypipe.dedup.survivor import order_column

LABEL_COLUMNS = ["doc_id", "duplicate_of"]


def exact_duplicates_in_partition(batch: pd.DataFrame) -> pd.DataFrame:
    """``(doc_id, duplicate_of)`` for every row of ``(doc_id, text_hash[, rank_key])`` that is not
    its group's survivor."""
    if batch.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in LABEL_COLUMNS})
    ordered = batch.sort_values(["text_hash", order_column(batch)], kind="stable")
    survivor = ordered.groupby("text_hash", sort=False)["doc_id"].transform("first")
    dup = ordered["doc_id"] != survivor
    return pd.DataFrame({"doc_id": ordered["doc_id"][dup].to_numpy(), "duplicate_of": survivor[dup].to_numpy()})


def exact_duplicates(keys: ray.data.Dataset, num_partitions: int) -> ray.data.Dataset:
    """Exact-duplicate labels of a dataset of ``(doc_id, text_hash[, rank_key])`` rows (survivors are not listed)."""
    return partitioned_map(keys, "text_hash", exact_duplicates_in_partition, num_partitions)
