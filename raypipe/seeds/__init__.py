"""Seed corpus: loaders per schema (API docs, trajectories), the module harvester, ``load_seeds``."""

from raypipe.seeds.harvest import harvest_api_docs
from raypipe.seeds.load import dedup_seeds, expand_seed_sources, load_seed_file, load_seeds
from raypipe.seeds.records import SEED_COLUMNS, LoadReport, SeedFormatError, SeedSourceError

__all__ = [
    "SEED_COLUMNS",
    "LoadReport",
    "SeedFormatError",
    "SeedSourceError",
    "dedup_seeds",
    "expand_seed_sources",
    "harvest_api_docs",
    "load_seed_file",
    "load_seeds",
]
