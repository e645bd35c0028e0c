"""The classification part of the crawl plan, for each mode, as Ray Data stages.

``add_selection`` appends: the fastText scorer (CPU actor pool), the embedding stage for the pages
the mode embeds (``retrieve``, a function appending the retrieval stage, e.g.
``functools.partial(raypipe.retrieve.add_retrieval, cfg=..., output_prefix=..., storage_cfg=...)``),
and the selection rule. Taking ``retrieve`` as a parameter keeps this module independent of how
retrieval is wired (GPU tokenizer split, pool sizing).

How the cascade skips pages without a second pass over the input: before the embedding stage,
the text of every page the mode does not embed is moved aside (``_unembedded_text``), so the
retrieval stage sees no text there and gives it a null score; the text is put back right after.
The stream stays one pass, rows are never dropped, and the retrieval stage needs no knowledge of
the cascade.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from raypipe.classify.classifier import load_rule
from raypipe.classify.rule import SelectionRule
from raypipe.classify.stage import AgentScorer
from raypipe.config import ClassifyConfig, StorageConfig
from raypipe.select import AgentRule, Rule, Select, TagReason
from raypipe.stage import FrameStage, Resources, apply

HIDDEN_TEXT = "_unembedded_text"
Retrieve = Callable[[Any], Any]
RETRIEVAL_SCHEMA = pa.schema([("seed_similarity", pa.float64()), ("nearest_seed", pa.string())])


def scorer_resources(cfg: ClassifyConfig, resources: dict[str, float] | None = None) -> Resources:
    """AgentScorer's pool: a small autoscaling pool of fractional-CPU actors.

    fastText scores thousands of pages per second per core, far faster than extraction, so one
    actor per 8 CPUs is plenty, and fractional CPUs keep read tasks schedulable on small nodes.
    """
    if resources is None:
        import ray

        resources = ray.cluster_resources()
    actors = cfg.max_actors or max(1, int(float(resources.get("CPU", 1)) // 8))
    return Resources(cpus=cfg.num_cpus, actors=actors)


def hide_unembedded(batch: pd.DataFrame, rule: dict[str, Any]) -> pd.DataFrame:
    """Move aside the text of pages the rule does not send to the embedder."""
    embed = SelectionRule.from_dict(rule).to_embed(batch)
    out = batch.copy()
    out[HIDDEN_TEXT] = out["text"].where(~embed, None)
    out["text"] = out["text"].where(embed, None)
    return out


def restore_text(batch: pd.DataFrame) -> pd.DataFrame:
    out = batch.copy()
    hidden = out.pop(HIDDEN_TEXT)
    out["text"] = out["text"].where(hidden.isna(), hidden)
    return out


def without_similarity(batch: pd.DataFrame) -> pd.DataFrame:
    """Null ``seed_similarity``/``nearest_seed`` where no embedding ran (``fasttext_only``), so every
    mode writes one schema."""
    return batch.assign(seed_similarity=np.nan, nearest_seed=pd.Series([None] * len(batch), dtype=object))


def add_agent_score(ds: Any, model_uri: str, cfg: ClassifyConfig, storage_cfg: StorageConfig) -> Any:
    scorer = FrameStage(
        AgentScorer,
        needs=("text",),
        adds=pa.schema([("agent_score", pa.float64())]),
        resources=scorer_resources(cfg),
        batch_size=cfg.batch_size,
        model_uri=model_uri,
        storage_cfg=storage_cfg,
    )
    return apply(ds, scorer)


def add_selection(
    ds: Any,
    cfg: ClassifyConfig,
    model_uri: str,
    storage_cfg: StorageConfig,
    retrieve: Retrieve | None = None,
    mode: str | None = None,
    drop_rules: Sequence[Rule] | None = None,
) -> Any:
    """Append scoring, (cascade-gated) embedding and selection to a dataset of extracted pages.

    Reads ``text`` and the tags ``drop_rules`` need (default: the extraction's verdict in
    ``drop_reason``); adds ``agent_score``, ``seed_similarity``, ``nearest_seed`` and the verdict
    (``selected``, ``stream``, ``drop_reason``) of one :class:`~raypipe.select.Select` over
    ``drop_rules`` and the fitted agent rule. ``mode`` defaults to ``cfg.mode``; the thresholds
    always come from the model's metrics.json.
    """
    rule = load_rule(model_uri, storage_cfg).with_mode(mode or cfg.mode).to_dict()
    ds = add_agent_score(ds, model_uri, cfg, storage_cfg)
    if rule["mode"] != "fasttext_only":
        if retrieve is None:
            raise ValueError(f"classify mode {rule['mode']} embeds pages: pass the retrieval stage (retrieve=...)")
        hidden = pa.schema([("text", pa.string()), (HIDDEN_TEXT, pa.string())])
        ds = apply(ds, FrameStage(hide_unembedded, needs=("text",), adds=hidden, batch_size=cfg.batch_size, rule=rule))
        ds = retrieve(ds)
        restored = pa.schema([("text", pa.string())])
        ds = apply(ds, FrameStage(restore_text, needs=("text", HIDDEN_TEXT), adds=restored, batch_size=cfg.batch_size))
    else:
        ds = apply(ds, FrameStage(without_similarity, needs=(), adds=RETRIEVAL_SCHEMA, batch_size=cfg.batch_size))
    drop_rules = list(drop_rules) if drop_rules is not None else [TagReason("drop_reason")]
    return apply(ds, Select(drop_rules, AgentRule(rule), batch_size=cfg.batch_size))
