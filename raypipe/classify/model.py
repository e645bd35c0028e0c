"""fastText training and scoring, and the model's round trip through the output store.

Why thread=1 by default: fastText's multi-threaded SGD (Hogwild) gives a different model on every
run; with one thread and a fixed seed the model is a pure function of its training lines, which
the determinism contract needs (checked: repeated trainings predict bit-identically).

fastText's SGD sometimes diverges and aborts with "Encountered NaN": rarely at dim 256 with enough
hash buckets, often at small ``dim``, and not reproducibly (the same lines and settings may pass on
the next call). ``train_fasttext`` retries each learning rate twice, then halves it; the rate that
trained the model is returned with it and recorded in metrics.json.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from raypipe.classify.preprocess import normalize_text
from raypipe.config import ClassifyConfig, StorageConfig
from raypipe.store.storage import OutputStore, filesystem

log = logging.getLogger(__name__)
AGENT = "__label__agent"
OTHER = "__label__other"
LR_ATTEMPTS = (1.0, 1.0, 0.5, 0.5, 0.25, 0.25)  # multipliers of the configured learning rate
MODEL_FILE = "model.bin"
METRICS_FILE = "metrics.json"


def train_fasttext(
    positives: Sequence[str], negatives: Sequence[str], cfg: ClassifyConfig, seed: int
) -> tuple[Any, float]:
    """Train on already-normalized texts; returns the model and the learning rate that trained it.

    Lines are shuffled by ``seed`` so the order is reproducible.
    """
    import fasttext

    lines = [f"{AGENT} {t}" for t in positives if t] + [f"{OTHER} {t}" for t in negatives if t]
    if not any(line.startswith(AGENT) for line in lines) or not any(line.startswith(OTHER) for line in lines):
        raise ValueError("fastText training needs non-empty positives and negatives")
    order = np.random.default_rng(seed).permutation(len(lines))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "train.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines[i] for i in order) + "\n")
        for attempt, factor in enumerate(LR_ATTEMPTS, start=1):
            lr = cfg.lr * factor
            try:
                model = fasttext.train_supervised(
                    path,
                    dim=cfg.dim,
                    lr=lr,
                    wordNgrams=cfg.word_ngrams,
                    minCount=cfg.min_count,
                    bucket=cfg.bucket,
                    epoch=cfg.epoch,
                    thread=cfg.threads,
                    seed=seed,
                    loss="softmax",
                    verbose=0,
                )
                return model, lr
            except RuntimeError as e:
                if "NaN" not in str(e) or attempt == len(LR_ATTEMPTS):
                    raise
                log.warning("fastText training diverged at lr=%g (attempt %d); retrying", lr, attempt)
    raise AssertionError("unreachable")


def agent_proba(model: Any, texts: Sequence[str | None], max_tokens: int) -> np.ndarray:
    """P(agent) per text; NaN for a missing text or one with no tokens (there is nothing to score)."""
    normalized = [normalize_text(t or "", max_tokens) if isinstance(t, str) else "" for t in texts]
    scores = np.full(len(normalized), np.nan)
    todo = [i for i, t in enumerate(normalized) if t]
    if todo:
        labels, probs = model.predict([normalized[i] for i in todo], k=2)
        for i, labs, ps in zip(todo, labels, probs, strict=True):
            scores[i] = float(dict(zip(labs, ps, strict=True)).get(AGENT, 0.0))
    return np.clip(scores, 0.0, 1.0)  # fastText's softmax can overshoot 1 by float error


def save_model(model: Any, metrics: dict[str, Any], store: OutputStore, folder: str) -> str:
    """Write ``<folder>/model.bin`` and ``<folder>/metrics.json`` atomically; returns the model URI."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, MODEL_FILE)
        model.save_model(path)
        with open(path, "rb") as f:
            uri = store.write_bytes(f"{folder.strip('/')}/{MODEL_FILE}", f.read())
    store.write_text(f"{folder.strip('/')}/{METRICS_FILE}", json.dumps(metrics, indent=1, sort_keys=True))
    return uri


def read_uri(uri: str, storage_cfg: StorageConfig) -> bytes:
    fs, path = filesystem(uri, storage_cfg)
    with fs.open(path, "rb") as f:
        return f.read()


def load_model(model_uri: str, storage_cfg: StorageConfig) -> tuple[Any, dict[str, Any]]:
    """Load a model (and the metrics.json beside it) from any URI the storage layer reads.

    fastText only loads from a local file, so the bytes go through a private temporary file.
    """
    import fasttext

    metrics = json.loads(read_uri(model_uri.rsplit("/", 1)[0] + "/" + METRICS_FILE, storage_cfg))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, MODEL_FILE)
        with open(path, "wb") as f:
            f.write(read_uri(model_uri, storage_cfg))
        return fasttext.load_model(path), metrics
