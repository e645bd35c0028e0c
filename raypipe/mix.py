"""Token-based mixing of the agent, code and text streams to a target ratio.

Why by tokens: the paper's finding (about 1:1:1 agent:code:text in Stage I) is a share of the
training tokens, and documents differ in length by orders of magnitude, so we count every
document first and then choose how many copies of each go into the shards.

The rules, all deterministic for a given seed:
- A stream's documents are visited in a fixed order: ``blake2b(seed, stream, doc_id)`` (a seeded
  shuffle), or by ``agent_score`` for streams in ``score_ordered`` (rows without a score, the seeds,
  come first). Downsampling takes documents in that order while they fit in the stream's target,
  then fills the rest of the target with later documents that still fit, so the target is met
  to within one small document.
- Upsampling repeats whole documents: every document ``floor(target / available)`` times, and the
  remainder is filled as above. ``max_repeats`` caps how many times a stream's tokens may appear.
- ``source_repeats`` gives documents of matching sources (globs over ``source``) several copies
  at once, e.g. seeds twice in a seed-focused Stage II mix.
- A stream short of its target (even at ``max_repeats``): ``on_shortfall=scale`` shrinks the whole
  mix so the ratio still holds; ``keep`` keeps the other streams at target and reports the ratio
  actually reached. Either way the plan carries a warning with the numbers, which is also logged.
- Documents whose text is empty (EOS only) are never selected.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from raypipe.config import MixConfig

log = logging.getLogger(__name__)
RATIO_TOLERANCE = 0.01


class MixError(ValueError):
    """The streams cannot be mixed as configured; the message gives the numbers."""


def stable_keys(columns: list[pd.Series], seed: int) -> np.ndarray:
    """A seeded 64-bit key per row, the same on every machine and Python version (unlike ``hash``)."""
    keys = np.empty(len(columns[0]), dtype=np.uint64)
    prefix = f"{seed}\x1f".encode()
    for i, parts in enumerate(zip(*(c.tolist() for c in columns), strict=True)):
        blob = prefix + "\x1f".join(map(str, parts)).encode()
        keys[i] = int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "big")
    return keys


@dataclass
class MixPlan:
    """How many copies of each document go into the shards, and what that achieves."""

    selection: pd.DataFrame
    target_ratio: dict[str, float]
    achieved_ratio: dict[str, float]
    streams: dict[str, dict[str, Any]]
    total_target: float
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The JSON-ready account of the mix for the manifest and the datasheet."""
        return {
            "target_ratio": {s: round(v, 6) for s, v in self.target_ratio.items()},
            "achieved_ratio": {s: round(v, 6) for s, v in self.achieved_ratio.items()},
            "total_tokens_target": int(round(self.total_target)),
            "total_tokens": int(sum(s["tokens"] for s in self.streams.values())),
            "streams": self.streams,
            "warnings": list(self.warnings),
        }


def _units(sources: pd.Series, repeats: dict[str, int]) -> np.ndarray:
    """Copies taken together per selected document: the first matching ``source_repeats`` glob, else 1."""
    if not repeats:
        return np.ones(len(sources), dtype=np.int64)
    out = np.ones(len(sources), dtype=np.int64)
    for i, source in enumerate(sources.fillna("").tolist()):
        for pattern, copies in repeats.items():
            if fnmatch.fnmatchcase(source, pattern):
                out[i] = copies
                break
    return out


def _visit_order(sub: pd.DataFrame, score_ordered: bool, seed: int) -> np.ndarray:
    """Indices of ``sub`` in visiting order; ``doc_id`` breaks the (astronomically rare) key ties."""
    keys = stable_keys([sub["stream"], sub["doc_id"]], seed)
    doc_ids = sub["doc_id"].to_numpy(dtype=str)
    if not score_ordered or "agent_score" not in sub:
        return np.lexsort((doc_ids, keys))
    score = pd.to_numeric(sub["agent_score"], errors="coerce").to_numpy(dtype=float)
    has_score = ~np.isnan(score)
    return np.lexsort((doc_ids, keys, -np.nan_to_num(score, nan=0.0), has_score))


def _fill(sizes: np.ndarray, budget: float) -> np.ndarray:
    """Which of ``sizes`` (in visiting order) to take: the longest prefix that fits, then any that still fit."""
    take = np.zeros(len(sizes), dtype=bool)
    if budget <= 0 or not len(sizes):
        return take
    cumulative = np.cumsum(sizes)
    k = int(np.searchsorted(cumulative, budget, side="right"))
    take[:k] = True
    left = budget - (cumulative[k - 1] if k else 0)
    rest_min = np.minimum.accumulate(sizes[::-1])[::-1]
    for i in range(k + 1, len(sizes)):
        if left < rest_min[i]:
            break
        if sizes[i] <= left:
            take[i] = True
            left -= sizes[i]
    return take


def _select(sub: pd.DataFrame, target: float, cfg: MixConfig, seed: int, stream: str) -> np.ndarray:
    """Copies of each document of one stream so that its tokens come as close to ``target`` as whole documents allow."""
    units = sub["unit"].to_numpy()
    sizes = sub["n_tokens"].to_numpy(dtype=np.int64) * units
    available = int(sizes.sum())
    copies = np.zeros(len(sub), dtype=np.int64)
    if target <= 0 or available == 0:
        return copies
    rounds = int(target // available)
    order = _visit_order(sub, stream in cfg.score_ordered, seed)
    taken = _fill(sizes[order], target - rounds * available)
    copies[order[taken]] = units[order[taken]]
    return copies + rounds * units


def plan_mix(docs: pd.DataFrame, cfg: MixConfig, seed: int) -> MixPlan:
    """Choose copies per document to reach ``cfg.ratio`` by tokens.

    ``docs`` has one row per document: ``stream``, ``doc_id`` (unique within its stream) and
    ``n_tokens`` (EOS included, as stored), optionally ``source`` and ``agent_score``. Returns the
    plan; ``selection`` holds ``stream, doc_id, n_tokens, copies`` for documents with copies > 0.
    """
    missing = {"stream", "doc_id", "n_tokens"} - set(docs.columns)
    if missing:
        raise MixError(f"mix input lacks columns {sorted(missing)}")
    if any(w < 0 for w in cfg.ratio.values()):
        raise MixError(f"mix.ratio has a negative share: {cfg.ratio}")
    weights = {s: float(w) for s, w in cfg.ratio.items() if w > 0}
    if not weights:
        raise MixError("mix.ratio gives no stream a positive share")
    unknown = sorted(set(docs["stream"].unique()) - set(cfg.ratio))
    if unknown:
        raise MixError(f"streams {unknown} have no share in mix.ratio {sorted(cfg.ratio)}")
    duplicated = docs.duplicated(["stream", "doc_id"])
    if duplicated.any():
        examples = docs.loc[duplicated, ["stream", "doc_id"]].head(3).to_dict("records")
        raise MixError(f"{int(duplicated.sum())} duplicate (stream, doc_id) pairs, e.g. {examples}")

    total_weight = sum(weights.values())
    ratio = {s: w / total_weight for s, w in weights.items()}
    cols = ["stream", "doc_id", "n_tokens"] + [c for c in ("source", "agent_score") if c in docs]
    frame = docs[cols].sort_values(["stream", "doc_id"], kind="stable").reset_index(drop=True)
    frame["unit"] = _units(frame["source"] if "source" in frame else pd.Series([""] * len(frame)), cfg.source_repeats)
    eligible = frame["n_tokens"].to_numpy() > 1
    base = {
        s: int((frame["n_tokens"] * frame["unit"])[eligible & (frame["stream"] == s).to_numpy()].sum()) for s in ratio
    }
    capacity = {s: base[s] * cfg.max_repeats for s in ratio}

    warnings: list[str] = []
    usable = {s: capacity[s] / ratio[s] for s in ratio if capacity[s] > 0}
    if cfg.total_tokens is not None:
        total = float(cfg.total_tokens)
    elif cfg.on_shortfall == "keep" and usable:
        total = min(usable.values())
    else:
        total = min(capacity[s] / ratio[s] for s in ratio)
    targets = {s: ratio[s] * total for s in ratio}
    short = [s for s in ratio if targets[s] > capacity[s] + 0.5]
    if short:
        lines = [
            f"stream '{s}' has {base[s]:,} tokens (up to {int(capacity[s]):,} at max_repeats={cfg.max_repeats:g}) "
            f"but needs {int(targets[s]):,} for {ratio[s]:.1%} of {int(total):,}"
            for s in short
        ]
        if cfg.on_shortfall == "scale":
            scaled = min(capacity[s] / ratio[s] for s in ratio)
            targets = {s: ratio[s] * scaled for s in ratio}
            warnings.append(
                "mix shortfall: " + "; ".join(lines) + f". on_shortfall=scale: the whole mix was scaled from "
                f"{int(total):,} to {int(scaled):,} tokens to keep the target ratio."
            )
            total = scaled
        else:
            for s in short:
                targets[s] = capacity[s]
            warnings.append(
                "mix shortfall: " + "; ".join(lines) + ". on_shortfall=keep: the short streams keep all they have, "
                "the others stay at their targets, so the achieved ratio is off target."
            )
    if total <= 0 or not any(targets.values()):
        empty = [s for s in ratio if base[s] == 0]
        raise MixError(
            f"nothing to mix: streams {empty} have no tokens, and mix.ratio {cfg.ratio} needs every one of them "
            "(give them data, set their share to 0, or use on_shortfall=keep)"
        )

    copies = np.zeros(len(frame), dtype=np.int64)
    for s in ratio:
        rows = np.flatnonzero(eligible & (frame["stream"] == s).to_numpy())
        copies[rows] = _select(frame.iloc[rows], targets[s], cfg, seed, s)
    frame["copies"] = copies
    tokens = frame["copies"] * frame["n_tokens"]
    selected_total = int(tokens.sum())
    streams: dict[str, dict[str, Any]] = {}
    achieved: dict[str, float] = {}
    for s in sorted(set(cfg.ratio) | set(frame["stream"])):
        mask = (frame["stream"] == s).to_numpy()
        picked = int(tokens[mask].sum())
        achieved[s] = picked / selected_total if selected_total else 0.0
        streams[s] = {
            "available_documents": int(mask.sum()),
            "available_tokens": int(frame["n_tokens"][mask].sum()),
            "empty_documents": int((mask & ~eligible).sum()),
            "target_tokens": int(round(targets.get(s, 0.0))),
            "selected_documents": int((mask & (copies > 0)).sum()),
            "sequences": int(copies[mask].sum()),
            "tokens": picked,
        }
        off_by_choice = bool(short) and cfg.on_shortfall == "keep"
        if s in ratio and not off_by_choice and abs(achieved[s] - ratio[s]) > RATIO_TOLERANCE:
            warnings.append(
                f"stream '{s}' reached {achieved[s]:.2%} of the mix, target {ratio[s]:.2%}: "
                "its documents are too long for so small a target"
            )
    for w in warnings:
        log.warning(w)
    selection = frame.loc[copies > 0, ["stream", "doc_id", "n_tokens", "copies"]].reset_index(drop=True)
    return MixPlan(
        selection=selection,
        target_ratio={s: ratio.get(s, 0.0) for s in cfg.ratio},
        achieved_ratio=achieved,
        streams=streams,
        total_target=total,
        warnings=warnings,
    )
