"""Documents per second of the retrieval stage vs a plain ``SentenceTransformer.encode`` loop.

Same texts (real web pages and API docs from ../shared/data), same model, same device (auto:
CUDA when present, else CPU), one process, one run each after a short warm-up. The stage is
``SeedRetriever.__call__`` on pandas batches: chunking tokenizer, model forward, FAISS search and
the per-page max; the plain loop only encodes (truncating every page at max_seq_length).

Two stage settings are timed: ``max_chunks=1`` does the same model work as the plain loop (this is
the overhead ratio, the last line), and the configured default chunking, which embeds more of
each long page on purpose.

    PYTHONPATH=$PWD python bench/retrieve.py [--docs 96] [--device auto]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from raypipe.config import RetrieveConfig, SeedsConfig, StorageConfig
from raypipe.retrieve.embed import pick_device, resolve_model
from raypipe.retrieve.evaluate import web_negatives
from raypipe.retrieve.index import build_seed_index
from raypipe.retrieve.stage import SeedRetriever
from raypipe.seeds import load_seeds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--docs", type=int, default=96, help="pages timed (use thousands on a GPU)")
    ap.add_argument("--seeds", type=int, default=200, help="seeds in the index")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    data = Path(args.data)
    device = pick_device(args.device)

    pages = web_negatives(data)
    seeds = load_seeds(SeedsConfig(sources=[str(data / "seeds")], harvest_modules=[]), StorageConfig())
    docs = pd.concat([pages[["text"]], seeds[["text"]].sample(frac=1.0, random_state=0)], ignore_index=True)
    docs = docs.sample(n=min(args.docs, len(docs)), random_state=1).reset_index(drop=True)
    texts = docs["text"].tolist()
    print(f"device {device}, {len(texts)} documents, mean {sum(map(len, texts)) / len(texts):.0f} chars")

    from sentence_transformers import SentenceTransformer

    with tempfile.TemporaryDirectory() as out:
        base = RetrieveConfig(device=device, batch_size=args.batch_size)
        build_seed_index(seeds.sample(n=args.seeds, random_state=2).reset_index(drop=True), base, out, StorageConfig())
        plain = SentenceTransformer(resolve_model(base.model), device=device)
        plain.encode(texts[:8], batch_size=args.batch_size)

        started = time.perf_counter()
        for start in range(0, len(texts), args.batch_size * 4):
            plain.encode(
                texts[start : start + args.batch_size * 4], batch_size=args.batch_size, normalize_embeddings=True
            )
        plain_rate = len(texts) / (time.perf_counter() - started)

        rates = {}
        for max_chunks in (base.max_chunks, 1):
            stage = SeedRetriever(base.model_copy(update={"max_chunks": max_chunks}), out, StorageConfig())
            stage(docs[:8])
            started = time.perf_counter()
            for start in range(0, len(docs), args.batch_size * 4):
                stage(docs[start : start + args.batch_size * 4])
            rates[max_chunks] = len(texts) / (time.perf_counter() - started)

    print(f"plain encode: {plain_rate:.1f} docs/s")
    for k, rate in rates.items():
        print(f"retrieve max_chunks={k}: {rate:.1f} docs/s")
    print(f"retrieve (max_chunks={base.max_chunks}) vs plain encode: {rates[base.max_chunks] / plain_rate:.2f}x")
    print(f"retrieve vs plain encode: {rates[1] / plain_rate:.2f}x")


if __name__ == "__main__":
    main()
