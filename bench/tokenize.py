"""Tokens per second per core of the tokenizer stage against the plain tokenizer loop (target >= 0.8x).

Run from the repository root (one run, ~3 minutes on 2 shared cores):

    PYTHONPATH=$PWD python bench/tokenize.py [--repeat 3] [--rounds 3]

Input: every real document of ../shared/data/mix (code and text) and the PyPI library docs seeds,
repeated ``--repeat`` times.

Per core means per CPU-second: this machine is shared, and wall-clock rates swing by 3x with the
load of other users' processes, while CPU time counts only the time a process actually ran.

- floor: ``encode_ordinary`` over the texts in one Python loop (LLaMA-3 vocabulary), one thread.
- stage in-process: ``TokenizeStage`` over pandas batches (EOS appended, int32 arrays), timed
  alternately with the floor batch by batch.
- stage on Ray Data: ``tokenize_streams`` (the phase's own plan: normalise, actor pool, drop text)
  with one tokenizer actor of one CPU; its CPU time is the fused normalise+tokenize operator's
  "remote cpu time" from Ray Data's own stats (batching and Arrow conversion in the actor
  included). The input is split in ``--rounds`` parts, each run right after the floor on the same
  part. The end-to-end wall-clock rate (actor start-up included) is printed too.
- peer: HF ``tokenizers`` with the same vocabulary (converted from the same BPE file), one thread,
  on the first part against the floor on that part.

The last line is ``tokenize vs plain loop: <ratio>x`` (the stage in its Ray Data actor / floor).
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
import re  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # HF tokenizers: one thread, for a per-core figure

import pandas as pd  # noqa: E402

from raypipe.config import RunConfig, TokenizerConfig  # noqa: E402
from raypipe.shards.tokenizer import LLAMA3_PATTERN, TokenizeStage, llama3_model_path, load_tokenizer  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
OPERATOR_CPU = re.compile(
    r"Operator \d+ [^\n]*_StageActor[^\n]*\n(?:\*[^\n]*\n)*?\* Remote cpu time: .*? ([\d.]+)(us|ms|s) total"
)


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
    """Tokens and CPU seconds of the floor."""
    encoding = load_tokenizer(TokenizerConfig()).encode_batch.encoding
    start = time.process_time()
    n = sum(len(encoding.encode_ordinary(t)) for t in texts)
    return n, time.process_time() - start


def stage_in_process(texts: list[str], batch_size: int) -> tuple[int, float, float]:
    """Tokens, CPU seconds of the stage, CPU seconds of the floor: alternating batch by batch."""
    encoding = load_tokenizer(TokenizerConfig()).encode_batch.encoding
    stage = TokenizeStage(TokenizerConfig())
    frame = pd.DataFrame({"text": texts})
    n, t_stage, t_floor = 0, 0.0, 0.0
    for i in range(0, len(frame), batch_size):
        batch = frame.iloc[i : i + batch_size].copy()
        start = time.process_time()
        n += int(stage(batch)["n_tokens"].sum()) - len(batch)
        t_stage += time.process_time() - start
        start = time.process_time()
        for text in batch["text"].tolist():
            encoding.encode_ordinary(text)
        t_floor += time.process_time() - start
    return n, t_stage, t_floor


def operator_cpu_seconds(stats: str) -> float:
    """The tokenizer operator's total remote CPU time, from Ray Data's own execution stats."""
    found = OPERATOR_CPU.search(stats)
    if not found:
        raise RuntimeError("Ray Data stats no longer report the tokenizer operator's remote cpu time")
    return float(found.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[found.group(2)]


def ray_stage_runner(batch_size: int):
    """Runs the phase's tokenize plan on one actor: returns (tokens, wall seconds, actor CPU seconds)."""
    import ray

    from raypipe.phases.shard import tokenize_streams

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    cfg = RunConfig.model_validate(
        {"input": "-", "output": "/tmp/unused", "tokenizer": {"max_actors": 1, "actor_cpus": 1.0}}
    )
    cfg.tokenizer.batch_size = batch_size

    def run(texts: list[str]) -> tuple[int, float, float]:
        frame = pd.DataFrame({"doc_id": [str(i) for i in range(len(texts))], "url": "", "text": texts})
        docs = ray.data.from_pandas(frame).materialize()
        start = time.perf_counter()
        out = tokenize_streams({"text": docs}, cfg).materialize()
        elapsed = time.perf_counter() - start
        return int(out.sum("n_tokens")) - len(texts), elapsed, operator_cpu_seconds(out.stats())

    run(["warm up the worker pool"])
    return run


def hf_peer(texts: list[str]) -> tuple[int, float]:
    from transformers.convert_slow_tokenizer import TikTokenConverter

    hf = TikTokenConverter(vocab_file=str(llama3_model_path()), pattern=LLAMA3_PATTERN).converted()
    start = time.process_time()
    n = sum(len(e.ids) for e in hf.encode_batch(texts, add_special_tokens=False))
    return n, time.process_time() - start


def main() -> None:
    import ray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="times the real documents are repeated")
    parser.add_argument("--rounds", type=int, default=3, help="alternating floor / Ray Data rounds")
    parser.add_argument("--batch-size", type=int, default=TokenizerConfig().batch_size)
    args = parser.parse_args()
    texts = load_texts(args.repeat)
    print(f"input: {len(texts):,} documents, {sum(map(len, texts)) / 1e6:.1f} M characters", flush=True)

    n_stage, cpu_stage, cpu_interleaved = stage_in_process(texts, args.batch_size)
    parts = [texts[i :: args.rounds] for i in range(args.rounds)]
    run_on_ray = ray_stage_runner(args.batch_size)
    n_floor = n_ray = 0
    cpu_floor = wall_ray = cpu_actor = 0.0
    try:
        for part in parts:
            n, cpu = plain_loop(part)
            n_floor, cpu_floor = n_floor + n, cpu_floor + cpu
            n, wall, cpu = run_on_ray(part)
            n_ray, wall_ray, cpu_actor = n_ray + n, wall_ray + wall, cpu_actor + cpu
    finally:
        ray.shutdown()
    n_part, cpu_part = plain_loop(parts[0])
    n_hf, cpu_hf = hf_peer(parts[0])
    assert n_stage == n_floor == n_ray and n_hf == n_part, (n_floor, n_stage, n_ray, n_part, n_hf)

    floor = n_floor / cpu_floor
    print(f"tokens: {n_floor:,} (LLaMA-3, without EOS), Ray Data in {args.rounds} rounds")
    print(f"plain loop (encode_ordinary): {floor / 1e6:.2f} M tokens per CPU-second")
    print(f"stage in-process (TokenizeStage): {n_stage / cpu_stage / 1e6:.2f} M tokens per CPU-second")
    print(f"stage on Ray Data, in its actor: {n_ray / cpu_actor / 1e6:.2f} M tokens per CPU-second")
    print(f"stage on Ray Data, end to end on 1 actor: {n_ray / wall_ray / 1e6:.2f} M tokens/s wall clock")
    print(f"HF tokenizers, same vocabulary: {n_hf / cpu_hf / 1e6:.2f} M tokens per CPU-second")
    print(f"tiktoken vs HF tokenizers: {cpu_hf / cpu_part:.2f}x")
    print(f"stage in-process vs plain loop, interleaved batch by batch: {cpu_interleaved / cpu_stage:.2f}x")
    print(f"tokenize vs plain loop: {n_ray / cpu_actor / floor:.2f}x")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
