"""Held-out quality of the selection (fastText + seed similarity) and the cascade's saving.

Split rule, fixed before any number was looked at and applied before any threshold is chosen:

* Positives are documentation *pages* about APIs the pipeline never saw: the reference docs of
  every second library (sorted by name) in ``seeds/api_docs_pypi``, 15% of the Gorilla model
  cards (by id) and 25% of the apizoo REST providers (by file). Their seeds, and every other seed
  whose first API name is theirs, are removed from training and from the seed index. Each is
  rendered the way a site serves it, independently of the seed loaders: reStructuredText through
  docutils, Markdown through markdown-it, model cards and REST references through HTML templates,
  all wrapped in site navigation and reduced to text by resiliparse's main-content extraction, as
  the crawl does.
* Negatives are general web pages (the real HTML pages under ``html/`` extracted the same way, C4
  and Wikipedia): half of them (by id) play the crawl's page sample that the pipeline trains and
  fits its thresholds on; the other half are evaluation negatives only.
* The pipeline then does exactly what a run does: ``train_classifier`` picks every threshold from
  held-out seed groups and held-out sampled pages. Evaluation pages are split into dev and test
  halves by id; design choices (such as ``similarity_weight``) were made on dev, test is reported.

Cascade figures: the share of pages embedded (all evaluation pages, and negatives only, which is
what a crawl mostly is) and the cascade's recall as a share of ``embed_all``'s recall.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.selection_quality [--data ../shared/data] [--cache /tmp/x]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import html
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raypipe.classify.calibrate import CalibrationSimilarity
from raypipe.classify.classifier import prf_from_counts, train_classifier
from raypipe.classify.model import agent_proba
from raypipe.config import ClassifyConfig, RetrieveConfig, SeedsConfig, StorageConfig
from raypipe.retrieve.evaluate import bucket, roc_auc, web_negatives
from raypipe.retrieve.index import build_seed_index
from raypipe.retrieve.stage import SeedRetriever
from raypipe.seeds import harvest_api_docs, load_seeds

SPHINX_ROLES = (
    "class meth func attr exc mod data obj ref doc term envvar option issue pr user py:class py:func "
    "py:meth py:attr py:mod py:data py:obj py:exc"
).split()
SPHINX_DIRECTIVES = (
    "autofunction autoclass automethod autoattribute automodule autodata autoexception function class "
    "method attribute data exception module currentmodule decorator versionadded versionchanged deprecated "
    "seealso toctree code-block sourcecode literalinclude highlight testcode doctest tab tabs envvar option "
    "describe py:function py:class py:method"
).split()
PAGE_HEAD = (
    '<html><head><title>{title}</title></head><body><nav><ul><li><a href="/">Home</a></li>'
    '<li><a href="/docs">Docs</a></li><li><a href="/blog">Blog</a></li></ul></nav>'
    '<div class="sidebar"><h3>Navigation</h3><ul><li><a href="/start">Getting started</a></li>'
    '<li><a href="/api">API reference</a></li></ul></div><main><article>'
)
PAGE_TAIL = (
    "</article></main><footer><p>&copy; Copyright 2024. Built with a documentation generator.</p></footer>"
    "</body></html>"
)


def _register_sphinx_markup() -> None:
    """Let docutils render Sphinx roles as code and Sphinx directives as their argument plus body,
    roughly what a Sphinx build shows (docutils alone would print error boxes instead)."""
    from docutils import nodes
    from docutils.parsers.rst import Directive, directives, roles

    class AnyOption(dict):
        def __contains__(self, key: object) -> bool:
            return True

        def __getitem__(self, key: str) -> Any:
            return directives.unchanged

    class Shown(Directive):
        has_content = True
        optional_arguments = 1
        final_argument_whitespace = True
        option_spec = AnyOption()

        def run(self) -> list[Any]:
            out: list[Any] = [nodes.literal_block(text=self.arguments[0])] if self.arguments else []
            if self.content:
                body = nodes.container()
                self.state.nested_parse(self.content, self.content_offset, body)
                out.append(body)
            return out

    for role in SPHINX_ROLES:
        roles.register_generic_role(role, nodes.literal)
    for name in SPHINX_DIRECTIVES:
        directives.register_directive(name, Shown)


def extract(page: str) -> str:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    return extract_plain_text(HTMLTree.parse_from_bytes(page.encode(), "utf-8"), main_content=True)


def wrap(title: str, body: str) -> str:
    return PAGE_HEAD.format(title=html.escape(title)) + body + PAGE_TAIL


def rst_page(text: str, title: str) -> str:
    from docutils.core import publish_string

    settings = {"report_level": 5, "halt_level": 5, "warning_stream": io.StringIO(), "output_encoding": "unicode"}
    body = publish_string(text, writer_name="html5", settings_overrides={**settings, "syntax_highlight": "none"})
    return wrap(title, body.split("<body>", 1)[-1].rsplit("</body>", 1)[0])


def md_page(text: str, title: str) -> str:
    from markdown_it import MarkdownIt

    return wrap(title, MarkdownIt("commonmark").enable("table").render(text))


def _value(v: Any) -> str:
    return html.escape(json.dumps(v, indent=2) if isinstance(v, (dict, list)) else str(v))


def model_card_page(rec: dict[str, Any]) -> str:
    name = str(rec.get("api_name", ""))
    parts = [
        f"<h1>{html.escape(name)}</h1><p>{_value(rec.get('description', ''))}</p>",
        f"<p>Framework: {_value(rec.get('framework', ''))}. Task: {_value(rec.get('functionality', ''))}. "
        f"Domain: {_value(rec.get('domain', ''))}.</p>",
        f"<h2>How to use</h2><pre><code>{_value(rec.get('api_call', ''))}</code></pre>",
    ]
    example = rec.get("example_code")
    if example and example != "N/A":
        code = "\n".join(example) if isinstance(example, list) else str(example)
        parts.append(f"<h2>Example</h2><pre><code>{html.escape(code)}</code></pre>")
    if rec.get("api_arguments") not in (None, "", "N/A", [], {}):
        parts.append(f"<h2>Arguments</h2><pre>{_value(rec['api_arguments'])}</pre>")
    if rec.get("performance"):
        parts.append(f"<h2>Evaluation</h2><pre>{_value(rec['performance'])}</pre>")
    return wrap(name, "".join(parts))


def rest_reference_page(records: list[dict[str, Any]]) -> str:
    parts = []
    for rec in records:
        parts.append(f"<h2>{_value(rec.get('api_name', ''))}</h2><pre>{_value(rec.get('api_call', ''))}</pre>")
        parts.append(f"<p>{_value(rec.get('functionality', ''))}</p>")
        args = rec.get("api_arguments")
        if isinstance(args, dict) and args:
            rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{_value(v)}</td></tr>" for k, v in args.items())
            parts.append(f"<h3>Parameters</h3><table><tr><th>Name</th><th>Description</th></tr>{rows}</table>")
        if rec.get("example_code"):
            parts.append(f"<pre><code>{_value(rec['example_code'])}</code></pre>")
    return wrap("API reference", "".join(parts))


def _origin_file(origin: str) -> str:
    return origin.split("#", 1)[0]


def split_seeds(seeds: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(training seeds, held-out seeds, held-out libraries): the rule in the module docstring."""
    first_word = seeds["text"].str.split(n=1).str[0]
    pypi = seeds["source"] == "api_docs_pypi"
    libraries = sorted(set(first_word[pypi]))[1::2]
    held = pypi & first_word.isin(libraries)
    held |= (seeds["source"] == "gorilla_api_docs") & seeds["id"].map(lambda i: bucket(i, "sel-eval") < 0.15)
    held |= (seeds["source"] == "gorilla_apizoo") & seeds["origin"].map(
        lambda o: bucket(_origin_file(o), "sel-eval") < 0.25
    )
    names = {apis[0] for apis in seeds.loc[held, "apis"] if len(apis)}
    leaks = ~held & seeds["apis"].map(lambda apis: len(apis) > 0 and apis[0] in names)
    return seeds[~held & ~leaks].reset_index(drop=True), seeds[held].reset_index(drop=True), libraries


def positive_pages(data: Path, held: pd.DataFrame, libraries: list[str]) -> pd.DataFrame:
    """Held-out API docs as served pages, from the raw shared files (not from the seed loaders)."""
    from raypipe.seeds.lenient_json import loads_lenient

    _register_sphinx_markup()
    seeds_dir = data / "seeds"
    rows = []
    with gzip.open(seeds_dir / "api_docs_pypi" / "python_library_docs.jsonl.gz", "rt") as f:
        for line in f:
            doc = json.loads(line)
            if doc["package"] in libraries:
                render = md_page if doc["path"].endswith(".md") else rst_page
                rows.append(
                    ("library_page", f"{doc['package']}:{doc['path']}", extract(render(doc["text"], doc["path"])))
                )
    cards = held[held["source"] == "gorilla_api_docs"]
    for name in sorted({_origin_file(o) for o in cards["origin"]}):
        with gzip.open(seeds_dir / "gorilla_api_docs" / name, "rt") as f:
            records = [json.loads(line) for line in f if line.strip()]
        for origin in sorted(cards.loc[cards["origin"].map(_origin_file) == name, "origin"]):
            rec = records[int(origin.rsplit(" ", 1)[1]) - 1]
            rows.append(("model_card_page", origin, extract(model_card_page(rec))))
    rest = held[held["source"] == "gorilla_apizoo"]
    for name in sorted({_origin_file(o) for o in rest["origin"]}):
        text = gzip.decompress((seeds_dir / "gorilla_apizoo" / name).read_bytes()).decode("utf-8", "replace")
        records = [r for r in loads_lenient(text, name)[0] if isinstance(r, dict)][:200]
        for start in range(0, len(records), 4):
            page = extract(rest_reference_page(records[start : start + 4]))
            rows.append(("rest_reference_page", f"{name}:{start}", page))
    frame = pd.DataFrame(rows, columns=["source", "id", "text"])
    return frame[frame["text"].str.split().str.len() >= 20].reset_index(drop=True)


def similarity_cached(pages: pd.DataFrame, index_prefix: str, cfg: RetrieveConfig, cache: Path) -> np.ndarray:
    """seed_similarity through the real retrieval stage, cached by (index, text) between runs."""
    meta = (Path(index_prefix) / cfg.index_dir / "meta.json").read_bytes()
    key = hashlib.sha1(meta + str(cfg.max_chunks).encode()).hexdigest()[:12]
    path = cache / f"similarity-{key}.parquet"
    known = pd.read_parquet(path) if path.exists() else pd.DataFrame({"h": [], "s": []})
    hashes = pages["text"].map(lambda t: hashlib.sha1(t.encode()).hexdigest())
    todo = ~hashes.isin(set(known["h"]))
    if todo.any():
        scored = SeedRetriever(cfg, index_prefix, StorageConfig())(pages.loc[todo, ["text"]].reset_index(drop=True))
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


def scores(rule: Any, frame: pd.DataFrame, mode: str) -> np.ndarray:
    return rule.with_mode(mode).apply(frame)["selected"].to_numpy(dtype=bool)


def report(frame: pd.DataFrame, rule: Any) -> dict[str, Any]:
    label = frame["label"].to_numpy() == 1
    out: dict[str, Any] = {
        "positives": int(label.sum()),
        "negatives": int((~label).sum()),
        "auc_agent_score": round(roc_auc(frame.agent_score[label], frame.agent_score[~label]), 4),
        "auc_seed_similarity": round(roc_auc(frame.seed_similarity[label], frame.seed_similarity[~label]), 4),
    }
    selected = {}
    for mode in ("fasttext_only", "embed_all", "cascade"):
        chosen = scores(rule, frame, mode)
        selected[mode] = chosen
        counts = {
            "tp": int((chosen & label).sum()),
            "fp": int((chosen & ~label).sum()),
            "fn": int((~chosen & label).sum()),
            "tn": int((~chosen & ~label).sum()),
        }
        out[mode] = prf_from_counts(counts)
        out[mode]["recall_by_source"] = {
            s: round(float(chosen[(frame["source"] == s).to_numpy()].mean()), 4)
            for s in sorted(frame.loc[label, "source"].unique())
        }
    embedded = rule.with_mode("cascade").to_embed(frame)
    out["cascade_embedded_share_all"] = round(float(embedded.mean()), 4)
    out["cascade_embedded_share_negatives"] = round(float(embedded[~label].mean()), 4)
    out["cascade_fewer_pages_embedded_x_negatives"] = round(1 / max(float(embedded[~label].mean()), 1e-9), 1)
    full = (selected["embed_all"] & label).sum()
    out["cascade_recall_kept_vs_embed_all"] = round(float((selected["cascade"] & label).sum() / max(full, 1)), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "raypipe-selection-bench"))
    ap.add_argument("--index-per-source", type=int, default=400, help="seeds per source in the index (0 = all)")
    ap.add_argument("--harvest", choices=["stdlib", "none"], default="stdlib", help="also harvest the stdlib's APIs")
    ap.add_argument("--device", default="auto", help="embedding device: auto, cpu or cuda")
    ap.add_argument("--set", action="append", default=[], help="ClassifyConfig override key=value (JSON value)")
    args = ap.parse_args()
    data, cache = Path(args.data), Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    seeds = load_seeds(SeedsConfig(sources=[str(data / "seeds")], harvest_modules=[]), StorageConfig())
    if args.harvest == "stdlib":
        harvested, _ = harvest_api_docs(SeedsConfig(harvest_modules=["@stdlib"]))
        seeds = pd.concat([seeds, pd.DataFrame(harvested)[seeds.columns]], ignore_index=True)
    train_seeds, held, libraries = split_seeds(seeds)
    positives = positive_pages(data, held, libraries).assign(label=1, role="eval")
    negatives = web_negatives(data).assign(label=0)
    negatives["role"] = np.where(negatives["id"].map(lambda i: bucket(i, "sel-crawl") < 0.5), "crawl", "eval")
    pages = pd.concat([positives, negatives], ignore_index=True)
    pages["split"] = pages["id"].map(lambda i: "dev" if bucket(i, "sel-devtest") < 0.5 else "test")
    crawl = pages[pages["role"] == "crawl"].rename(columns={"id": "url"})[["url", "text"]]
    evaluation = pages[pages["role"] == "eval"].reset_index(drop=True)
    print(f"seeds: {len(train_seeds)} for training, {len(held)} held out (libraries {libraries})")
    print("evaluation pages:", evaluation.groupby(["label", "source"]).size().to_dict())
    print(f"crawl sample (training negatives): {len(crawl)} pages")

    retrieve_cfg = RetrieveConfig(device=args.device)
    index_prefix = build_index(train_seeds, args.index_per_source, retrieve_cfg, cache)
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    cfg = ClassifyConfig(**{"mode": "embed_all", **overrides})
    similarity = CalibrationSimilarity(retrieve_cfg, index_prefix, StorageConfig())
    trained = train_classifier(train_seeds, crawl, cfg, seed=1234, similarity=similarity)
    evaluation["agent_score"] = agent_proba(trained.model, evaluation["text"].tolist(), cfg.max_tokens)
    evaluation["seed_similarity"] = similarity_cached(evaluation, index_prefix, retrieve_cfg, cache)
    results = {
        "rule": trained.rule.to_dict(),
        "pipeline_held_out": trained.metrics["held_out"],
        "dev": report(evaluation[evaluation["split"] == "dev"], trained.rule),
        "test": report(evaluation[evaluation["split"] == "test"], trained.rule),
        "seconds": round(time.monotonic() - started),
    }
    print(json.dumps(results, indent=1))
    test = results["test"]
    for mode in ("fasttext_only", "embed_all", "cascade"):
        t = test[mode]
        print(f"selection {mode} (test): precision {t['precision']:.4f} recall {t['recall']:.4f} f1 {t['f1']:.4f}")
    print(
        f"cascade pages embedded (test, negatives): {test['cascade_embedded_share_negatives']:.4f} "
        f"= {test['cascade_fewer_pages_embedded_x_negatives']}x fewer"
    )
    print(f"cascade recall kept vs embed_all (test): {test['cascade_recall_kept_vs_embed_all']:.4f}")


if __name__ == "__main__":
    main()
