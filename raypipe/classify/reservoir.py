"""A bounded, uniform random sample of extracted pages: the classifier's negatives.

Why bottom-k by hash instead of the textbook reservoir (Algorithm R): Algorithm R's sample depends
on the order rows arrive in, and a Ray Data stream arrives in a different order on every run and
every cluster size. Giving each page a priority from a keyed hash of its identity and keeping the k
smallest is the same uniform sample without replacement, but it is a pure function of the set of
pages: partial samples taken on any number of workers merge into exactly the sample a single pass
would take, so reruns train the same model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from raypipe.stage import map_table

PRIORITY = "_sample_priority"


def hash_priority(keys: Iterable[str], seed: int) -> np.ndarray:
    """A uniform 64-bit priority per key, stable across processes, Python versions and runs."""
    salt = str(seed).encode() + b"\x00"
    return np.array(
        [int.from_bytes(hashlib.blake2b(salt + str(k).encode(), digest_size=8).digest(), "big") for k in keys],
        dtype=np.uint64,
    )


class ReservoirSampler:
    """Keeps the ``k`` pages with the smallest hash priority among everything it is shown.

    Use it three ways: ``add`` batches on one process; as a Ray Data ``map_batches`` function
    (``__call__`` returns only a batch's own k best rows) whose outputs one process then ``add``s
    (``sample_blocks`` and ``merge_sample``); or ``merge`` samplers filled on different workers.
    """

    def __init__(self, k: int, seed: int, key_column: str = "url", columns: Sequence[str] = ("url", "text")):
        if k <= 0:
            raise ValueError("reservoir size k must be positive")
        self.k = k
        self.seed = seed
        self.key_column = key_column
        self.columns = list(dict.fromkeys([key_column, *columns]))
        self._rows = pd.DataFrame({c: pd.Series(dtype=object) for c in self.columns}).assign(
            **{PRIORITY: pd.Series(dtype=np.uint64)}
        )
        self.seen = 0

    def _prioritized(self, batch: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in self.columns if c not in batch.columns]
        if missing:
            raise KeyError(f"reservoir sample needs columns {missing}, batch has {list(batch.columns)}")
        out = batch[self.columns].copy()
        out[PRIORITY] = batch[PRIORITY] if PRIORITY in batch else hash_priority(batch[self.key_column], self.seed)
        return out

    def _bottom_k(self, frame: pd.DataFrame) -> pd.DataFrame:
        # Rows sharing a key (one URL in two input files, with different text) are ordered by every
        # column before one is kept: keeping the first to arrive would make the sample, and so the
        # model, depend on the order the stream happened to deliver them in.
        order = [PRIORITY, self.key_column, *(c for c in self.columns if c != self.key_column)]
        frame = frame.sort_values(order, kind="stable", na_position="last").drop_duplicates(subset=[self.key_column])
        return frame.head(self.k).reset_index(drop=True)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        """Ray Data map function: this batch's candidates for the sample (at most k rows)."""
        return self._bottom_k(self._prioritized(batch))

    def add(self, batch: pd.DataFrame) -> None:
        if batch.empty:
            return
        self.seen += len(batch)
        self._rows = self._bottom_k(pd.concat([self._rows, self._prioritized(batch)], ignore_index=True))

    def merge(self, other: ReservoirSampler) -> None:
        if (other.k, other.seed, other.key_column) != (self.k, self.seed, self.key_column):
            raise ValueError("only samplers with the same k, seed and key can be merged")
        self.seen += other.seen
        self._rows = self._bottom_k(pd.concat([self._rows, other._rows], ignore_index=True))

    def sample(self) -> pd.DataFrame:
        """The current sample, in priority order (a random order, the same on every run)."""
        return self._rows.drop(columns=[PRIORITY]).reset_index(drop=True)


def kept_pages(batch: pd.DataFrame) -> pd.DataFrame:
    """Pages the classifier will actually be asked about: not already dropped upstream."""
    if "drop_reason" in batch.columns:
        batch = batch[batch["drop_reason"].isna()]
    return batch[batch["text"].fillna("").str.strip().str.len() > 0]


@dataclass
class SampleBlocks:
    """The candidates of a bounded sample, left on the workers as Arrow blocks.

    ``refs``: object references of the blocks (every page that may belong to the sample; their
    total is bounded when ``cutoff`` is set). Whoever needs the sample (the training task, on a
    worker) merges them with ``merge_sample``; the driver only passes the references on.
    """

    refs: list[Any]
    k: int
    seed: int
    key_column: str
    columns: list[str]
    cutoff: int | None


def sample_blocks(
    ds: Any,
    k: int,
    seed: int,
    key_column: str = "url",
    columns: Sequence[str] = ("url", "text"),
    population: int | None = None,
) -> SampleBlocks:
    """Draw the candidates of a bounded random sample of the kept pages of a Ray dataset.

    Each batch is cut to its own k best rows on the workers. With ``population`` (how many kept
    pages there are, known from the extraction funnel), workers also drop every row whose priority
    lies above a cutoff that about ``k + 6 sqrt(k)`` of the population pass: the candidates are then
    bounded in total, not per batch, and the sample is the same, since the k smallest priorities
    lie below the cutoff (were fewer than k to pass, an astronomically rare event, ``merge_sample``
    says so and the caller draws again without ``population``). Nothing reaches the driver but
    block references.
    """
    cutoff = None
    expected = k + 6 * k**0.5 + 10
    if population and population > expected:
        # A cutoff only where it drops rows: at a share of 1.0 the float product rounds up to 2**64,
        # which no uint64 holds (populations between k and ``expected`` used to fail here).
        cutoff = min(int(expected / population * np.iinfo(np.uint64).max), int(np.iinfo(np.uint64).max))
    sampler = ReservoirSampler(k, seed, key_column, columns)

    def local(batch: pd.DataFrame) -> pd.DataFrame:
        rows = kept_pages(batch)
        if cutoff is not None:
            priority = hash_priority(rows[key_column], seed)
            rows = rows[priority <= np.uint64(cutoff)].assign(**{PRIORITY: priority[priority <= np.uint64(cutoff)]})
        return sampler(rows)

    refs = map_table(ds, local, batch_format="pandas").to_arrow_refs()
    return SampleBlocks(refs, k, seed, key_column, sampler.columns, cutoff)


def merge_sample(blocks: SampleBlocks) -> pd.DataFrame | None:
    """The sample of ``sample_blocks``'s candidates (fetched from the object store, so run it where
    the sample is used); None when a cutoff let fewer than k distinct pages through."""
    import ray

    sampler = ReservoirSampler(blocks.k, blocks.seed, blocks.key_column, blocks.columns)
    for table in ray.get(list(blocks.refs)):
        if table.num_rows:
            frame = table.to_pandas()
            sampler.add(frame.astype({PRIORITY: np.uint64}) if PRIORITY in frame else frame)
    sample = sampler.sample()
    if blocks.cutoff is not None and len(sample) < blocks.k:
        return None
    return sample
