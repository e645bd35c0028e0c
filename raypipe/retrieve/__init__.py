"""Seed index (embed, FAISS, persist) and the retrieval stage that scores pages against it."""

from raypipe.retrieve.index import SeedIndex, build_seed_index, build_seed_index_on_cluster, load_seed_index
from raypipe.retrieve.stage import SeedRetriever, add_retrieval, retrieval_resources, tokenize_pages

__all__ = [
    "SeedIndex",
    "SeedRetriever",
    "add_retrieval",
    "build_seed_index",
    "build_seed_index_on_cluster",
    "load_seed_index",
    "retrieval_resources",
    "tokenize_pages",
]
