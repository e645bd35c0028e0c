"""Hash-partitioned group operations on Ray Data, sized by a memory budget.

Why not ``groupby(key).map_groups(fn)`` on the real key: Ray calls ``fn`` once per distinct key, and
dedup keys (text hashes, LSH buckets, graph nodes) are almost all distinct, so the per-call cost
dominates (measured here: 20k groups ~4x slower than one aggregate). Instead every row gets a
partition number (a stable hash of its key modulo ``num_partitions``), Ray's hash shuffle groups
rows by that number (all rows of a key land in one partition, Ray's ``map_groups`` contract), and
``fn`` handles one whole partition with vectorized pandas. The number of partitions is what
bounds memory: one partition is what one worker holds at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pandas as pd
import ray
import ray.data

from raypipe.dedup.normalize import partition_of
from raypipe.stage import LIGHT_TASK_CPUS, cluster_cpus, map_table

PARTITION = "_partition"
# In-memory pandas frames and Arrow shuffle buffers take a few times the raw column bytes.
_WORKING_SET_FACTOR = 4


def partitions_for(size_bytes: int, budget_mb: int, min_partitions: int | None) -> int:
    """Partitions such that one partition's working set fits in ``budget_mb``."""
    floor = min_partitions or max(1, int(cluster_cpus()))
    needed = math.ceil(size_bytes * _WORKING_SET_FACTOR / (budget_mb * 1024 * 1024))
    return max(floor, needed, 1)


def _with_partition(batch: pd.DataFrame, key: str, num_partitions: int) -> pd.DataFrame:
    batch = batch.copy()
    batch[PARTITION] = partition_of(batch[key], num_partitions) if len(batch) else pd.Series(dtype="int64")
    return batch


def _apply(batch: pd.DataFrame, fn: Callable[..., pd.DataFrame], fn_kwargs: dict[str, Any]) -> pd.DataFrame:
    return fn(batch.drop(columns=[PARTITION]), **fn_kwargs)


def partitioned_map(
    ds: ray.data.Dataset,
    key: str,
    fn: Callable[..., pd.DataFrame],
    num_partitions: int,
    fn_kwargs: dict[str, Any] | None = None,
) -> ray.data.Dataset:
    """Apply ``fn`` to whole hash partitions of ``ds`` by ``key``: every row with the same key is in
    the same call. ``fn`` takes and returns a pandas DataFrame."""
    keyed = map_table(ds, _with_partition, batch_format="pandas", key=key, num_partitions=num_partitions)
    return keyed.groupby(PARTITION, num_partitions=num_partitions).map_groups(
        _apply, fn_kwargs={"fn": fn, "fn_kwargs": fn_kwargs or {}}, batch_format="pandas", num_cpus=LIGHT_TASK_CPUS
    )
