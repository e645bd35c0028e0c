"""Text normalization, word tokens and stable hashes shared by exact dedup, MinHash and decontamination.

Why one module: the three stages must agree on what "the same text" and "a word" are, or a page
could be an exact duplicate of one page and yet share no n-gram with it.

The normalization (the identity used by exact dedup):

1. Unicode NFC, so composed and decomposed accents are one character;
2. lowercase (``str.lower``), so case-only changes (title-cased headlines) do not matter;
3. every run of whitespace (spaces, tabs, newlines, NBSP and other Unicode spaces) becomes one
   space, and the ends are stripped, so re-wrapped or re-indented copies are equal.

Punctuation, digits and word order still count: two texts are exact duplicates only if they read
the same. A word is a maximal run of Unicode word characters (``\\w+``) of the normalized text, so
near-dup shingles and benchmark n-grams ignore punctuation and markup quoting.

Every hash here is stable across processes, machines and runs (no Python ``hash()``, whose seed
changes per process), which the determinism contract needs.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence

import numpy as np
import pandas as pd
import rensa

_WORD = re.compile(r"\w+")
# Odd 64-bit constants: the polynomial base of n-gram hashes and the splitmix64 finalizer.
_POLY = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def normalize_text(text: str | None) -> str:
    """The normalized form of a text (see the module docstring); ``None`` reads as empty."""
    if not text:
        return ""
    return " ".join(unicodedata.normalize("NFC", text).lower().split())


def text_hash(normalized: str) -> str:
    """128-bit hex digest of a normalized text: the exact-dedup key."""
    return hashlib.blake2b(normalized.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def words(normalized: str) -> list[str]:
    """The word tokens of a normalized text."""
    return _WORD.findall(normalized)


def word_hashes(token_lists: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """Stable 64-bit hashes of every token, one array per document (hashed in Rust by rensa)."""
    return [np.asarray(h, dtype=np.uint64) for h in rensa.RMinHash.hash_token_sets(token_lists)]


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: spreads every input bit over the output (wrapping uint64 arithmetic)."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= _MIX1
    x ^= x >> np.uint64(27)
    x *= _MIX2
    x ^= x >> np.uint64(31)
    return x


def window_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """Hash of every window of ``n`` consecutive values (empty if there are fewer than ``n``).

    A polynomial over the window, tagged with ``n`` so windows of different lengths never share a
    hash, then mixed. Vectorized: ``n`` array operations per document, whatever its length.
    """
    count = len(hashes) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    acc = np.full(count, np.uint64(n), dtype=np.uint64)
    for j in range(n):
        acc = acc * _POLY + hashes[j : j + count]
    return mix64(acc)


def partition_of(keys: pd.Series, num_partitions: int) -> np.ndarray:
    """Stable hash partition (0..num_partitions-1) of each key, for hash-partitioned shuffles."""
    hashed = pd.util.hash_pandas_object(keys, index=False).to_numpy(dtype=np.uint64)
    return (hashed % np.uint64(num_partitions)).astype(np.int64)
