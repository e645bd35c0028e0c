"""Token-based mixing of the agent, code and text streams: what to ship, and the blend weights.

Why weights and not a pre-mixed shard set: each stream is tokenized once into its own shard set,
and Megatron's blended dataset draws from the shard prefixes by weight (``--data-path w1 p1 w2
p2 ...``). A new ratio (a scaling-law sweep, Stage II) is then a new ``--data-path``
(``raypipe mix``), not a new tokenization, and the ratio is realized by the weights exactly,
whatever the documents' lengths.

What ships is chosen before tokenizing, on the workers, by a deterministic key per document:

- ``u = blake2b(seed, stream, doc_id)`` read as a number in [0, 1); a random stream takes the
  documents with ``u`` below a threshold (a seeded hash sample). A stream in ``score_ordered``
  takes rows without a score (the seeds) first, then the best ``agent_score`` first: its key is
  the score's bin plus ``u`` within it.
- The thresholds come from a histogram of the streams' bytes over the key (``KEY_BINS`` bins per
  stream, summed on the workers), a bytes-to-tokens rate, and the targets. The rate starts as a
  prior; the first generation of shards (about ``FIRST_GENERATION`` of each target) measures it
  exactly from what it wrote, and a second generation tops each stream up with the next keys.
- ``source_repeats`` gives matching documents a weight factor (their shards are drawn that many
  times as often) instead of copies; ``max_repeats`` caps how many times a stream's tokens may
  be drawn at the planned total; ``on_shortfall`` says what a short stream does to the mix.
- Documents whose text is empty (EOS only) are never selected.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from ray.data.aggregate import AggregateFnV2
from ray.data.block import BlockAccessor

from raypipe.config import MixConfig

log = logging.getLogger(__name__)

KEY_BINS = 1024
"""Bins of the selection key per stream: a threshold falls within one bin, interpolated."""
TOKENS_PER_BYTE_PRIOR = 0.25
"""LLaMA-3-like tokenizers give about 4 bytes of English or code per token; the first
generation corrects this with the stream's measured rate."""
FIRST_GENERATION = 0.8
"""Share of each stream's target written before the bytes-to-tokens rate is measured; the rest
is written once it is known, so a wrong prior costs neither extra tokenizing nor a short stream."""
EPOCHS_TOLERANCE = 0.05
"""How far above ``max_repeats`` a stream may be drawn before the manifest warns: the thresholds
are set from estimates, so what ships lands within a few percent of the target."""
NOT_SELECTED = 2.0
"""The key of a document that is never selected (empty text): above every threshold."""
WEIGHT_DIGITS = 12


class MixError(ValueError):
    """The streams cannot be mixed as configured; the message gives the numbers."""


def _unit_hash(seed: int, stream: str, doc_id: str) -> tuple[float, float]:
    """Two independent numbers in [0, 1) from one document's identity: the sample key and the bucket."""
    digest = hashlib.blake2b(f"{seed}\x1f{stream}\x1f{doc_id}".encode(), digest_size=16).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64, int.from_bytes(digest[8:], "big") / 2.0**64


def repeat_units(sources: list[str | None], repeats: dict[str, int]) -> np.ndarray:
    """Weight factor per document: the first matching ``source_repeats`` glob's copies, else 1."""
    out = np.ones(len(sources), dtype=np.int64)
    if not repeats:
        return out
    for i, source in enumerate(sources):
        for pattern, copies in repeats.items():
            if fnmatch.fnmatchcase(source or "", pattern):
                out[i] = copies
                break
    return out


def units_of(cfg: MixConfig) -> list[int]:
    """Every weight factor a document can get, sorted: the histogram's groups."""
    return sorted({1, *cfg.source_repeats.values()})


def selection_columns(batch: pa.Table, stream: str, cfg: MixConfig, seed: int) -> pa.Table:
    """``batch`` with ``key`` (the selection order), ``bucket_hash``, ``n_bytes`` and ``unit`` added."""
    doc_ids = batch.column("doc_id").to_pylist()
    texts = batch.column("text").to_pylist()
    hashes = np.array([_unit_hash(seed, stream, d) for d in doc_ids], dtype=np.float64).reshape(-1, 2)
    n_bytes = np.fromiter((len(t.encode()) if t else 0 for t in texts), dtype=np.int64, count=len(texts))
    key = hashes[:, 0].copy()
    if stream in cfg.score_ordered:
        score = np.asarray(batch.column("agent_score").to_numpy(zero_copy_only=False), dtype=np.float64)
        scored = ~np.isnan(score)
        rank = np.zeros(len(score), dtype=np.float64)
        rank[scored] = 1 + np.minimum(KEY_BINS - 2, np.floor((1 - np.clip(score[scored], 0, 1)) * (KEY_BINS - 1)))
        key = (rank + key) / KEY_BINS
    key[n_bytes == 0] = NOT_SELECTED
    units = repeat_units(batch.column("source").to_pylist(), cfg.source_repeats)
    return (
        batch.append_column("key", pa.array(key, pa.float64()))
        .append_column("bucket_hash", pa.array(hashes[:, 1], pa.float64()))
        .append_column("n_bytes", pa.array(n_bytes, pa.int64()))
        .append_column("unit", pa.array(units, pa.int64()))
    )


class KeyHistogram(AggregateFnV2):
    """Bytes and documents per stream, weight factor and key bin, plus empty documents per
    stream: summed on the workers, so the driver receives ``streams x (2 x units x KEY_BINS + 1)``
    numbers, whatever the input size."""

    def __init__(self, streams: list[str], units: list[int]):
        self.streams = sorted(streams)
        self.units = units
        size = len(self.streams) * (2 * len(units) * KEY_BINS + 1)
        super().__init__("key_histogram", zero_factory=lambda: [0] * size, on=None, ignore_nulls=False)

    def aggregate_block(self, block: Any) -> list[int]:
        table = BlockAccessor.for_block(block).to_arrow()
        stream = np.searchsorted(self.streams, np.asarray(table.column("stream").to_pylist(), dtype=object))
        key = table.column("key").to_numpy()
        n_bytes = table.column("n_bytes").to_numpy()
        unit = np.searchsorted(self.units, table.column("unit").to_numpy())
        live = key < 1.0
        bins = np.minimum((key[live] * KEY_BINS).astype(np.int64), KEY_BINS - 1)
        size = len(self.units) * KEY_BINS
        slot = (stream[live] * len(self.units) + unit[live]) * KEY_BINS + bins
        by_bytes = np.bincount(slot, weights=n_bytes[live], minlength=len(self.streams) * size).astype(np.int64)
        by_docs = np.bincount(slot, minlength=len(self.streams) * size).astype(np.int64)
        empty = np.bincount(stream[~live], minlength=len(self.streams))
        out: list[int] = []
        for i in range(len(self.streams)):
            out += [*by_bytes[i * size : (i + 1) * size].tolist(), *by_docs[i * size : (i + 1) * size].tolist()]
            out.append(int(empty[i]))
        return out

    def combine(self, current: list[int], new: list[int]) -> list[int]:
        return [a + b for a, b in zip(current, new, strict=True)]

    def split(self, counts: list[int] | None) -> dict[str, StreamHistogram]:
        """The aggregated numbers as one :class:`StreamHistogram` per stream."""
        width = 2 * len(self.units) * KEY_BINS + 1
        return {
            s: StreamHistogram.from_counts(self.units, counts[i * width : (i + 1) * width] if counts else None)
            for i, s in enumerate(self.streams)
        }


@dataclass
class StreamHistogram:
    """One stream's bytes and documents per (weight factor, key bin), from :class:`KeyHistogram`."""

    units: list[int]
    bytes: np.ndarray  # [unit, bin]
    docs: np.ndarray  # [unit, bin]
    empty: int

    @classmethod
    def from_counts(cls, units: list[int], counts: list[int] | None) -> StreamHistogram:
        size = len(units) * KEY_BINS
        flat = np.asarray(counts if counts is not None else [0] * (2 * size + 1), dtype=np.int64)
        shape = (len(units), KEY_BINS)
        return cls(units, flat[:size].reshape(shape), flat[size : 2 * size].reshape(shape), int(flat[-1]))

    def weighted_bytes(self) -> np.ndarray:
        """Bytes per key bin, each document counted as often as its weight factor."""
        return (self.bytes * np.asarray(self.units)[:, None]).sum(axis=0)

    def cut(self, weighted: float) -> float:
        """The key threshold below which ``weighted`` bytes lie (bins filled uniformly); 2 = all."""
        per_bin = self.weighted_bytes().astype(np.float64)
        cumulative = np.cumsum(per_bin)
        if not len(cumulative) or weighted >= cumulative[-1]:
            return NOT_SELECTED
        if weighted <= 0:
            return 0.0
        b = int(np.searchsorted(cumulative, weighted, side="right"))
        before = cumulative[b - 1] if b else 0.0
        return (b + (weighted - before) / per_bin[b]) / KEY_BINS

    def bytes_between(self, lo: float, hi: float) -> np.ndarray:
        """Expected raw bytes per weight factor with ``lo <= key < hi`` (bins filled uniformly)."""
        edges = np.arange(KEY_BINS + 1) / KEY_BINS
        overlap = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0, None) * KEY_BINS
        return (self.bytes * overlap[None, :]).sum(axis=1)


@dataclass
class Generation:
    """One stream's slice of a generation of shards: keys in ``[lo, hi)`` dealt into ``buckets`` per weight factor."""

    lo: float
    hi: float
    buckets: dict[int, int]


@dataclass
class MixPlan:
    """Per-stream targets in weighted tokens and the key thresholds that ship them.

    ``tokens_per_byte`` starts at the prior and becomes the stream's measured rate once a
    generation of its shards is written (:meth:`measure`).
    """

    cfg: MixConfig
    histograms: dict[str, StreamHistogram]
    tokens_per_shard: int
    tokens_per_byte: dict[str, float] = field(default_factory=dict)
    measured: dict[str, bool] = field(default_factory=dict)
    written: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if any(w < 0 for w in self.cfg.ratio.values()):
            raise MixError(f"mix.ratio has a negative share: {self.cfg.ratio}")
        if not any(w > 0 for w in self.cfg.ratio.values()):
            raise MixError("mix.ratio gives no stream a positive share")
        unknown = sorted(set(self.histograms) - set(self.cfg.ratio))
        if unknown:
            raise MixError(f"streams {unknown} have no share in mix.ratio {sorted(self.cfg.ratio)}")
        for s in self.cfg.ratio:
            self.histograms.setdefault(s, StreamHistogram.from_counts(units_of(self.cfg), None))
            self.tokens_per_byte.setdefault(s, TOKENS_PER_BYTE_PRIOR)
            self.written.setdefault(s, 0.0)

    @property
    def ratio(self) -> dict[str, float]:
        total = sum(w for w in self.cfg.ratio.values() if w > 0)
        return {s: w / total for s, w in self.cfg.ratio.items() if w > 0}

    def available(self, stream: str) -> float:
        """Weighted tokens the stream holds (estimated until measured)."""
        return float(self.histograms[stream].weighted_bytes().sum()) * self.tokens_per_byte[stream]

    def targets(self) -> tuple[dict[str, float], float, list[str]]:
        """Weighted training tokens per stream at the planned total, the total, and the shortfalls."""
        ratio, cfg = self.ratio, self.cfg
        capacity = {s: self.available(s) * cfg.max_repeats for s in ratio}
        usable = [capacity[s] / ratio[s] for s in ratio if capacity[s] > 0]
        if cfg.total_tokens is not None:
            total = float(cfg.total_tokens)
        elif cfg.on_shortfall == "keep" and usable:
            total = min(usable)
        else:
            total = min(capacity[s] / ratio[s] for s in ratio)
        targets = {s: ratio[s] * total for s in ratio}
        short = [s for s in ratio if targets[s] > capacity[s] * 1.0001 + 1]
        if short and cfg.on_shortfall == "scale":
            total = min(capacity[s] / ratio[s] for s in ratio)
            targets = {s: ratio[s] * total for s in ratio}
        elif short:
            targets = {s: min(targets[s], capacity[s]) for s in ratio}
        if total <= 0 or not any(targets.values()):
            empty = [s for s in ratio if self.available(s) == 0]
            raise MixError(
                f"nothing to mix: streams {empty} have no tokens, and mix.ratio {cfg.ratio} needs every one of them "
                "(give them data, set their share to 0, or use on_shortfall=keep)"
            )
        return targets, total, short

    def ship(self) -> dict[str, float]:
        """Weighted tokens to write per stream: its target, or all it has (repeats come from the weights)."""
        targets, _, _ = self.targets()
        return {s: min(targets[s], self.available(s)) for s in targets}

    def generation(self, first: bool) -> dict[str, Generation]:
        """The key range of each stream that the next generation writes, and its bucket counts.

        The first generation writes ``FIRST_GENERATION`` of each stream's target (all of it
        where the stream is to ship whole); the second, the rest, with the measured rates.
        """
        out: dict[str, Generation] = {}
        ship = self.ship()
        for s, tokens in ship.items():
            hist = self.histograms[s]
            lo = 0.0 if first else self.written[s]
            whole = tokens >= self.available(s) * (1 - 1e-9)
            want = tokens if whole or not first else tokens * FIRST_GENERATION
            hi = NOT_SELECTED if whole else hist.cut(want / self.tokens_per_byte[s])
            if hi <= lo or lo >= NOT_SELECTED:
                continue
            raw_tokens = hist.bytes_between(lo, hi) * self.tokens_per_byte[s]
            buckets = {
                u: max(1, round(t / self.tokens_per_shard))
                for u, t, n in zip(hist.units, raw_tokens, hist.docs.sum(axis=1), strict=True)
                if n
            }
            if buckets:
                out[s] = Generation(lo, hi, buckets)
            self.written[s] = hi
        return out

    def measure(self, stream: str, tokens: int, text_bytes: int) -> None:
        """Replace the prior by the stream's measured tokens per byte (EOS included)."""
        if text_bytes > 0:
            self.tokens_per_byte[stream] = tokens / text_bytes
            self.measured[stream] = True

    def shares(self) -> dict[str, float]:
        """Each stream's share of the drawn tokens at the planned total: the target ratio, or under
        ``on_shortfall=keep`` what the short streams can give."""
        return blend_shares(self.targets()[0])

    def summary(self, shipped: dict[str, dict[str, int]], achieved: dict[str, float]) -> dict[str, Any]:
        """The JSON-ready account of the mix: targets, what shipped, epochs per stream, warnings.

        ``shipped`` maps a stream to its written ``documents``, ``tokens`` and ``weighted_tokens``;
        ``achieved`` is the share of draws the manifest's blend weights give each stream.
        """
        targets, total, short = self.targets()
        warnings = list(self.warnings)
        if short:
            cfg = self.cfg
            asked = cfg.total_tokens or total
            lines = [
                f"stream '{s}' has {int(self.available(s)):,} tokens (up to "
                f"{int(self.available(s) * cfg.max_repeats):,} at max_repeats={cfg.max_repeats:g}) but needs "
                f"{int(self.ratio[s] * asked):,} for {self.ratio[s]:.1%} of {int(asked):,}"
                for s in short
            ]
            if cfg.on_shortfall == "scale":
                warnings.append(
                    "mix shortfall: " + "; ".join(lines) + f". on_shortfall=scale: the whole mix was scaled from "
                    f"{int(asked):,} to {int(total):,} tokens to keep the target ratio."
                )
            else:
                warnings.append(
                    "mix shortfall: " + "; ".join(lines) + ". on_shortfall=keep: the short streams keep all they "
                    "have, the others stay at their targets, so the achieved ratio is off target."
                )
        streams: dict[str, dict[str, Any]] = {}
        for s in sorted(set(self.cfg.ratio) | set(self.histograms)):
            hist = self.histograms[s]
            got = shipped.get(s, {"documents": 0, "tokens": 0, "weighted_tokens": 0})
            target = targets.get(s, 0.0)
            streams[s] = {
                "available_documents": int(hist.docs.sum()) + hist.empty,
                "available_bytes": int(hist.bytes.sum()),
                "available_tokens": int(round(self.available(s))),
                "tokens_per_byte_measured": self.measured.get(s, False),
                "empty_documents": hist.empty,
                "tokens_per_byte": round(self.tokens_per_byte[s], 6),
                "key_threshold": round(min(self.written[s], 1.0), 9),
                "target_tokens": int(round(target)),
                "documents": int(got["documents"]),
                "tokens": int(got["tokens"]),
                "weighted_tokens": int(got["weighted_tokens"]),
                "epochs": round(target / got["weighted_tokens"], 4) if got["weighted_tokens"] else 0.0,
            }
            if (
                target
                and got["weighted_tokens"]
                and target > got["weighted_tokens"] * self.cfg.max_repeats * (1 + EPOCHS_TOLERANCE)
            ):
                warnings.append(
                    f"stream '{s}' shipped {got['weighted_tokens']:,} weighted tokens; its target of "
                    f"{int(target):,} draws them {target / got['weighted_tokens']:.2f} times, above "
                    f"max_repeats={self.cfg.max_repeats:g}"
                )
        for w in warnings:
            log.warning(w)
        return {
            "target_ratio": {s: round(self.ratio.get(s, 0.0), 6) for s in self.cfg.ratio},
            "achieved_ratio": {s: round(achieved.get(s, 0.0), 6) for s in self.cfg.ratio},
            "total_tokens_target": int(round(total)),
            "total_tokens": int(round(sum(targets.values()))),
            "shipped_tokens": int(sum(v["tokens"] for v in streams.values())),
            "streams": streams,
            "warnings": warnings,
        }


def blend_shares(tokens: dict[str, float]) -> dict[str, float]:
    """Each stream's share of the drawn tokens."""
    total = sum(tokens.values())
    return {s: t / total for s, t in tokens.items()} if total else {}


def blend_weights(shards: list[dict[str, Any]], shares: dict[str, float]) -> list[float]:
    """One Megatron ``--data-path`` weight per shard: ``share(stream) x tokens x repeat / weighted
    tokens of the stream``, so the streams are drawn at ``shares`` and within a stream every
    token as often as its repeat factor says. A stream with no share or no shards gets weight 0."""
    weighted: dict[str, float] = {}
    for s in shards:
        weighted[s["stream"]] = weighted.get(s["stream"], 0.0) + s["tokens"] * s.get("repeat", 1)
    missing = sorted(k for k, v in shares.items() if v > 0 and not weighted.get(k))
    if missing:
        raise MixError(f"streams {missing} have a share but no shards in this output")
    exact = [shares.get(s["stream"], 0.0) * s["tokens"] * s.get("repeat", 1) / weighted[s["stream"]] for s in shards]
    return [float(f"{w:.{WEIGHT_DIGITS}g}") for w in exact]


def realized_shares(shards: list[dict[str, Any]], weights: list[float]) -> dict[str, float]:
    """The share of draws each stream gets from these weights (what Megatron normalizes them to)."""
    total = sum(weights)
    out: dict[str, float] = {}
    for s, w in zip(shards, weights, strict=True):
        out[s["stream"]] = out.get(s["stream"], 0.0) + w / total
    return out


def data_path(shards: list[dict[str, Any]], weights: list[float]) -> str:
    """Megatron's ``--data-path w1 prefix1 w2 prefix2 ...`` (prefixes relative to the output); zero weights left out."""
    return " ".join(f"{w:.{WEIGHT_DIGITS}g} {s['path']}" for s, w in zip(shards, weights, strict=True) if w > 0)


def parse_ratio(text: str) -> dict[str, float]:
    """``agent=2,code=1,text=1`` as ``{stream: share}`` normalized to sum to 1."""
    ratio: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            share = float(value)
        except ValueError:
            share = math.nan
        if not sep or not name.strip() or not math.isfinite(share) or share < 0:
            raise MixError(f"--ratio wants stream=share pairs like agent=1,code=1,text=1, got {part!r}")
        ratio[name.strip()] = share
    total = sum(ratio.values())
    if total <= 0:
        raise MixError(f"--ratio gives no stream a positive share: {text}")
    return {s: v / total for s, v in ratio.items()}


def mix_data_path(manifest: dict[str, Any], ratio: dict[str, float], root: str | None = None) -> str:
    """The ``--data-path`` that draws this output's streams at ``ratio``; prefixes under ``root`` if given."""
    unknown = sorted(set(ratio) - set(manifest["totals"]["tokens_by_stream"]))
    if unknown:
        raise MixError(
            f"streams {unknown} are not in this output (it has {sorted(manifest['totals']['tokens_by_stream'])})"
        )
    shards = manifest["shards"]
    if root:
        shards = [{**s, "path": f"{root.rstrip('/')}/{s['path']}"} for s in shards]
    return data_path(shards, blend_weights(shards, ratio))
