"""The scoring stage: a callable class that Ray Data runs on a CPU actor pool.

The model is loaded once per actor in ``__init__`` from the output store (workers never rely on
the driver's working directory), and the preprocessing settings come from the metrics.json saved
with the model, so scoring always normalizes text exactly as training did.
"""

from __future__ import annotations

import pandas as pd

from raypipe.classify.model import agent_proba, load_model
from raypipe.config import StorageConfig


class AgentScorer:
    """Adds ``agent_score``: P(agent) from the fastText model, NaN for a page without text."""

    def __init__(self, model_uri: str, storage_cfg: StorageConfig):
        self.model, self.metrics = load_model(model_uri, storage_cfg)
        self.max_tokens = int(self.metrics["config"]["max_tokens"])

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        out = batch.copy()
        texts = batch["text"].tolist() if "text" in batch else [None] * len(batch)
        out["agent_score"] = agent_proba(self.model, texts, self.max_tokens)
        return out
