"""One selector: ordered rules over tag columns decide ``selected``, ``stream`` and ``drop_reason``.

Stages only tag (extraction errors, language, quality signals, scores, contamination hits,
duplicate labels); :class:`Select` is the one place that turns tags into a verdict, so a
selection can be redone from ``candidates/`` with other thresholds without re-extracting or
re-scoring (:func:`reselect`).

The verdict, for each row:

1. the first *drop* rule, in order, that names a reason drops the page from the corpus:
   ``drop_reason`` is that reason, ``stream`` is null;
2. otherwise the *agent* rule (the classifier's fitted thresholds, or :class:`PriorRoute`, the
   routing an earlier verdict made), where there is one, routes the page: selected pages go to
   the ``agent`` stream with no reason, the others to the ``text`` stream with the agent rule's
   reason (``low_agent_score``, ``low_seed_similarity``, ``no_text``) kept in ``drop_reason``, so
   ``candidates/`` says why each page was not selected;
3. with no agent rule yet (before scoring), a kept page is ``text`` with no reason.

A rule is any object with ``name``, the tag columns it ``needs`` and ``reasons(frame)``: a reason
or None per row. Adding a filter is one tagging stage plus one rule (``docs/stages.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

from raypipe.config import QualityConfig
from raypipe.stage import Resources, Stage

AGENT, TEXT = "agent", "text"
VERDICT_SCHEMA = pa.schema([("selected", pa.bool_()), ("stream", pa.string()), ("drop_reason", pa.string())])


class Rule(Protocol):
    name: str
    needs: tuple[str, ...]

    def reasons(self, frame: pd.DataFrame) -> np.ndarray:
        """A reason (str) or None per row: None lets the row through."""
        ...


def _none(n: int) -> np.ndarray:
    return np.full(n, None, dtype=object)


@dataclass(frozen=True)
class TagReason:
    """Drops a row whose tag column holds a reason (e.g. ``extract_error``, ``duplicate``)."""

    column: str
    name: str = ""

    @property
    def needs(self) -> tuple[str, ...]:
        return (self.column,)

    def reasons(self, frame: pd.DataFrame) -> np.ndarray:
        values = frame[self.column].astype(object).to_numpy()
        return np.where(pd.isna(values), None, values).astype(object)


@dataclass(frozen=True)
class Flag:
    """Drops a row whose boolean tag is true, with a fixed reason (``contaminated`` -> contamination)."""

    column: str
    reason: str
    name: str = ""

    @property
    def needs(self) -> tuple[str, ...]:
        return (self.column,)

    def reasons(self, frame: pd.DataFrame) -> np.ndarray:
        hit = frame[self.column].astype("boolean").fillna(False).to_numpy(dtype=bool)
        return np.where(hit, self.reason, None).astype(object)


@dataclass(frozen=True)
class Language:
    """Drops pages identified as a language not kept. ``unknown`` (prose too thin or too code-heavy
    to tell, see ``extract/language.py``) passes unless ``keep_unknown`` is off; an empty list keeps
    every language."""

    languages: tuple[str, ...]
    keep_unknown: bool = True
    name: str = "language"
    needs: tuple[str, ...] = ("language",)

    def reasons(self, frame: pd.DataFrame) -> np.ndarray:
        if not self.languages:
            return _none(len(frame))
        lang = frame["language"].astype(object).to_numpy()
        present = np.array([lg is not None and lg == lg for lg in lang], dtype=bool)
        foreign = present & np.array([lg not in self.languages for lg in lang], dtype=bool)
        if self.keep_unknown:
            foreign &= lang != "unknown"
        return np.where(foreign, "language", None).astype(object)


@dataclass(frozen=True)
class Quality:
    """Gopher-style quality rules over the extraction's signals: ``quality:<first failed rule>``."""

    cfg: QualityConfig
    name: str = "quality"
    needs: tuple[str, ...] = (
        "n_words",
        "mean_word_length",
        "symbol_word_ratio",
        "bullet_lines_ratio",
        "ellipsis_lines_ratio",
        "dup_line_fraction",
        "dup_paragraph_fraction",
        "alpha_word_fraction",
        "stop_words",
    )

    def reasons(self, frame: pd.DataFrame) -> np.ndarray:
        from raypipe.extract.quality import quality_verdict

        out = _none(len(frame))
        signals = frame[list(self.needs)]
        present = signals.notna().all(axis=1).to_numpy()
        for i, row in zip(np.flatnonzero(present), signals[present].to_dict("records"), strict=True):
            out[i] = quality_verdict(row, self.cfg)
        return out


@dataclass(frozen=True)
class AgentRule:
    """The classifier's fitted selection rule (``classify.rule.SelectionRule`` as a dict)."""

    rule: dict[str, Any] = field(default_factory=dict)
    name: str = "agent"
    needs: tuple[str, ...] = ("agent_score",)

    def routes(self, frame: pd.DataFrame, free: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(selected, reason) for the rows still ``free`` after the drop rules."""
        from raypipe.classify.rule import SelectionRule

        scored = frame.assign(drop_reason=np.where(free, None, "dropped").astype(object))
        if "seed_similarity" not in scored:
            scored["seed_similarity"] = np.nan
        out = SelectionRule.from_dict(self.rule).apply(scored)
        selected = out["selected"].to_numpy(dtype=bool) & free
        reasons = out["drop_reason"].astype(object).to_numpy()
        return selected, np.where(free & ~selected, reasons, None).astype(object)


@dataclass(frozen=True)
class PriorRoute:
    """Keeps the routing an earlier verdict made (``stream``: agent, text, or a configured dataset's
    own stream such as code; the agent rule's reason in ``select_reason``) for the rows the later
    drop rules let through: the clean phase adds contamination and duplicate tags but does not
    re-score."""

    name: str = "prior_route"
    needs: tuple[str, ...] = ("stream",)

    def routes(self, frame: pd.DataFrame, free: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        stream = frame["stream"].astype(object).to_numpy()
        selected = free & (stream == AGENT)
        if "select_reason" not in frame:
            return selected, _none(len(frame))
        reasons = frame["select_reason"].astype(object).to_numpy()
        reasons = np.where(pd.isna(reasons), None, reasons)
        return selected, np.where(free & ~selected, reasons, None).astype(object)


class Select(Stage):
    """The verdict stage (see the module docstring): adds ``selected``, ``stream``, ``drop_reason``.

    ``resources`` may match the stage before it, so that Ray Data fuses the two into one task.
    """

    adds = VERDICT_SCHEMA

    def __init__(
        self,
        rules: Sequence[Rule],
        agent: AgentRule | PriorRoute | None = None,
        batch_size: int | None = 1024,
        resources: Resources | None = None,
    ):
        self.rules, self.agent = list(rules), agent
        self.resources = resources or Resources()
        self.needs = tuple(dict.fromkeys(c for r in [*self.rules, *([agent] if agent else [])] for c in r.needs))
        self.batch_size = batch_size

    def decide(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """The verdict columns (object arrays: None is null) for a frame of tagged rows."""
        reason = _none(len(frame))
        for rule in self.rules:
            free = pd.isna(reason)
            if free.any():
                found = rule.reasons(frame)
                reason[free] = found[free]
        kept = pd.isna(reason)
        selected = np.zeros(len(frame), dtype=bool)
        stream = np.where(kept, TEXT, None).astype(object)
        if self.agent is not None:
            selected, routed = self.agent.routes(frame, kept)
            reason[kept] = routed[kept]
            stream = np.where(kept, np.where(selected, AGENT, TEXT), None).astype(object)
            if isinstance(self.agent, PriorRoute):  # a kept row stays in the stream it was routed to
                prior = frame["stream"].astype(object).to_numpy()
                stream = np.where(kept, np.where(pd.isna(prior), TEXT, prior), None).astype(object)
        return {"selected": selected, "stream": stream, "drop_reason": reason}

    def __call__(self, batch: pa.Table) -> pa.Table:
        optional = [c for c in ("select_reason", "seed_similarity") if c in batch.column_names]
        verdict = self.decide(batch.select(list(dict.fromkeys([*self.needs, *optional]))).to_pandas())
        table = batch.drop_columns([c for c in VERDICT_SCHEMA.names if c in batch.column_names])
        for name in VERDICT_SCHEMA.names:
            values = [None if pd.isna(v) else v for v in verdict[name]]
            table = table.append_column(name, pa.array(values, VERDICT_SCHEMA.field(name).type))
        return table


def reselect(table: pa.Table, rules: Sequence[Rule], agent: AgentRule | PriorRoute | None = None) -> pa.Table:
    """Re-make the verdict of tagged rows (e.g. ``candidates/``) under other rules or thresholds."""
    return Select(rules, agent).run(table)
