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

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from raypipe.classify.classifier import load_rule
from raypipe.classify.rule import SelectionRule
from raypipe.classify.stage import AgentScorer
from raypipe.config import ClassifyConfig, StorageConfig
from raypipe.stage import LIGHT_TASK_CPUS

HIDDEN_TEXT = "_unembedded_text"
Retrieve = Callable[[Any], Any]


def scorer_map_kwargs(cfg: ClassifyConfig, resources: dict[str, float] | None = None) -> dict[str, Any]:
    """``map_batches`` kwargs for AgentScorer: a small autoscaling pool of fractional-CPU actors.

    fastText scores thousands of pages per second per core, far faster than extraction, so one
    actor per 8 CPUs is plenty, and fractional CPUs keep read tasks schedulable on small nodes.
    """
    from ray.data import ActorPoolStrategy

    if resources is None:
        import ray

        resources = ray.cluster_resources()
    actors = cfg.max_actors or max(1, int(float(resources.get("CPU", 1)) // 8))
    return {
        "compute": ActorPoolStrategy(min_size=1, max_size=actors),
        "num_cpus": cfg.num_cpus,
        "batch_size": cfg.batch_size,
        "batch_format": "pandas",
    }


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


def apply_rule(batch: pd.DataFrame, rule: dict[str, Any]) -> pd.DataFrame:
    """Selection stage: ``selected`` and ``drop_reason`` (plus null similarity columns if no embedding ran)."""
    out = batch.copy()
    if "seed_similarity" not in out:
        out["seed_similarity"] = np.nan
    if "nearest_seed" not in out:
        out["nearest_seed"] = pd.Series([None] * len(out), index=out.index, dtype=object)
    return SelectionRule.from_dict(rule).apply(out)


def add_agent_score(ds: Any, model_uri: str, cfg: ClassifyConfig, storage_cfg: StorageConfig) -> Any:
    return ds.map_batches(
        AgentScorer,
        fn_constructor_kwargs={"model_uri": model_uri, "storage_cfg": storage_cfg},
        **scorer_map_kwargs(cfg),
    )


def add_selection(
    ds: Any,
    cfg: ClassifyConfig,
    model_uri: str,
    storage_cfg: StorageConfig,
    retrieve: Retrieve | None = None,
    mode: str | None = None,
) -> Any:
    """Append scoring, (cascade-gated) embedding and selection to a dataset of extracted pages.

    Reads ``text`` and, if present, ``drop_reason`` (and ``quality_ok`` through the retrieval
    stage); adds ``agent_score``, ``seed_similarity``, ``nearest_seed``, ``selected`` and fills
    ``drop_reason`` for every page not selected. ``mode`` defaults to ``cfg.mode``; the
    thresholds always come from the model's metrics.json.
    """
    rule = load_rule(model_uri, storage_cfg).with_mode(mode or cfg.mode).to_dict()
    ds = add_agent_score(ds, model_uri, cfg, storage_cfg)
    if rule["mode"] != "fasttext_only":
        if retrieve is None:
            raise ValueError(f"classify mode {rule['mode']} embeds pages: pass the retrieval stage (retrieve=...)")
        ds = ds.map_batches(
            hide_unembedded,
            fn_kwargs={"rule": rule},
            batch_format="pandas",
            batch_size=cfg.batch_size,
            num_cpus=LIGHT_TASK_CPUS,
        )
        ds = retrieve(ds)
        ds = ds.map_batches(restore_text, batch_format="pandas", batch_size=cfg.batch_size, num_cpus=LIGHT_TASK_CPUS)
    return ds.map_batches(
        apply_rule, fn_kwargs={"rule": rule}, batch_format="pandas", batch_size=cfg.batch_size, num_cpus=LIGHT_TASK_CPUS
    )
