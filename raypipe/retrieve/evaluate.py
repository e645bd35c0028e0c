"""Held-out evaluation of ``seed_similarity``: can it tell API documentation from general web text?

Positives are API docs held *out* of the index (a share of the library reference pages and of
the Gorilla docs, chosen by a hash of their id, plus every other seed that names the same API, so
the index never contains them). Negatives are general web pages: real HTML pages reduced to text
with resiliparse's main-content extraction, C4 documents and Wikipedia articles. Everything is
split into dev and test halves by hash: choices are made on dev, the number reported is test.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

HELD_OUT_SOURCES = ("api_docs_pypi", "gorilla_api_docs")


def bucket(key: str, salt: str) -> float:
    """A stable number in [0, 1) for ``key``: the same split on every run and machine."""
    return int(hashlib.sha1(f"{salt}:{key}".encode()).hexdigest()[:8], 16) / 0x100000000


def package_of(text: str) -> str:
    """The library a reference page documents: its ``<package> <version> documentation`` header."""
    return text.split(" ", 1)[0]


def held_out_split(
    seeds: pd.DataFrame,
    share: float = 0.2,
    library_share: float = 0.5,
    sources: tuple[str, ...] = HELD_OUT_SOURCES,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(seeds to index, held-out positives); seeds naming a held-out API are removed from the index.

    Library reference pages are held out by *package* (all pages of a held-out library), since the
    web pages we hunt document libraries the seeds do not cover; Gorilla docs by id. There are few
    libraries, hence their larger share.
    """
    library = seeds["schema"].eq("library_doc")
    key = seeds["id"].where(~library, seeds["text"].map(package_of))
    cut = pd.Series(np.where(library, library_share, share), index=seeds.index)
    held = seeds["source"].isin(sources) & (key.map(lambda k: bucket(k, "heldout")) < cut)
    names = {a[0] for a in seeds.loc[held, "apis"] if len(a)}
    leaks = ~held & seeds["apis"].map(lambda apis: bool(names.intersection(apis)))
    return seeds[~held & ~leaks].reset_index(drop=True), seeds[held].reset_index(drop=True)


def web_negatives(data: Path, limit_per_source: int | None = None) -> pd.DataFrame:
    """General web text from ../shared/data: extracted HTML pages, C4 and Wikipedia (>= 50 words).

    With ``limit_per_source``, a fixed hash-ordered sample is taken from each source before any
    extraction work is done.
    """
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    def first(items: list[tuple[str, object]], salt: str) -> list[tuple[str, object]]:
        ranked = sorted(items, key=lambda kv: bucket(kv[0], salt))
        return ranked[: limit_per_source * 2] if limit_per_source else ranked

    def html_text(path: Path) -> str:
        raw = gzip.decompress(path.read_bytes())
        return extract_plain_text(bytes_to_str(raw, detect_encoding(raw)), main_content=True)

    rows = []
    for index in sorted((data / "html").glob("*/index.jsonl")):
        entries = [json.loads(line) for line in index.read_text().splitlines() if line.strip()]
        for url, entry in first([(e["url"], e) for e in entries], "neg"):
            rows.append(("html/" + index.parent.name, url, html_text(index.parent / entry["file"])))
    with gzip.open(data / "mix" / "text" / "c4_demo.jsonl.gz", "rt") as f:
        c4 = [(f"c4:{i}", json.loads(line)["text"]) for i, line in enumerate(f)]
    with gzip.open(data / "mix" / "text" / "wiki_demo.txt.gz", "rt") as f:
        wiki = [(f"wiki:{i}", line) for i, line in enumerate(f) if line.strip()]
    rows += [("c4", k, t) for k, t in first(c4, "neg")] + [("wiki", k, t) for k, t in first(wiki, "neg")]
    df = pd.DataFrame(rows, columns=["source", "id", "text"])
    df = df[df["text"].str.split().str.len() >= 50]
    if limit_per_source:
        df = df.groupby("source", sort=True).head(limit_per_source)
    return df.reset_index(drop=True)


def dev_test(frame: pd.DataFrame) -> pd.Series:
    """``"dev"`` or ``"test"`` per row, by a hash of its id."""
    return frame["id"].map(lambda i: "dev" if bucket(str(i), "devtest") < 0.5 else "test")


def roc_auc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    pos, neg = np.asarray(positive_scores, float), np.asarray(negative_scores, float)
    ranks = pd.Series(np.concatenate([pos, neg])).rank().to_numpy()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))
