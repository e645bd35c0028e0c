"""The classifier's training rounds as one Ray task: the crawl sample never passes the driver.

Why a task: the negatives are a sample of up to ``classify.negatives_sample_size`` (5,000) pages
with their text, and calibration embeds all of them with the seed index's model. On the driver
that is 5,000 documents pulled through it and an embedding model on the head node of a cluster
whose GPUs sit on workers (issue 14: the driver handles files, shards and summaries). Here the
workers that drew the sample keep it as blocks (``reservoir.sample_blocks``), one task fetches
them, trains every round and hands back only the round reports. The task asks for the GPUs a
retrieval actor asks for, so calibration embeds where retrieval does.
"""

from __future__ import annotations

import logging
from typing import Any

from raypipe.classify.reservoir import SampleBlocks, merge_sample, sample_blocks
from raypipe.config import RunConfig
from raypipe.store.parts import EXTRACTED, load_seed_table, read_parts
from raypipe.store.storage import OutputStore

log = logging.getLogger(__name__)


def train_rounds(cfg: RunConfig, blocks: SampleBlocks) -> list[Any] | None:
    """Every training round on the sample in ``blocks`` (``rounds.run_rounds``); the round reports.

    None when the sample's cutoff let too few pages through (draw again without one).
    """
    from raypipe.classify.calibrate import CalibrationSimilarity
    from raypipe.classify.classifier import load_classifier
    from raypipe.classify.rounds import run_rounds, score_frame

    pages = merge_sample(blocks)
    if pages is None:
        return None
    store = OutputStore(cfg.output, cfg.storage)
    seeds = load_seed_table(cfg, store)
    print(f"score: training on {len(seeds)} seeds against {len(pages)} sampled pages", flush=True)
    similarity = None
    if cfg.classify.mode != "fasttext_only":
        similarity = CalibrationSimilarity(cfg.retrieve, cfg.output, cfg.storage)

    def score_sample(uri: str, rule: Any) -> Any:
        return score_frame(pages, load_classifier(uri, cfg.storage), similarity)

    return run_rounds(seeds, pages, score_sample, cfg.classify, store, cfg.seed, similarity)


def train_on_worker(cfg: RunConfig, store: OutputStore, population: int, gpus: float) -> list[Any]:
    """Draw the negatives sample on the workers and train every round in one task of ``gpus`` GPUs.

    ``population``: the kept pages of the crawl (the extraction funnel's count), which bounds what
    the sample's workers keep in the object store.
    """
    import ray

    task = ray.remote(train_rounds).options(num_cpus=1, num_gpus=gpus)
    k = cfg.classify.negatives_sample_size
    reports = ray.get(task.remote(cfg, sample_blocks(read_parts(store, EXTRACTED), k, cfg.seed, population=population)))
    if reports is None:
        log.info("score: fewer than %d pages passed the sample's cutoff; drawing it again without one", k)
        reports = ray.get(task.remote(cfg, sample_blocks(read_parts(store, EXTRACTED), k, cfg.seed)))
    return reports
