"""Megatron-LM indexed datasets (``.bin`` + ``.idx``), written atomically and checked before use.

The format, as megatron-core 0.16.1's ``IndexedDataset`` reads it (little-endian throughout):

- ``.bin``: the token ids of every sequence, back to back, in the index's dtype.
- ``.idx``: ``b"MMIDIDX\\x00\\x00"``, version ``u64 = 1``, dtype code ``u8`` (4 = int32, 8 = uint16),
  sequence count ``u64``, document count ``u64``, then ``int32[sequences]`` lengths,
  ``int64[sequences]`` byte offsets into the ``.bin``, and ``int64[documents]`` document
  boundaries (sequence indices, starting at 0 and ending at the sequence count).

We write one document per sequence, so the boundaries are ``0, 1, ..., n``. Token ids are stored
in the smallest dtype Megatron's own rule allows: uint16 when the vocabulary is below 65,500.
"""

from __future__ import annotations

import hashlib
import os
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from raypipe.store.storage import OutputStore, StorageError

INDEX_HEADER = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
DTYPE_CODES = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4}
_FIXED = struct.Struct("<9sQBQQ")


class ShardError(ValueError):
    """A shard on storage does not match what was written into it; the message says how."""


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits below Megatron's 65,500 threshold, else int32."""
    return np.dtype(np.uint16) if vocab_size < 65_500 else np.dtype(np.int32)


def index_bytes(lengths: np.ndarray, dtype: np.dtype) -> bytes:
    """The ``.idx`` file for sequences of ``lengths`` tokens, one document each."""
    lengths = np.asarray(lengths, dtype=np.int64)
    count = len(lengths)
    pointers = np.zeros(count, dtype=np.int64)
    np.cumsum(lengths[:-1] * dtype.itemsize, out=pointers[1:])
    return b"".join(
        [
            _FIXED.pack(INDEX_HEADER, INDEX_VERSION, DTYPE_CODES[dtype], count, count + 1),
            lengths.astype("<i4").tobytes(),
            pointers.astype("<i8").tobytes(),
            np.arange(count + 1, dtype="<i8").tobytes(),
        ]
    )


@dataclass
class IndexInfo:
    dtype: np.dtype
    lengths: np.ndarray
    pointers: np.ndarray
    document_indices: np.ndarray


def parse_index(data: bytes) -> IndexInfo:
    """Read an ``.idx`` file, refusing anything Megatron would misread."""
    if len(data) < _FIXED.size:
        raise ShardError(f"index is {len(data)} bytes, shorter than its header")
    header, version, code, sequences, documents = _FIXED.unpack_from(data)
    if header != INDEX_HEADER or version != INDEX_VERSION:
        raise ShardError("index header or version is not Megatron's MMIDIDX v1")
    dtypes = {c: d for d, c in DTYPE_CODES.items()}
    if code not in dtypes:
        raise ShardError(f"index dtype code {code} is not one we write")
    expected = _FIXED.size + sequences * (4 + 8) + documents * 8
    if len(data) != expected:
        raise ShardError(f"index is {len(data)} bytes, its counts say {expected}")
    offset = _FIXED.size
    lengths = np.frombuffer(data, dtype="<i4", count=sequences, offset=offset)
    pointers = np.frombuffer(data, dtype="<i8", count=sequences, offset=offset + 4 * sequences)
    doc_idx = np.frombuffer(data, dtype="<i8", count=documents, offset=offset + 12 * sequences)
    return IndexInfo(dtypes[code], lengths, pointers, doc_idx)


@dataclass
class ShardFiles:
    """What one written shard holds: the manifest's per-shard facts."""

    path: str
    documents: int
    tokens: int
    bin_bytes: int
    sha256: str
    idx_sha256: str


def write_shard(
    store: OutputStore, path: str, sequences: Sequence[np.ndarray], dtype: np.dtype, chunk_bytes: int = 8 << 20
) -> ShardFiles:
    """Write ``<path>.bin`` and ``<path>.idx`` under the store, each to a temporary key first.

    The ``.bin`` is streamed in chunks of about ``chunk_bytes`` while its sha256 is computed, so a
    shard never needs a second copy of its tokens in memory.
    """
    if not sequences:
        raise ShardError(f"{path}: refusing to write an empty shard")
    bounds = np.iinfo(dtype)
    for seq in sequences:
        if len(seq) and (int(seq.max()) > bounds.max or int(seq.min()) < bounds.min):
            raise ShardError(f"{path}: a token id does not fit {dtype.name}")
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    final = store.key(f"{path}.bin")
    tmp_rel = f"_tmp/{path.replace('/', '__')}.bin.{os.getpid()}.{random.getrandbits(32):08x}"
    tmp = store.key(tmp_rel)
    little = dtype.newbyteorder("<")

    def stream_bin() -> str:
        digest = hashlib.sha256()
        if not store.is_s3:
            store.fs.makedirs(os.path.dirname(final), exist_ok=True)
            store.fs.makedirs(os.path.dirname(tmp), exist_ok=True)
        with store.fs.open(tmp, "wb") as f:
            pending: list[bytes] = []
            size = 0
            for seq in sequences:
                blob = np.asarray(seq).astype(little, copy=False).tobytes()
                pending.append(blob)
                size += len(blob)
                if size >= chunk_bytes:
                    chunk = b"".join(pending)
                    digest.update(chunk)
                    f.write(chunk)
                    pending, size = [], 0
            chunk = b"".join(pending)
            digest.update(chunk)
            f.write(chunk)
        store.fs.mv(tmp, final)
        return digest.hexdigest()

    try:
        sha = store.call(stream_bin, f"write {store.uri(path + '.bin')}")
    except StorageError:
        store.delete(tmp_rel)
        raise
    idx = index_bytes(lengths, dtype)
    store.write_bytes(f"{path}.idx", idx)
    tokens = int(lengths.sum())
    return ShardFiles(path, len(sequences), tokens, tokens * dtype.itemsize, sha, hashlib.sha256(idx).hexdigest())


def validate_shard(store: OutputStore, files: ShardFiles, dtype: np.dtype, expected_lengths: np.ndarray) -> None:
    """Check a written shard against the plan before the manifest may name it.

    Non-empty; the index parses, has our dtype, one document per sequence and offsets that match
    the lengths; the lengths are the planned token counts; the ``.bin`` is exactly as long as the
    index says.
    """
    info = parse_index(store.read_bytes(f"{files.path}.idx"))
    where = store.uri(files.path)
    if not len(info.lengths):
        raise ShardError(f"{where}: shard has no sequences")
    if info.dtype != dtype:
        raise ShardError(f"{where}: index dtype {info.dtype.name}, expected {dtype.name}")
    if not np.array_equal(info.document_indices, np.arange(len(info.lengths) + 1)):
        raise ShardError(f"{where}: document boundaries are not one document per sequence")
    if not np.array_equal(info.lengths, expected_lengths):
        raise ShardError(f"{where}: sequence lengths differ from the planned token counts")
    starts = np.concatenate([[0], np.cumsum(info.lengths[:-1].astype(np.int64) * dtype.itemsize)])
    if not np.array_equal(info.pointers, starts):
        raise ShardError(f"{where}: sequence offsets do not follow the lengths")
    size = store.call(lambda: store.fs.size(store.key(f"{files.path}.bin")), f"stat {where}.bin")
    if size != int(info.lengths.sum()) * dtype.itemsize or size != files.bin_bytes:
        raise ShardError(f"{where}.bin is {size} bytes, the index says {int(info.lengths.sum()) * dtype.itemsize}")
