"""MinHash signatures, LSH band keys and compact sketches of documents, one batch at a time.

Shingles are ``shingle_words`` consecutive words of the normalized text (word n-grams; a document
shorter than that is one shingle of all its words; one without words has no shingles and never
becomes a near duplicate). Shingles are hashed with the vectorized window hash of
:mod:`raypipe.dedup.normalize`; rensa (Rust) computes the ``num_perm`` minima of a whole batch in
one call, so Python never loops over shingles or permutations.

A band key hashes one band's ``rows`` values together with the band's index, so equal values in
different bands never share a bucket. The sketch keeps the low 8 bits of every MinHash value
(b-bit minwise hashing, ``num_perm`` bytes): enough to estimate the Jaccard similarity of an LSH
candidate pair (two unrelated values agree with probability 1/256, corrected for below) at an
eighth of the signature's size, so it can travel with every band row through the shuffle.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import rensa

from raypipe.config import DedupConfig
from raypipe.dedup.normalize import mix64, normalize_text, text_hash, window_hashes, word_hashes, words

_POLY = np.uint64(0x9E3779B97F4A7C15)
_CHANCE = 1.0 / 256.0


def shingle_hashes(word_hash_array: np.ndarray, shingle_words: int) -> np.ndarray:
    """Hashes of a document's word shingles (one shingle if it is shorter than ``shingle_words``)."""
    if len(word_hash_array) == 0:
        return np.empty(0, dtype=np.uint64)
    return window_hashes(word_hash_array, min(shingle_words, len(word_hash_array)))


def signatures(shingles: list[np.ndarray], num_perm: int, seed: int) -> np.ndarray:
    """MinHash signatures, one row of ``num_perm`` uint32 per document."""
    if not shingles:
        return np.empty((0, num_perm), dtype=np.uint32)
    offsets = np.zeros(len(shingles) + 1, dtype=np.uint64)
    offsets[1:] = np.cumsum([len(s) for s in shingles])
    flat = np.concatenate(shingles).astype(np.uint64, copy=False)
    matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(flat, offsets, num_perm, seed)
    return np.asarray(matrix.to_rows(), dtype=np.uint32).reshape(len(shingles), num_perm)


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit bucket key per (document, band): shape ``(documents, bands)``."""
    keys = np.empty((sigs.shape[0], bands), dtype=np.uint64)
    for b in range(bands):
        acc = np.full(sigs.shape[0], np.uint64(b + 1), dtype=np.uint64)
        for r in range(rows):
            acc = acc * _POLY + sigs[:, b * rows + r].astype(np.uint64)
        keys[:, b] = mix64(acc)
    return keys


def sketches(sigs: np.ndarray) -> list[bytes]:
    """The low byte of every MinHash value, ``num_perm`` bytes per document."""
    low = (sigs & np.uint32(0xFF)).astype(np.uint8)
    return [row.tobytes() for row in low]


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Jaccard estimate of each row pair of two ``(pairs, num_perm)`` uint8 sketch matrices."""
    agree = (a == b).mean(axis=1)
    return np.clip((agree - _CHANCE) / (1.0 - _CHANCE), 0.0, 1.0)


class DedupFingerprinter:
    """Stage: adds ``text_hash`` (exact-dedup key), ``lsh_buckets`` (``bands`` uint64 bucket keys,
    empty for a document without words) and ``minhash_sketch`` (bytes) to every row."""

    def __init__(self, cfg: DedupConfig, text_column: str = "text"):
        if cfg.bands * cfg.rows > cfg.num_perm:
            raise ValueError(f"dedup.bands x dedup.rows ({cfg.bands}x{cfg.rows}) exceeds num_perm ({cfg.num_perm})")
        self.cfg = cfg
        self.text_column = text_column

    def columns(self, normalized: list[str], hashes: list[np.ndarray]) -> dict[str, list[Any]]:
        """The fingerprint columns for documents given as normalized texts and their word hashes."""
        shingles = [shingle_hashes(wh, self.cfg.shingle_words) for wh in hashes]
        sigs = signatures(shingles, self.cfg.num_perm, self.cfg.seed)
        keys = band_keys(sigs, self.cfg.bands, self.cfg.rows)
        return {
            "text_hash": [text_hash(n) for n in normalized],
            "lsh_buckets": [k.tolist() if len(s) else [] for k, s in zip(keys, shingles, strict=True)],
            "minhash_sketch": sketches(sigs),
        }

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        normalized = [normalize_text(t) for t in batch[self.text_column].tolist()]
        return batch.assign(**self.columns(normalized, word_hashes([words(n) for n in normalized])))
