"""Tokens per second per core of the tokenizer stage against the plain tokenizer loop (target >= 0.8x).

Run from the repository root (one run, ~1-2 minutes on 2 cores):

    PYTHONPATH=$PWD python bench/tokenize.py [--repeat 3]

Input: every real document of ../shared/data/mix (code and text) and the PyPI library docs seeds,
repeated ``--repeat`` times so actor start-up is amortised as it is on a real corpus.

- floor: ``encode_ordinary`` over the texts in one Python loop, one core (LLaMA-3 vocabulary),
  measured before and after the stage; the faster of the two is used, so noise cannot flatter us.
- stage in-process: ``TokenizeStage`` over pandas batches (EOS appended, int32 arrays), one core.
- stage on Ray Data: ``tokenize_streams`` (the phase's own plan: normalise, actor pool, drop text)
  with one tokenizer actor of one CPU, from materialized input to materialized output, start-up
  included. Its tokens/s is per core because one actor runs the tokenizer.
- peer: HF ``tokenizers`` with the same vocabulary (converted from the same BPE file), one thread.

The last line is ``tokenize vs plain loop: <ratio>x`` (Ray Data stage / floor).
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's folder comes first on sys.path, where "tokenize.py" would shadow the
# standard library's tokenize module (imported by inspect, linecache, ...): take the folder off.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # HF tokenizers: one thread, for a per-core figure

import pandas as pd  # noqa: E402

from raypipe.config import RunConfig, TokenizerConfig  # noqa: E402
from raypipe.shards.tokenizer import LLAMA3_PATTERN, TokenizeStage, llama3_model_path, load_tokenizer  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load_texts(repeat: int) -> list[str]:
    texts: list[str] = []
    for path in [
        SHARED / "mix" / "code" / "pypi_python_code.jsonl.gz",
        SHARED / "mix" / "text" / "c4_demo.jsonl.gz",
        SHARED / "seeds" / "api_docs_pypi" / "python_library_docs.jsonl.gz",
    ]:
        with gzip.open(path, "rt") as f:
            texts += [json.loads(line)["text"] for line in f]
    with gzip.open(SHARED / "mix" / "text" / "wiki_demo.txt.gz", "rt") as f:
        texts += [line.rstrip("\n") for line in f]
    return texts * repeat


def plain_loop(texts: list[str]) -> tuple[int, float]:
    encoding = load_tokenizer(TokenizerConfig()).encode_batch.encoding
    start = time.perf_counter()
    n = sum(len(encoding.encode_ordinary(t)) for t in texts)
    return n, time.perf_counter() - start


def stage_in_process(texts: list[str], batch_size: int) -> tuple[int, float]:
    stage = TokenizeStage(TokenizerConfig())
    frame = pd.DataFrame({"text": texts})
    start = time.perf_counter()
    n = 0
    for i in range(0, len(frame), batch_size):
        n += int(stage(frame.iloc[i : i + batch_size].copy())["n_tokens"].sum())
    return n - len(texts), time.perf_counter() - start


def stage_on_ray(texts: list[str], batch_size: int) -> tuple[int, float]:
    import ray

    from raypipe.shards.phase import tokenize_streams

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        frame = pd.DataFrame({"doc_id": [str(i) for i in range(len(texts))], "url": "", "text": texts})
        docs = ray.data.from_pandas(frame).materialize()
        cfg = RunConfig.model_validate(
            {"input": "-", "output": "/tmp/unused", "tokenizer": {"max_actors": 1, "actor_cpus": 1.0}}
        )
        cfg.tokenizer.batch_size = batch_size
        start = time.perf_counter()
        out = tokenize_streams({"text": docs}, cfg)
        elapsed = time.perf_counter() - start
        return int(out.sum("n_tokens")) - len(texts), elapsed
    finally:
        ray.shutdown()


def hf_peer(texts: list[str]) -> tuple[int, float]:
    from transformers.convert_slow_tokenizer import TikTokenConverter

    hf = TikTokenConverter(vocab_file=str(llama3_model_path()), pattern=LLAMA3_PATTERN).converted()
    start = time.perf_counter()
    n = sum(len(e.ids) for e in hf.encode_batch(texts, add_special_tokens=False))
    return n, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="times the real documents are repeated")
    parser.add_argument("--batch-size", type=int, default=TokenizerConfig().batch_size)
    args = parser.parse_args()
    texts = load_texts(args.repeat)
    print(f"input: {len(texts):,} documents, {sum(map(len, texts)) / 1e6:.1f} M characters", flush=True)

    n_floor, t_before = plain_loop(texts)
    n_stage, t_stage = stage_in_process(texts, args.batch_size)
    n_ray, t_ray = stage_on_ray(texts, args.batch_size)
    _, t_after = plain_loop(texts)
    n_hf, t_hf = hf_peer(texts)
    assert n_stage == n_floor == n_ray, (n_floor, n_stage, n_ray)

    floor = n_floor / min(t_before, t_after)
    rates = {
        "plain loop (encode_ordinary, 1 core)": floor,
        "stage in-process (TokenizeStage, 1 core)": n_stage / t_stage,
        "stage on Ray Data (1 actor x 1 CPU, start-up included)": n_ray / t_ray,
        "HF tokenizers, same vocabulary (1 thread)": n_hf / t_hf,
    }
    print(f"tokens: {n_floor:,} (LLaMA-3, without EOS); floor runs {t_before:.2f}s and {t_after:.2f}s")
    for name, rate in rates.items():
        print(f"{name}: {rate / 1e6:.2f} M tokens/s")
    print(f"tiktoken vs HF tokenizers: {floor / (n_hf / t_hf):.2f}x")
    print(f"stage in-process vs plain loop: {n_stage / t_stage / floor:.2f}x")
    print(f"tokenize vs plain loop: {n_ray / t_ray / floor:.2f}x")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
