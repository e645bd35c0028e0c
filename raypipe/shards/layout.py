"""Where every selected sequence goes: a seeded global shuffle, then consecutive shards by size.

Why computed on the driver from the mix plan alone: the layout depends only on ``(stream, doc_id,
copy, n_tokens)`` and the seed, never on which worker tokenized what or in which order, so the
shards come out byte-identical on any number of workers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from raypipe.mix import stable_keys


def shard_name(prefix: str, index: int) -> str:
    """The path prefix of one shard, relative to the output (what Megatron's ``--data-path`` takes)."""
    return f"shards/{prefix}_{index:05d}"


def shard_layout(selection: pd.DataFrame, tokens_per_shard: int, seed: int) -> pd.DataFrame:
    """One row per sequence (a document copy): ``stream, doc_id, copy, n_tokens, shard, sequence``.

    Sequences are ordered by ``blake2b(seed, "shuffle", stream, doc_id, copy)`` and dealt into
    shards in that order; a shard closes once it holds ``tokens_per_shard`` tokens, so every shard
    but the last has at least that many and copies of one document land far apart.
    """
    rows = selection.loc[selection.index.repeat(selection["copies"]), ["stream", "doc_id", "n_tokens"]]
    rows = rows.reset_index(drop=True)
    rows["copy"] = rows.groupby(["stream", "doc_id"], sort=False).cumcount().astype(np.int64)
    keys = stable_keys([pd.Series(["shuffle"] * len(rows)), rows["stream"], rows["doc_id"], rows["copy"]], seed)
    ties = (rows["copy"].to_numpy(), rows["doc_id"].to_numpy(dtype=str), rows["stream"].to_numpy(dtype=str))
    order = np.lexsort((*ties, keys))
    rows = rows.iloc[order].reset_index(drop=True)

    shard = np.empty(len(rows), dtype=np.int64)
    sequence = np.empty(len(rows), dtype=np.int64)
    current = position = filled = 0
    for i, n in enumerate(rows["n_tokens"].to_numpy(dtype=np.int64)):
        shard[i], sequence[i] = current, position
        position += 1
        filled += int(n)
        if filled >= tokens_per_shard:
            current, position, filled = current + 1, 0, 0
    rows["shard"] = shard
    rows["sequence"] = sequence
    return rows
