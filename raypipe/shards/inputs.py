"""The shard phase's input rows: every stream brought to one schema, and one generation's pick of it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.mix import Generation
from raypipe.shards.layout import SHARD_KEY, bucket_keys
from raypipe.shards.tokenizer import without_surrogates
from raypipe.streams import DOC_SCHEMA

INPUT_SCHEMA = pa.schema([*DOC_SCHEMA, ("seed_similarity", pa.float64()), ("agent_score", pa.float64())])


def _as_text(value: Any) -> str | None:
    """A string Arrow can hold (UTF-8, so lone surrogates are repaired), or None for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = value if isinstance(value, str) else str(value)
    try:
        text.encode()
    except UnicodeEncodeError:
        return without_surrogates(text)
    return text


class NormalizeStream:
    """Brings one stream's rows to ``INPUT_SCHEMA`` (missing optional columns become nulls), so streams union."""

    def __init__(self, stream: str):
        self.stream = stream

    def __call__(self, batch: pd.DataFrame) -> pa.Table:
        out = pd.DataFrame(index=batch.index)
        for field in INPUT_SCHEMA:
            floating = pa.types.is_floating(field.type)
            if field.name == "stream":
                out["stream"] = self.stream
            elif field.name not in batch:
                out[field.name] = np.nan if floating else None
            elif floating:
                out[field.name] = pd.to_numeric(batch[field.name], errors="coerce")
            else:
                out[field.name] = batch[field.name].map(_as_text)
        return pa.Table.from_pandas(out, schema=INPUT_SCHEMA, preserve_index=False)


def pick(batch: pa.Table, stream: str, generation: int, span: Generation) -> pa.Table:
    """The rows of one generation (``span.lo <= key < span.hi``), each tagged with its shard's bucket key."""
    key = batch.column("key")
    rows = batch.filter(pc.and_(pc.greater_equal(key, span.lo), pc.less(key, span.hi)))
    units = rows.column("unit").to_numpy()
    hashes = rows.column("bucket_hash").to_numpy()
    return rows.append_column(SHARD_KEY, bucket_keys(stream, generation, units, hashes, span.buckets))
