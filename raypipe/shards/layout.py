"""Which shard a selected document goes to, and what the shard is called.

Why buckets by hash and names by content: a document's bucket depends only on its identity and
on bucket counts the driver derives from per-stream totals, so a shard's documents are the same
whatever worker read or tokenized them, in whatever order; and a shard named by the hash of its
documents' ids is the same file when a retried or resumed task writes it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

SHARD_KEY = "shard_key"


def bucket_keys(
    stream: str, generation: int, units: np.ndarray, bucket_hash: np.ndarray, buckets: dict[int, int]
) -> pa.Array:
    """``<stream>/<generation>/<unit>/<bucket>`` per document: the group one shard is written from.

    Documents of one weight factor (``unit``) share shards, so a shard's blend weight can carry
    the factor; ``bucket_hash`` (uniform in [0, 1)) deals them evenly into that unit's buckets.
    """
    counts = np.array([buckets.get(int(u), 1) for u in units], dtype=np.int64)
    index = np.minimum((bucket_hash * counts).astype(np.int64), counts - 1)
    return pa.array([f"{stream}/{generation}/{u}/{b}" for u, b in zip(units.tolist(), index.tolist(), strict=True)])


def shard_name(prefix: str, stream: str, doc_ids: Sequence[str]) -> str:
    """``shards/<stream>/<prefix>_<hash of the sorted doc ids>``: the path prefix Megatron's ``--data-path`` takes."""
    digest = hashlib.blake2b("\n".join(sorted(doc_ids)).encode(), digest_size=8).hexdigest()
    return f"shards/{stream}/{prefix}_{digest}"


def documents_key(path: str) -> str:
    """Where a shard's document index goes: ``documents/<stream>/<name>.parquet``."""
    return "documents/" + path.removeprefix("shards/") + ".parquet"
