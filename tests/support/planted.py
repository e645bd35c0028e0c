"""Planted duplicates and benchmark leaks, built from the real texts in ../shared/data.

Used by the clean-phase tests and by ``bench/dedup.py``. Every planted document records what it
is (``kind``) and which cluster it belongs to (``cluster``: the ``doc_id`` of the original), so a
test can check the phase's decisions against the truth.
"""

from __future__ import annotations

import functools
import gzip
import json
import random
from pathlib import Path

import numpy as np
import pandas as pd

from raypipe.clean.decontam import DecontamIndex, build_index
from raypipe.config import DecontamConfig, StorageConfig
from raypipe.dedup.precision import exact_jaccard

CHROME_TOP = "Home | News | Sport | Weather | Contact us | Sign in | Subscribe to our newsletter"
CHROME_BOTTOM = "Copyright 2024 Example Media Group. All rights reserved. Privacy policy | Terms of use | Cookies"


def base_texts(data: Path, min_words: int = 150) -> list[tuple[str, str]]:
    """(source, text) of real documents: C4 pages, article bodies, Wikipedia chunks and code files."""
    out: list[tuple[str, str]] = []
    with gzip.open(data / "mix/text/c4_demo.jsonl.gz", "rt") as f:
        out += [("c4", json.loads(line)["text"]) for line in f]
    truth = json.loads(gzip.decompress((data / "html/scrapinghub_aeb/ground-truth.json.gz").read_bytes()))
    out += [("article", v["articleBody"]) for v in sorted(truth.values(), key=lambda v: v["url"])]
    with gzip.open(data / "mix/text/wiki_demo.txt.gz", "rt") as f:
        for line in f:
            words = line.split()
            out += [("wiki", " ".join(words[i : i + 600])) for i in range(0, len(words) - 300, 600)]
    with gzip.open(data / "mix/code/pypi_python_code.jsonl.gz", "rt") as f:
        out += [("code", json.loads(line)["text"]) for line in f]
    return [(s, t) for s, t in out if len(t.split()) >= min_words]


def mutate(text: str, share: float, rng: random.Random) -> str:
    """Replace ``share`` of the words with other words of the same text, and add page chrome
    (navigation and footer lines) unless it is there already."""
    words = text.split()
    for i in rng.sample(range(len(words)), max(1, int(len(words) * share))):
        words[i] = rng.choice(words) + "x"
    body = " ".join(words)
    return body if body.startswith(CHROME_TOP.split()[0]) else f"{CHROME_TOP}\n{body}\n{CHROME_BOTTOM}"


def copies_around_threshold(text: str, threshold: float, seed: int = 7, tries: int = 200) -> tuple[str, str]:
    """Two edited copies of ``text`` that a MinHash estimate misjudges: the first has exact 5-gram
    Jaccard just under ``threshold`` (within 0.03) but an estimate at or above it, the second is
    just over (within 0.03) with an estimate below. Searched among ``tries`` random edits whose
    share is aimed at the threshold; fails loudly if none qualifies."""
    from raypipe.config import DedupConfig
    from raypipe.dedup.minhash import DedupFingerprinter, estimated_jaccard

    rng = random.Random(seed)
    copies = [mutate(text, rng.uniform(0.03, 0.045), rng) for _ in range(tries)]
    fp = DedupFingerprinter(DedupConfig(shingle_words=5))(pd.DataFrame({"text": [text, *copies]}))
    sketches = [np.frombuffer(s, dtype=np.uint8) for s in fp["minhash_sketch"]]
    under = over = None
    for copy, sketch in zip(copies, sketches[1:], strict=True):
        exact = exact_jaccard(text, copy, 5)
        est = float(estimated_jaccard(sketches[0][None], sketch[None])[0])
        if under is None and threshold - 0.03 <= exact < threshold <= est:
            under = copy
        if over is None and est < threshold <= exact < threshold + 0.03:
            over = copy
    if under is None or over is None:
        raise AssertionError(f"no copy misjudged on both sides of {threshold} in {tries} tries")
    return under, over


def benchmark_questions(data: Path) -> dict[str, tuple[str, str]]:
    """One real test question per benchmark: name -> (item id as reported, question text)."""
    bench = data / "benchmarks"

    def lines(rel: str) -> list[dict]:
        return [json.loads(x) for x in gzip.open(bench / rel, "rt") if x.strip()]

    bfcl = next(
        r for r in lines("bfcl_v4/BFCL_v4_live_multiple.json.gz") if len(r["question"][0][0]["content"].split()) > 20
    )
    dialogue = next(
        r for r in lines("api_bank_test/lv1_lv2_dialogues.jsonl.gz") if len(r["turns"][0]["text"].split()) >= 15
    )
    dialogue_id = dialogue["source_path"].rsplit("/", 1)[-1].removesuffix(".jsonl")
    apibench = lines("apibench_eval/questions_torchhub_0_shot.jsonl.gz")[4]
    tool = json.load(gzip.open(bench / "toolbench_tooleval/default_evalset__gpt-3.5-turbo_CoT__G2_category.json.gz"))
    tool_id = sorted(tool)[1]
    functions = json.load(gzip.open(bench / "openfunctions_v1/gorilla_openfunctions_v1_test.json.gz"))
    return {
        "bfcl": (bfcl["id"], bfcl["question"][0][0]["content"]),
        "api_bank": (f"lv1_lv2_dialogues:{dialogue_id}", dialogue["turns"][0]["text"]),
        "apibench": (f"questions_torchhub_0_shot:{apibench['question_id']}", apibench["text"].replace("\\n", "")),
        "toolbench": (f"G2_category:{tool_id}", tool[tool_id]["query"]),
        "openfunctions": ("gorilla_openfunctions_v1_test:7", functions[7]["question"]),
    }


def seed_api_docs(data: Path, n: int) -> list[str]:
    """Clean Gorilla API documentation records rendered as pages (shared knowledge, not leaks)."""
    out = []
    for name in ("huggingface_api", "tensorflowhub_api", "torchhub_api"):
        with gzip.open(data / f"seeds/gorilla_api_docs/{name}.jsonl.gz", "rt") as f:
            recs = [json.loads(line) for line in f]
        out += ["\n".join(f"{k}: {v}" for k, v in r.items()) for r in recs[: n // 3 + 1]]
    return out[:n]


def planted_corpus(data: Path, unique: int, exact_clusters: int, near_clusters: int, seed: int = 7) -> pd.DataFrame:
    """Documents with planted exact copies, near copies (chains of edits), leaks and seed docs.

    Columns: ``doc_id, url, text, stream, drop_reason, kind, cluster, benchmark, item``.
    """
    rng = random.Random(seed)
    texts = base_texts(data)
    rng.shuffle(texts)
    rows: list[dict] = []

    def add(text: str, kind: str, cluster: str | None = None, stream: str = "text", **extra: str) -> str:
        doc_id = f"doc-{len(rows):06d}-{rng.getrandbits(32):08x}"
        rows.append(
            {
                "doc_id": doc_id,
                "url": f"https://site{len(rows) % 17}.example/{doc_id}",
                "text": text,
                "stream": stream,
                "drop_reason": None,
                "kind": kind,
                "cluster": cluster or doc_id,
                "benchmark": extra.get("benchmark"),
                "item": extra.get("item"),
            }
        )
        return doc_id

    pool = iter(texts)
    for _ in range(unique):
        add(next(pool)[1], "unique")
    for _ in range(exact_clusters):
        text = next(pool)[1]
        first = add(text, "exact")
        add(text, "exact", first)
        add("  " + text.upper().replace(" ", "\n "), "exact", first)  # same after normalization
    long_texts = iter(t for _, t in texts[::-1] if len(t.split()) >= 400)
    for _ in range(near_clusters):
        text = next(long_texts)
        first = add(text, "near")
        previous = text
        for _ in range(2):  # a chain: each copy edits the previous one
            previous = mutate(previous, 0.01, rng)
            add(previous, "near", first)
    for name, (item, question) in benchmark_questions(data).items():
        source = next(pool)[1].split()
        middle = len(source) // 2
        leaked = " ".join(source[:middle]) + f"\n\nQ: {question}\n\n" + " ".join(source[middle:])
        add(leaked, "leak", stream="agent", benchmark=name, item=item)
    for doc in seed_api_docs(data, 6):
        add(doc, "seed_doc", stream="agent")
    add(next(pool)[1], "dropped_earlier")
    rows[-1]["drop_reason"] = "quality"
    return pd.DataFrame(rows)


def max_cross_cluster_jaccard(corpus: pd.DataFrame, shingle_words: int) -> float:
    """Largest exact Jaccard between documents of different clusters (should be far below 0.8)."""
    texts = corpus[["cluster", "text"]].drop_duplicates("cluster")
    best = 0.0
    items = list(texts.itertuples(index=False))
    for i, a in enumerate(items):
        for b in items[i + 1 :]:
            best = max(best, exact_jaccard(a.text, b.text, shingle_words))
    return best


@functools.cache
def benchmark_index(data: Path) -> DecontamIndex:
    """The decontamination index of ../shared/data/benchmarks, built once per test process."""
    return build_index(DecontamConfig(benchmarks=str(data / "benchmarks")), StorageConfig())
