"""Selection quality on real documentation pages: fastText only, embed every page, and the cascade.

Evaluated on the development set of real pages (``bench/devset.py``: documentation sites as they
serve them, split dev/test by *project*), never on renderings of the seeds the model trains on.
What runs is the pipeline's own code, in process: ``ExtractStage`` on every page's HTML,
``run_rounds`` (training, rule fitting, ``classifier/round-N/metrics.json``) on a crawl sample,
``SeedRetriever`` (the retrieval stage) for ``seed_similarity``, and the fitted rule.

The crawl sample the classifier learns from is what a run would sample: the dev split's ordinary
web pages (HTML pages of ``../shared/data`` extracted by ``ExtractStage``, C4, Wikipedia; split by
a hash of their id) and dev documentation sites making ``--docs-share`` of the sample (1%, 5%,
20%: a general crawl to a docs-heavy focused one), site by site with their non-API pages. The
crawl's documentation pages are the ones the classifier must not learn to reject; every threshold
is picked by the run itself for ``classify.prevalence``. Besides the evaluation pages below, the
run's selection is counted on the crawl's own pages, as a job selects them.

Evaluation pages: ``--split test`` (the default, the figures reported) is the test projects' pages
plus the other half of the ordinary web pages; ``--split dev`` uses the dev pages that were not in
the crawl sample (for choosing knobs). Precision at 1% and 0.1% prevalence is r p / (r p + f (1-p))
from the measured recall r and false-positive rate f, with 95% intervals propagated from Wilson
intervals. Recall counts every documentation page, including those dropped before selection
(language, quality), so each drop reason's share of lost recall is reported.

The documentation of SQLAlchemy, Scrapy, Flask, boltons and itsdangerous is reserved for
held-out evaluation; the script refuses a development set or seeds that contain them.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.selection_quality [--devset /work/devset] [--split test]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from bench.devset import load_devset
from raypipe.classify.calibrate import CalibrationSimilarity
from raypipe.classify.classifier import load_classifier, prf_from_counts
from raypipe.classify.model import agent_proba
from raypipe.classify.rounds import run_rounds, score_frame
from raypipe.classify.thresholds import at_prevalence, prf
from raypipe.config import (
    ClassifyConfig,
    ExtractConfig,
    QualityConfig,
    RetrieveConfig,
    SeedsConfig,
    StorageConfig,
    load_config,
)
from raypipe.extract.stage import extract_and_select
from raypipe.retrieve.evaluate import bucket, roc_auc
from raypipe.retrieve.index import build_seed_index
from raypipe.retrieve.stage import SeedRetriever
from raypipe.seeds import load_seeds
from raypipe.store.storage import OutputStore

RESERVED = ("sqlalchemy", "scrapy", "flask", "boltons", "itsdangerous")
MODES = ("fasttext_only", "embed_all", "cascade")
PREVALENCES = (0.01, 0.001)
WEB_KINDS = ("web", "text_only")  # ordinary web pages (the shared HTML pages, C4 and Wikipedia as pages)
SEED = 1234


def _mentions_reserved(values: Sequence[str]) -> list[str]:
    return sorted({v for v in values if any(r in str(v).lower() for r in RESERVED)})


def extract_pages(
    urls: Sequence[str], htmls: Sequence[bytes], extract: ExtractConfig, quality: QualityConfig
) -> pd.DataFrame:
    """url, text, language, drop_reason: the extraction stage and its verdict, over in-memory HTML."""
    n = len(urls)
    table = pa.table(
        {
            "url": list(urls),
            "warc_record_id": [None] * n,
            "warc_date": [None] * n,
            "http_status": pa.array([200] * n, pa.int32()),
            "source_file": ["bench"] * n,
            "record_index": list(range(n)),
            "file_stats": [None] * n,
            "html": list(htmls),
            "charset": [None] * n,
            "html_truncated": [False] * n,
        }
    )
    out = pa.concat_tables([extract_and_select(table.slice(i, 256), extract, quality) for i in range(0, n, 256)])
    out = out.to_pandas()
    return out[["url", "text", "language", "drop_reason"]]


def extracted_devset(devset: pd.DataFrame, cache: Path, extract: ExtractConfig, quality: QualityConfig) -> pd.DataFrame:
    """The development set with text, language and drop_reason from extraction and its verdict,
    cached by the pages, the settings and the extraction code itself (a changed identifier
    re-extracts)."""
    code = b"".join(p.read_bytes() for p in sorted(Path(extract_and_select.__code__.co_filename).parent.glob("*.py")))
    settings = (extract.model_dump_json() + quality.model_dump_json()).encode()
    key = hashlib.sha1("\n".join(devset["sha1"]).encode() + code + settings).hexdigest()[:12]
    path = cache / f"extracted-{key}.parquet"
    if not path.exists():
        extract_pages(devset["url"].tolist(), devset["html"].tolist(), extract, quality).to_parquet(path)
    pages = pd.read_parquet(path)
    return devset.drop(columns=["html"]).assign(
        text=pages["text"].fillna("").to_numpy(),
        language=pages["language"].to_numpy(),
        drop_reason=pages["drop_reason"].to_numpy(),
    )


def per_project(frame: pd.DataFrame, cap: int, salt: str) -> pd.DataFrame:
    """At most ``cap`` documentation pages per project (hash-chosen; 0 = all); other pages all kept."""
    if not cap:
        return frame
    docs = frame["label"] == 1
    ranked = frame[docs].assign(_b=frame.loc[docs, "url"].map(lambda u: bucket(u, salt))).sort_values("_b")
    return pd.concat([frame[~docs], ranked.groupby("project").head(cap).drop(columns="_b")], ignore_index=True)


class CachedSimilarity:
    """``CalibrationSimilarity`` with its answers cached on disk by (index, text, excluded group):
    the three training runs and reruns embed each text once."""

    def __init__(self, inner: CalibrationSimilarity, path: Path):
        self.inner, self.path = inner, path
        self.known: dict[str, float] = {}
        if path.exists():
            frame = pd.read_parquet(path)
            self.known = dict(zip(frame["k"], frame["s"], strict=True))

    def __call__(self, texts: Sequence[str], groups: Sequence[str | None]) -> np.ndarray:
        keys = [hashlib.sha1(f"{g}\x00{t}".encode()).hexdigest() for t, g in zip(texts, groups, strict=True)]
        todo = [i for i, k in enumerate(keys) if k not in self.known]
        if todo:
            scores = self.inner([texts[i] for i in todo], [groups[i] for i in todo])
            self.known.update({keys[i]: float(s) for i, s in zip(todo, scores, strict=True)})
            pd.DataFrame({"k": list(self.known), "s": list(self.known.values())}).to_parquet(self.path)
        return np.array([self.known[k] for k in keys], dtype=np.float64)


def retrieval_similarity(texts: pd.Series, index_prefix: str, cfg: RetrieveConfig, cache: Path) -> np.ndarray:
    """seed_similarity through the retrieval stage (``SeedRetriever``), cached by (index, text)."""
    meta = (Path(index_prefix) / cfg.index_dir / "meta.json").read_bytes()
    path = cache / f"retrieval-{hashlib.sha1(meta + cfg.model_dump_json().encode()).hexdigest()[:12]}.parquet"
    known = pd.read_parquet(path) if path.exists() else pd.DataFrame({"h": [], "s": []})
    hashes = texts.map(lambda t: hashlib.sha1(t.encode()).hexdigest())
    todo = ~hashes.isin(set(known["h"]))
    if todo.any():
        frame = pd.DataFrame({"text": texts[todo].to_numpy()})
        scored = pd.concat(
            [
                SeedRetriever(cfg, index_prefix, StorageConfig())(frame.iloc[i : i + 256])
                for i in range(0, len(frame), 256)
            ]
        )
        known = pd.concat([known, pd.DataFrame({"h": hashes[todo].to_numpy(), "s": scored["seed_similarity"]})])
        known.to_parquet(path)
    return hashes.map(dict(zip(known["h"], known["s"], strict=True))).to_numpy(dtype=np.float64)


def build_index(seeds: pd.DataFrame, per_source: int, cfg: RetrieveConfig, cache: Path) -> str:
    sample = seeds.assign(_b=seeds["id"].map(lambda i: bucket(i, "index"))).sort_values(["source", "_b"])
    if per_source:
        sample = sample.groupby("source").head(per_source)
    sample = sample.drop(columns="_b").reset_index(drop=True)
    key = hashlib.sha1("\n".join(sorted(sample["id"])).encode() + cfg.model_dump_json().encode()).hexdigest()[:12]
    prefix = cache / f"index-{key}"
    if not (prefix / cfg.index_dir / "meta.json").exists():
        meta = build_seed_index(sample, cfg, str(prefix), StorageConfig())
        print(f"seed index: {meta['n_seeds']} seeds, {meta['n_vectors']} vectors in {meta['build_seconds']}s")
    return str(prefix)


def crawl_sample(negatives: pd.DataFrame, docs: pd.DataFrame, share: float) -> pd.DataFrame:
    """The pages a run would sample: the ordinary web pages of ``negatives``, and documentation
    sites making ``share`` of the ordinary pages and documentation together.

    Documentation enters site by site, as a crawl fetches it: projects in hash order, each one's
    pages in hash order (the last site taken in part), so a larger share holds the smaller ones;
    a site's non-API pages (changelogs, indexes) come with it, and those of sites not taken stay
    out. Only pages the extraction stage kept: a run samples those."""
    kept = negatives[negatives["drop_reason"].isna()]
    ordinary = kept[kept["kind"].isin(WEB_KINDS)]
    docs = docs[docs["drop_reason"].isna()]
    docs = docs.assign(
        _p=docs["project"].map(lambda p: bucket(str(p), "crawl-sites")),
        _b=docs["url"].map(lambda u: bucket(u, "crawl-docs")),
    ).sort_values(["_p", "_b"])
    n_docs = int(round(share / (1 - share) * len(ordinary)))
    if n_docs > len(docs):
        raise ValueError(f"docs share {share} needs {n_docs} dev documentation pages, the dev split has {len(docs)}")
    taken = docs.head(n_docs).drop(columns=["_p", "_b"])
    site_pages = kept[(kept["kind"] == "site_nondocs") & kept["project"].isin(set(taken["project"]))]
    return pd.concat([ordinary, site_pages, taken], ignore_index=True)


def counts(chosen: np.ndarray, label: np.ndarray) -> dict[str, int]:
    return {
        "tp": int((chosen & label).sum()),
        "fp": int((chosen & ~label).sum()),
        "fn": int((~chosen & label).sum()),
        "tn": int((~chosen & ~label).sum()),
    }


def _auc(scores: pd.Series, pos: np.ndarray, neg: np.ndarray | None = None) -> float | None:
    """ROC AUC over the pages that have the score (None without both classes)."""
    neg = ~pos if neg is None else neg
    ok = scores.notna().to_numpy()
    if not (pos & ok).any() or not (neg & ok).any():
        return None
    return round(roc_auc(scores[pos & ok].to_numpy(), scores[neg & ok].to_numpy()), 4)


def report(frame: pd.DataFrame, rule: Any) -> dict[str, Any]:
    """Every figure of one evaluation set under one fitted rule (see the module docstring)."""
    label = frame["label"].to_numpy() == 1
    web = frame["kind"].isin(WEB_KINDS).to_numpy()
    live = frame["drop_reason"].isna().to_numpy()
    out: dict[str, Any] = {
        "positives": int(label.sum()),
        "negatives_web": int((~label & web).sum()),
        "negatives_docs_sites": int((~label & ~web).sum()),
        "positives_reaching_selection": int((label & live).sum()),
        "auc_agent_score": _auc(frame["agent_score"], label & live, ~label & live),
        "auc_seed_similarity": _auc(frame["seed_similarity"], label & live, ~label & live),
    }
    selected = {}
    for mode in MODES:
        applied = rule.with_mode(mode).apply(frame)
        chosen = applied["selected"].to_numpy(dtype=bool)
        selected[mode] = chosen
        c = counts(chosen, label)
        out[mode] = {
            **{k: round(v, 4) for k, v in prf(chosen[label], chosen[~label], 0.5).items()},
            **c,
            **{f"at_prevalence_{p:g}": at_prevalence(c["tp"], c["fn"], c["fp"], c["tn"], p) for p in PREVALENCES},
            "fpr_web": round(float(chosen[~label & web].mean()), 5),
            "fpr_docs_sites": round(float(chosen[~label & ~web].mean()), 5) if (~label & ~web).any() else None,
            "recall_lost_by_reason": {
                str(k): round(v / max(int(label.sum()), 1), 4)
                for k, v in applied.loc[label, "drop_reason"].value_counts().items()
            },
            "recall_by_ecosystem": {
                str(e): round(float(chosen[label & (frame["ecosystem"] == e).to_numpy()].mean()), 4)
                for e in sorted(frame.loc[label, "ecosystem"].dropna().unique())
            },
        }
    embedded = rule.with_mode("cascade").to_embed(frame)
    out["cascade_embedded_share_web"] = round(float(embedded[web & live].mean()), 4)
    out["cascade_embedded_share_web_all"] = round(float(embedded[web].mean()), 4)
    full = int((selected["embed_all"] & label).sum())
    out["cascade_recall_kept_vs_embed_all"] = round(float((selected["cascade"] & label).sum() / max(full, 1)), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--devset", default="/work/devset", help="folder with the development set (bench/devset.py)")
    ap.add_argument("--split", choices=["dev", "test"], default="test", help="evaluation pages (knobs: dev)")
    ap.add_argument(
        "--docs-share", type=float, action="append", help="docs share of the crawl (default 1%%, 5%%, 20%%)"
    )
    ap.add_argument(
        "--eval-docs-per-project",
        type=int,
        default=25,
        help="test documentation pages evaluated per project (hash-chosen; 0 = all): bounds the embedding time",
    )
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "raypipe-selection-bench"))
    ap.add_argument("--index-per-source", type=int, default=400, help="seeds per source in the index (0 = all)")
    ap.add_argument("--device", default="auto", help="embedding device: auto, cpu or cuda")
    ap.add_argument(
        "--config",
        default=None,
        help="a run config (YAML) whose extract, quality, seeds (harvest_modules, max_per_source), retrieve and "
        "classify settings the bench uses, as a run of it would; its seed sources are replaced by ../shared's",
    )
    ap.add_argument("--set", action="append", default=[], help="ClassifyConfig override key=value (JSON value)")
    ap.add_argument("--out", default=None, help="write the results JSON here too")
    ap.add_argument(
        "--whole-crawl",
        action="store_true",
        help="the crawl is every ordinary page of both splits plus the split's documentation sites, and the "
        "figures are the run's selection of that crawl itself (a job's own pages, as issue 13's held-out sets)",
    )
    ap.add_argument("--frames", default=None, help="write each run's scored evaluation pages here (parquet)")
    args = ap.parse_args()
    data, cache = Path(args.data), Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    devset = load_devset(args.devset)
    leaked = _mentions_reserved(devset["project"].tolist() + devset["url"].tolist())
    if leaked:
        raise SystemExit(f"the development set holds reserved held-out projects {leaked[:5]}: rebuild it without them")
    run_cfg = load_config(args.config) if args.config else None
    extract_cfg = run_cfg.extract if run_cfg else ExtractConfig()
    devset = extracted_devset(devset, cache, extract_cfg, run_cfg.quality if run_cfg else QualityConfig())
    print(f"extracted {len(devset)} devset pages in {time.monotonic() - started:.0f}s", flush=True)

    seeds_cfg = SeedsConfig(sources=[str(data / "seeds")], harvest_modules=[])
    if run_cfg:
        seeds_cfg = run_cfg.seeds.model_copy(update={"sources": [str(data / "seeds")], "license_manifest": None})
    seeds = load_seeds(seeds_cfg, StorageConfig())
    if _mentions_reserved(seeds["text"].str.split(n=1).str[0].tolist()):
        raise SystemExit("the seeds hold documentation of a reserved held-out library")
    projects = {str(p).lower() for p in devset["project"]}
    overlap = (seeds["source"] == "api_docs_pypi") & seeds["text"].str.split(n=1).str[0].str.lower().isin(projects)
    seeds = seeds[~overlap].reset_index(drop=True)
    retrieve_cfg = (run_cfg.retrieve if run_cfg else RetrieveConfig()).model_copy(update={"device": args.device})
    index_prefix = build_index(seeds, args.index_per_source, retrieve_cfg, cache)
    similarity = CachedSimilarity(
        CalibrationSimilarity(retrieve_cfg, index_prefix, StorageConfig()), Path(index_prefix) / "calibration.parquet"
    )

    dev = devset[devset["split"] == "dev"]
    dev_negatives, dev_docs = dev[dev["label"] == 0], dev[dev["label"] == 1]
    if args.split == "test":
        evaluation_base = per_project(devset[devset["split"] == "test"], args.eval_docs_per_project, "eval")
    else:  # half of the dev negatives stay out of the crawl to be evaluated on
        held = dev_negatives["url"].map(lambda u: bucket(u, "dev-eval") < 0.5)
        evaluation_base = pd.concat([dev_negatives[held], dev_docs], ignore_index=True)
        dev_negatives = dev_negatives[~held]
    if args.whole_crawl:  # every ordinary page, the split's documentation sites; evaluated on the crawl itself
        split = devset[devset["split"] == args.split]
        dev_negatives = pd.concat(
            [devset[(devset["label"] == 0) & devset["kind"].isin(WEB_KINDS)], split[split["kind"] == "site_nondocs"]],
            ignore_index=True,
        )
        dev_docs = split[split["label"] == 1]
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    base = run_cfg.classify.model_dump() if run_cfg else {"mode": "cascade"}
    cfg = ClassifyConfig(**{**base, **overrides})
    results: dict[str, Any] = {
        "config": cfg.model_dump(mode="json"),
        "split": args.split,
        "run_config": args.config,
        "whole_crawl": args.whole_crawl,
        "seeds": len(seeds),
        "eval_docs_per_project": args.eval_docs_per_project,
        "runs": {},
    }
    for share in args.docs_share or [0.01, 0.05, 0.20]:
        crawl = crawl_sample(dev_negatives, dev_docs, share)
        run_dir = tempfile.mkdtemp(prefix=f"run-{share:g}-", dir=cache)  # the rounds' models: ~1 GB a run

        def score(uri: str, rule: Any, crawl: pd.DataFrame = crawl) -> pd.DataFrame:
            return score_frame(crawl[["url", "text"]], load_classifier(uri, StorageConfig()), similarity)

        try:
            store = OutputStore(run_dir, StorageConfig())
            reports = run_rounds(seeds, crawl[["url", "text"]], score, cfg, store, SEED, similarity)
            trained = load_classifier(reports[-1].model_uri, StorageConfig())
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        if args.whole_crawl:  # the crawl's pages, and those of its sources that extraction dropped
            pool = pd.concat([dev_negatives, dev_docs], ignore_index=True)
            sites = set(crawl.loc[crawl["label"] == 1, "project"])
            sourced = pool["kind"].isin(WEB_KINDS) | pool["project"].isin(sites)
            evaluation = pd.concat([crawl, pool[pool["drop_reason"].notna() & sourced]], ignore_index=True)
        else:
            evaluation = evaluation_base[~evaluation_base["url"].isin(set(crawl["url"]))].reset_index(drop=True)
        live = evaluation["drop_reason"].isna()
        evaluation["agent_score"] = np.where(
            live, agent_proba(trained.model, evaluation["text"].fillna("").tolist(), cfg.max_tokens), np.nan
        )
        evaluation["seed_similarity"] = np.nan
        evaluation.loc[live, "seed_similarity"] = retrieval_similarity(
            evaluation.loc[live, "text"], index_prefix, retrieve_cfg, cache
        )
        in_crawl = crawl.reset_index(drop=True)
        in_crawl["agent_score"] = agent_proba(trained.model, in_crawl["text"].fillna("").tolist(), cfg.max_tokens)
        in_crawl["seed_similarity"] = retrieval_similarity(in_crawl["text"], index_prefix, retrieve_cfg, cache)
        chosen = trained.rule.apply(in_crawl)["selected"].to_numpy(dtype=bool)
        c = counts(chosen, in_crawl["label"].to_numpy() == 1)
        crawl_figures = prf_from_counts(c)
        if args.frames:
            Path(args.frames).mkdir(parents=True, exist_ok=True)
            evaluation.drop(columns=["text"]).to_parquet(Path(args.frames) / f"eval-{args.split}-{share:g}.parquet")
        docs_in_crawl = int(crawl["label"].eq(1).sum())
        results["runs"][f"docs_share={share:g}"] = {
            "crawl_pages": len(crawl),
            "crawl_docs_pages": docs_in_crawl,
            "training_counts": reports[-1].counts,
            "held_out_in_run": reports[-1].metrics["held_out"][cfg.mode]["at_prevalence"],
            "rule": trained.rule.to_dict(),
            "eval": report(evaluation, trained.rule),
            "crawl_pages_selected": crawl_figures,
        }
        summary = results["runs"][f"docs_share={share:g}"]["eval"]
        for mode in MODES:
            s, p1, p01 = summary[mode], summary[mode]["at_prevalence_0.01"], summary[mode]["at_prevalence_0.001"]
            print(
                f"docs {share:.0%} of crawl | {mode:13s} ({args.split}): P {s['precision']:.4f} R {s['recall']:.4f} "
                f"F1 {s['f1']:.4f} | P@1% {p1['precision']:.3f} {p1['precision_ci95']} "
                f"P@0.1% {p01['precision']:.3f} {p01['precision_ci95']} | FPR web {s['fpr_web']:.4f}",
                flush=True,
            )
        print(
            f"docs {share:.0%} of crawl | {cfg.mode} on the crawl's own pages: P {crawl_figures['precision']:.4f} "
            f"R {crawl_figures['recall']:.4f} F1 {crawl_figures['f1']:.4f} ({c})",
            flush=True,
        )
        print(
            f"docs {share:.0%} of crawl | gate sends {summary['cascade_embedded_share_web']:.2%} of web pages to the "
            f"embedder; cascade keeps {summary['cascade_recall_kept_vs_embed_all']:.2%} of embed-all recall",
            flush=True,
        )
    results["seconds"] = round(time.monotonic() - started)
    text = json.dumps(results, indent=1, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
