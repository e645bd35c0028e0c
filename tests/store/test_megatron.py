"""The Megatron writer against megatron-core's own reader and builder, and the shard validator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder

from raypipe.config import StorageConfig
from raypipe.store.megatron import (
    ShardError,
    index_bytes,
    parse_index,
    token_dtype,
    validate_shard,
    write_shard,
)
from raypipe.store.storage import OutputStore

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def sequences(vocab: int, n: int = 50, seed: int = 7) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, size=int(rng.integers(1, 400)), dtype=np.int64).astype(np.int32) for _ in range(n)]


@pytest.mark.parametrize(("vocab", "dtype"), [(50_257, np.uint16), (65_499, np.uint16), (128_256, np.int32)])
def test_megatron_reads_back_every_token_and_our_bytes_equal_its_builder(tmp_path, vocab, dtype):
    assert token_dtype(vocab) == np.dtype(dtype)
    seqs = sequences(vocab)
    store = OutputStore(str(tmp_path / "out"), StorageConfig())
    files = write_shard(store, "shards/part_00000", seqs, token_dtype(vocab), chunk_bytes=1000)
    prefix = str(tmp_path / "out" / "shards" / "part_00000")

    ds = IndexedDataset(prefix)
    assert len(ds) == len(seqs) == files.documents
    assert ds.index.dtype == dtype
    assert len(ds.document_indices) == len(seqs) + 1
    for i, seq in enumerate(seqs):
        assert np.array_equal(ds[i], seq)
    assert files.tokens == sum(len(s) for s in seqs) == int(ds.sequence_lengths.sum())

    builder = IndexedDatasetBuilder(str(tmp_path / "ref.bin"), dtype=dtype)
    for seq in seqs:
        builder.add_document(torch.from_numpy(seq.astype(np.int64)), [len(seq)])
    builder.finalize(str(tmp_path / "ref.idx"))
    assert (tmp_path / "ref.bin").read_bytes() == (tmp_path / "out" / "shards" / "part_00000.bin").read_bytes()
    assert (tmp_path / "ref.idx").read_bytes() == (tmp_path / "out" / "shards" / "part_00000.idx").read_bytes()
    assert not store.list("_tmp")


def test_validator_catches_a_truncated_bin_and_wrong_counts(tmp_path):
    seqs = sequences(128_256, n=10)
    store = OutputStore(str(tmp_path), StorageConfig())
    files = write_shard(store, "shards/s", seqs, np.dtype(np.int32))
    lengths = np.array([len(s) for s in seqs])
    validate_shard(store, files, np.dtype(np.int32), lengths)

    with pytest.raises(ShardError, match="planned token counts"):
        validate_shard(store, files, np.dtype(np.int32), lengths + 1)
    with pytest.raises(ShardError, match="index dtype int32, expected uint16"):
        validate_shard(store, files, np.dtype(np.uint16), lengths)
    bin_path = tmp_path / "shards" / "s.bin"
    bin_path.write_bytes(bin_path.read_bytes()[:-4])
    with pytest.raises(ShardError, match=r"s\.bin is \d+ bytes, the index says"):
        validate_shard(store, files, np.dtype(np.int32), lengths)


def test_index_parser_refuses_corrupt_indexes():
    good = index_bytes(np.array([3, 1, 4]), np.dtype(np.uint16))
    info = parse_index(good)
    assert info.lengths.tolist() == [3, 1, 4] and info.pointers.tolist() == [0, 6, 8]
    with pytest.raises(ShardError, match="counts say"):
        parse_index(good[:-8])
    with pytest.raises(ShardError, match="MMIDIDX"):
        parse_index(b"NOTANIDX!" + good[9:])


def test_ids_that_do_not_fit_the_dtype_are_refused(tmp_path):
    store = OutputStore(str(tmp_path), StorageConfig())
    with pytest.raises(ShardError, match="does not fit uint16"):
        write_shard(store, "shards/x", [np.array([1, 70_000], dtype=np.int32)], np.dtype(np.uint16))
    with pytest.raises(ShardError, match="empty shard"):
        write_shard(store, "shards/x", [], np.dtype(np.uint16))
    assert not store.list("shards")
