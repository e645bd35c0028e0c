"""Held-out ROC AUC of seed_similarity: API docs kept out of the index vs general web pages.

Positives: reference pages of whole libraries held out of the index (the web's doc pages mostly
document libraries the seeds lack) and held-out Gorilla API docs; each group is reported apart.
Negatives: real web pages (resiliparse main-content text), C4 and Wikipedia.

Rule, fixed before any test number was seen: every variant (page chunking, seed chunking, index
composition) is scored on the dev half; the variant with the best dev AUC on the library-page
positives (ties: the cheaper one) is reported on the test half, next to the naive baseline
(first 256 tokens of a page against the first chunk of each shared seed). Test data never chooses.
Splits and samples are by hash, so reruns give the same sets. Scores are computed exactly as the
stage does (same Embedder chunks, exact inner product, max over chunks); ``--stage-check`` also
runs SeedRetriever on the test pages with the chosen settings. (This held-out-seed mode still
scores nearest seed / best chunk, the rule before issue 13.)

``--real`` (issue 13) scores real documentation pages as their sites serve them (the dev set of
bench/devset.py, or unpacked Debian ``*-doc`` packages) against ordinary web pages, with the stage's
own aggregation (``knn_mean``, ``page_scores``); it prints naive / before / after side by side on the
dev and test splits, for Python library docs and for other ecosystems, then the grid ranked on dev.

    PYTHONPATH=$PWD python -m bench.retrieval_quality [--data ../shared/data]
    PYTHONPATH=$PWD python -m bench.retrieval_quality --real --positives 80 --negatives 150  # real docs pages
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from raypipe.config import RetrieveConfig, SeedsConfig, StorageConfig
from raypipe.retrieve.embed import Embedder
from raypipe.retrieve.evaluate import bucket, dev_test, held_out_split, package_of, roc_auc, web_negatives
from raypipe.seeds import harvest_api_docs, load_seeds

HARVESTED_SOURCES = ("python_stdlib", "python_packages")  # API docs introspected from installed modules

# import names of the libraries whose docs are in seeds/api_docs_pypi: held-out ones must not be harvested
IMPORT_NAMES = {
    "aiohttp": ["aiohttp"],
    "Werkzeug": ["werkzeug"],
    "click": ["click"],
    "attrs": ["attr", "attrs"],
    "urllib3": ["urllib3"],
    "Jinja2": ["jinja2"],
    "MarkupSafe": ["markupsafe"],
    "more-itertools": ["more_itertools"],
    "pluggy": ["pluggy"],
}


def sample(df: pd.DataFrame, per_group: int, by: str, salt: str) -> pd.DataFrame:
    ranked = df.assign(_b=df["id"].map(lambda i: bucket(str(i), salt))).sort_values([by, "_b"])
    return ranked.groupby(by, sort=True).head(per_group).drop(columns="_b").reset_index(drop=True)


def embed_cached(embedder: Embedder, texts: list[str], max_chunks: int, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """Chunk vectors of ``texts`` (and their owners), reusing vectors saved by an earlier run."""
    import hashlib

    keys = [hashlib.sha1(f"{max_chunks}:{t}".encode()).hexdigest() for t in texts]
    stored: dict[str, np.ndarray] = dict(np.load(cache)) if cache.exists() else {}
    missing = [i for i, k in enumerate(keys) if k not in stored]
    if missing:
        vecs, owner = embedder.embed_texts([texts[i] for i in missing], max_chunks)
        for j, i in enumerate(missing):
            stored[keys[i]] = vecs[owner == j]
        np.savez(cache, **stored)
    parts = [stored[k] for k in keys]
    return np.concatenate(parts), np.repeat(np.arange(len(texts)), [len(p) for p in parts])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--seeds-per-source", type=int, default=300, help="index sample per seed source (0 = all)")
    ap.add_argument("--harvest-sample", type=int, default=800, help="harvested Python API docs in the +harvest index")
    ap.add_argument("--negatives-per-source", type=int, default=120)
    ap.add_argument("--gorilla-positives", type=int, default=80)
    ap.add_argument("--cache", default="/tmp/raypipe_retrieval_quality_cache.npz")
    ap.add_argument("--stage-check", action="store_true", help="also score the test pages with SeedRetriever")
    ap.add_argument("--real", action="store_true", help="real docs pages vs web pages: before / after / naive")
    ap.add_argument("--devset", default="/work/devset", help="--real: dev set of bench/devset.py, if built")
    ap.add_argument("--docs-dir", default="/tmp/rdocs/x", help="--real without a dev set: unpacked *-doc packages")
    ap.add_argument("--per-project", type=int, default=60, help="--real --docs-dir: pages taken per package")
    ap.add_argument("--positives", type=int, default=400, help="--real: docs pages per split and group at most")
    ap.add_argument("--negatives", type=int, default=600, help="--real: non-docs pages per split at most")
    ap.add_argument("--show", type=int, default=15, help="--real: grid variants printed")
    args = ap.parse_args()
    if args.real:
        real_pages_main(args)
        return
    data, cache = Path(args.data), Path(args.cache)
    started = time.monotonic()

    seeds = load_seeds(SeedsConfig(sources=[str(data / "seeds")], harvest_modules=[]), StorageConfig())
    indexed, held = held_out_split(seeds)
    if args.seeds_per_source:
        indexed = sample(indexed, args.seeds_per_source, "source", "sample")
    held_packages = sorted({package_of(t) for t in held.loc[held.schema == "library_doc", "text"]})
    harvest_cfg = SeedsConfig(harvest_modules=["@stdlib", "@installed"])
    harvest_cfg.harvest_exclude = [*harvest_cfg.harvest_exclude, *(m for p in held_packages for m in IMPORT_NAMES[p])]
    harvested = pd.DataFrame(harvest_api_docs(harvest_cfg)[0])
    harvested = sample(harvested.assign(group=1), args.harvest_sample, "group", "harvest")

    library = held[held.schema == "library_doc"]
    gorilla = sample(held[held.schema == "gorilla_api"], args.gorilla_positives, "source", "pos")
    negatives = web_negatives(data, args.negatives_per_source)
    pages = pd.concat(
        [
            library[["id", "text"]].assign(group="library", label=1),
            gorilla[["id", "text"]].assign(group="gorilla", label=1),
            negatives[["id", "text"]].assign(group=negatives["source"], label=0),
        ],
        ignore_index=True,
    )
    pages["split"] = dev_test(pages)
    print(f"held-out libraries: {held_packages}")
    print(f"index: {len(indexed)} shared seeds + {len(harvested)} harvested API docs")
    print("pages:", pages.groupby(["group", "split"]).size().unstack().to_dict("index"))

    embedder = Embedder(RetrieveConfig().model)
    seed_vecs, seed_owner = embed_cached(embedder, indexed["text"].tolist(), 4, cache)
    harvest_vecs, harvest_owner = embed_cached(embedder, harvested["text"].tolist(), 4, cache)
    page_vecs, page_owner = embed_cached(embedder, pages["text"].tolist(), 8, cache)
    page_pos = np.arange(len(page_owner)) - np.searchsorted(page_owner, page_owner)

    def first(owner: np.ndarray) -> np.ndarray:
        return np.r_[True, owner[1:] != owner[:-1]]

    is_doc = (indexed["kind"] == "api_doc").to_numpy()[seed_owner]
    indexes = {
        "shared seeds, first chunk": seed_vecs[first(seed_owner)],
        "shared seeds, <=4 chunks": seed_vecs,
        "shared api_doc seeds, <=4 chunks": seed_vecs[is_doc],
        "shared + harvested, <=4 chunks": np.concatenate([seed_vecs, harvest_vecs]),
        "shared + harvested, first chunk": np.concatenate(
            [seed_vecs[first(seed_owner)], harvest_vecs[first(harvest_owner)]]
        ),
    }
    scores: dict[tuple[str, int], np.ndarray] = {}
    for name, vectors in indexes.items():
        best_chunk = (page_vecs @ vectors.T).max(axis=1)
        for k in (1, 2, 4, 8):
            keep = page_pos < k
            per_page = pd.Series(best_chunk[keep]).groupby(page_owner[keep]).max()
            scores[(name, k)] = pages.index.map(per_page).to_numpy(float)

    def auc(s: np.ndarray, split: str, group: str) -> float:
        sel = (pages["split"] == split).to_numpy()
        pos = sel & (pages["group"] == group).to_numpy()
        neg = sel & (pages["label"] == 0).to_numpy()
        return roc_auc(s[pos], s[neg])

    dev = {v: auc(s, "dev", "library") for v, s in scores.items()}
    for (name, k), value in sorted(dev.items(), key=lambda kv: -kv[1]):
        gorilla_dev = auc(scores[(name, k)], "dev", "gorilla")
        print(f"dev AUC library {value:.4f} | gorilla {gorilla_dev:.4f} | {name}, page chunks<={k}")
    chosen = max(dev, key=lambda v: (round(dev[v], 4), -v[1]))
    naive = ("shared seeds, first chunk", 1)
    result = {
        "chosen": f"{chosen[0]}, page chunks<={chosen[1]}",
        "test_auc_library_chosen": auc(scores[chosen], "test", "library"),
        "test_auc_library_naive": auc(scores[naive], "test", "library"),
        "test_auc_gorilla_chosen": auc(scores[chosen], "test", "gorilla"),
        "test_auc_gorilla_naive": auc(scores[naive], "test", "gorilla"),
        "seconds": round(time.monotonic() - started),
    }
    if args.stage_check:
        import tempfile

        from raypipe.retrieve import SeedRetriever, build_seed_index

        index_seeds = pd.concat([indexed, harvested.drop(columns="group")]) if "harvested" in chosen[0] else indexed
        cfg = RetrieveConfig(seed_max_chunks=1 if "first" in chosen[0] else 4, max_chunks=chosen[1])
        test = pages[pages["split"] == "test"].reset_index(drop=True)
        with tempfile.TemporaryDirectory() as out:
            build_seed_index(index_seeds.reset_index(drop=True), cfg, out, StorageConfig())
            s = SeedRetriever(cfg, out, StorageConfig())(test[["text"]])["seed_similarity"].to_numpy(float)
        lib, neg = (test["group"] == "library").to_numpy(), (test["label"] == 0).to_numpy()
        result["test_auc_library_chosen_via_stage"] = roc_auc(s[lib], s[neg])
    print(json.dumps(result, indent=1))
    print(f"retrieval AUC library pages (test, chosen): {result['test_auc_library_chosen']:.4f}")
    print(f"retrieval AUC library pages (test, naive): {result['test_auc_library_naive']:.4f}")


# ---------------------------------------------------------------------------------------------
# Real documentation pages (issue 13): pages as their sites serve them, not seeds held out.

SKIP_DOC_PAGE = re.compile(
    r"(_modules|_sources|genindex|search\.html|modindex|index-all|allclasses|allpackages|-tree\.html|deprecated-list"
    r"|help-doc|constant-values|serialized-form|globals|_source\.html|/dir_|files\.html|changelog|history|changes"
    r"|news|whatsnew|contributing|conduct|license|authors|src-html|/class-use/|examples?/|doc-files|index-files"
    r"|_8h\.html|_8c\.html)",
    re.I,
)


def ecosystem_of(package: str) -> str:
    """A Debian doc package's ecosystem, from Debian's naming conventions."""
    for prefix, eco in (("python", "python"), ("libghc-", "haskell"), ("libjs-", "js"), ("ruby-", "ruby")):
        if package.startswith(prefix):
            return eco
    return "java" if package.endswith("-java-doc") else "c/c++"


def html_page_text(raw: bytes) -> str:
    """Main-content text exactly as the extract stage produces it."""
    from raypipe.extract.html import decode_html, extract_text

    return extract_text(decode_html(raw, None)[0])[0].strip()


def docs_dir_pages(root: Path, data: Path, per_project: int) -> pd.DataFrame:
    """API pages of unpacked Debian ``*-doc`` packages (``root/<package>/...html``) and the shared web pages.

    Index, search, source-listing and changelog pages are skipped; split by project, web pages by URL.
    """
    rows = []
    for proj_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = [p for p in proj_dir.rglob("*.html") if p.is_file()]
        files = [p for p in files if not SKIP_DOC_PAGE.search(str(p.relative_to(proj_dir)))]
        for f in sorted(files, key=lambda p: bucket(str(p), "pick"))[:per_project]:
            key = f"{proj_dir.name}/{f.relative_to(proj_dir)}"
            rows.append((key, proj_dir.name, ecosystem_of(proj_dir.name), 1, "docs", html_page_text(f.read_bytes())))
    for index in sorted((data / "html").glob("*/index.jsonl")):
        for line in index.read_text().splitlines():
            e = json.loads(line)
            text = html_page_text(gzip.decompress((index.parent / e["file"]).read_bytes()))
            rows.append((e["url"], "web:" + index.parent.name, "web", 0, "web", text))
    pages = pd.DataFrame(rows, columns=["url", "project", "ecosystem", "label", "kind", "text"])
    key = pages["project"].where(pages["label"] == 1, pages["url"])
    pages["split"] = key.map(lambda k: "dev" if bucket(k, "devtest") < 0.5 else "test")
    return pages


def devset_pages(root: Path, limit: int | None = None, negative_kinds: tuple[str, ...] = ("web",)) -> pd.DataFrame:
    """Docs pages and ordinary web pages of the dev set built by bench/devset.py (``pages.parquet``).

    The same-site non-API pages (``site_nondocs``) are left out: the question here is docs pages
    against the web pages of a crawl, as in issue 13's AUC figures.
    """
    pages = pd.read_parquet(root / "pages.parquet")
    pages = pages[pages["kind"].isin(("docs", *negative_kinds))]
    if limit:  # extraction is the slow part: keep a hash-ordered surplus per split and group first
        group = np.where(pages["label"] == 0, "negative", np.where(pages["ecosystem"] == "python", "library", "cross"))
        pages = pages.assign(_b=pages["url"].map(lambda u: bucket(u, "sub")), _g=group).sort_values("_b")
        pages = pages.groupby(["split", "_g"]).head(limit).drop(columns=["_b", "_g"])
    pages = pages.reset_index(drop=True)
    pages["text"] = [html_page_text(bytes(h)) if h is not None else "" for h in pages["html"]]
    return pages.drop(columns="html")


def sample_pages(pages: pd.DataFrame, positives: int, negatives: int) -> pd.DataFrame:
    """Pages of >= 50 words, at most ``positives`` per split and positive group, ``negatives`` per split, by hash.

    Groups: ``library`` (Python docs), ``cross`` (docs of other ecosystems), ``negative``.
    """
    pages = pages[pages["text"].str.split().str.len() >= 50]
    group = np.where(pages["label"] == 0, "negative", np.where(pages["ecosystem"] == "python", "library", "cross"))
    pages = pages.assign(group=group, _b=pages["url"].map(lambda u: bucket(u, "sub"))).sort_values("_b")
    parts = [
        g.head(negatives if name == "negative" else positives) for (_, name), g in pages.groupby(["split", "group"])
    ]
    return pd.concat(parts).drop(columns="_b").reset_index(drop=True)


@dataclass(frozen=True)
class Variant:
    """How pages are scored: which seeds are indexed, chunks per seed and page, chunk aggregation, knn."""

    kinds: tuple[str, ...]
    harvested: bool
    seed_chunks: int
    page_chunks: int
    aggregate: str
    knn: int

    def __str__(self) -> str:
        seeds = "+".join(self.kinds) + (" +harvested" if self.harvested else " shared only")
        pages = f"page chunks<={self.page_chunks} {self.aggregate}"
        return f"{seeds}, seed chunks<={self.seed_chunks}, {pages}, knn {self.knn}"


def variant_scores(v: Variant, seeds: pd.DataFrame, seed_vecs, seed_owner, page_vecs, page_owner, n_pages):
    """seed_similarity of every page under ``v``: exact inner product, then the stage's own aggregation."""
    from raypipe.retrieve.index import knn_mean
    from raypipe.retrieve.stage import page_scores

    seed_pos = np.arange(len(seed_owner)) - np.searchsorted(seed_owner, seed_owner)
    page_pos = np.arange(len(page_owner)) - np.searchsorted(page_owner, page_owner)
    rows = seeds.iloc[seed_owner]
    use = (seed_pos < v.seed_chunks) & rows["kind"].isin(v.kinds).to_numpy()
    if not v.harvested:
        use &= ~rows["source"].isin(HARVESTED_SOURCES).to_numpy()
    keep = page_pos < v.page_chunks
    sims = page_vecs[keep] @ seed_vecs[use].T
    k = min(v.knn, sims.shape[1])
    top = -np.partition(-sims, k - 1, axis=1)[:, :k]
    per_chunk = knn_mean(top, np.zeros_like(top, dtype=np.int64))
    return page_scores(per_chunk, np.zeros(len(per_chunk), np.int64), page_owner[keep], n_pages, v.aggregate)[0]


def real_pages_main(args: argparse.Namespace) -> None:
    """Before / after / naive seed_similarity AUC on real docs pages, library docs (Python) and other ecosystems."""
    from raypipe.config import load_config

    started = time.monotonic()
    data, cache = Path(args.data), Path(args.cache)
    if args.devset and (Path(args.devset) / "pages.parquet").exists():
        pages, source = (
            devset_pages(Path(args.devset), 2 * max(args.positives, args.negatives)),
            f"devset {args.devset}",
        )
    else:
        pages, source = (
            docs_dir_pages(Path(args.docs_dir), data, args.per_project),
            f"Debian doc packages {args.docs_dir}",
        )
    pages = sample_pages(pages, args.positives, args.negatives)
    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "configs" / "demo.yaml")
    seeds_cfg = cfg.seeds.model_copy(update={"sources": [str(data / "seeds")], "license_manifest": None})
    seeds = load_seeds(seeds_cfg, StorageConfig())
    print(f"pages from {source}, extracted as the extract stage does:")
    print(pages.groupby(["group", "split"]).size().unstack().to_string())
    print("projects:", pages[pages.label == 1].groupby("split")["project"].unique().map(sorted).to_dict())
    print(f"seeds as configs/demo.yaml builds them: {len(seeds)} ({seeds['kind'].value_counts().to_dict()})")

    embedder = Embedder(RetrieveConfig().model, "cpu")
    seed_vecs, seed_owner = embed_cached(embedder, seeds["text"].tolist(), 4, cache)
    page_vecs, page_owner = embed_cached(embedder, pages["text"].tolist(), 4, cache)
    both = ("api_doc", "trajectory")
    new = cfg.retrieve  # configs/demo.yaml's retrieve section over the defaults
    named = {
        "naive (page's first 256 tokens, nearest shared seed)": Variant(both, False, 1, 1, "max", 1),
        "before (demo.yaml before issue 13: every seed kind, 1 chunk per seed, best of 2 page chunks, nearest seed)": (
            Variant(both, True, 1, 2, "max", 1)
        ),
        "after (demo.yaml now)": Variant(
            tuple(new.index_kinds), True, new.seed_max_chunks, new.max_chunks, new.chunk_aggregate, new.knn
        ),
    }
    if max(new.seed_max_chunks, new.max_chunks) > 4:
        raise SystemExit("this bench embeds at most 4 chunks per seed and page")
    grid = [
        Variant(kinds, True, sc, pc, agg, knn)
        for kinds in (both, ("api_doc",))
        for sc in (1, 4)
        for pc in (1, 2, 4)
        for agg in (("max", "mean") if pc > 1 else ("max",))
        for knn in (1, 10, 30, 50, 100)
    ]
    variants = {**named, **{str(v): v for v in grid}}
    scores = {
        name: variant_scores(v, seeds, seed_vecs, seed_owner, page_vecs, page_owner, len(pages))
        for name, v in variants.items()
    }

    def auc(s: np.ndarray, split: str, group: str) -> float:
        sel = (pages["split"] == split).to_numpy()
        pos, neg = sel & (pages["group"] == group).to_numpy(), sel & (pages["label"] == 0).to_numpy()
        return roc_auc(s[pos], s[neg]) if pos.any() and neg.any() else float("nan")

    table = pd.DataFrame(
        [
            {"variant": name, **{f"{s} {g}": auc(sc, s, g) for s in ("dev", "test") for g in ("library", "cross")}}
            for name, sc in scores.items()
        ]
    ).set_index("variant")
    pd.set_option("display.width", 250)
    pd.set_option("display.max_colwidth", 90)
    print("\nseed_similarity ROC AUC (docs pages vs web pages); library = Python docs, cross = other ecosystems")
    print(table.loc[list(named)].round(4).to_string())
    dev_rank = table.iloc[len(named) :].assign(dev=lambda t: t["dev library"] + t["dev cross"]).sort_values("dev")
    print(f"\ngrid, best {args.show} by dev library + dev cross (test shown, never used to choose):")
    print(dev_rank.iloc[::-1].head(args.show).drop(columns="dev").round(4).to_string())
    print(f"\nseconds: {round(time.monotonic() - started)}")


if __name__ == "__main__":
    main()
