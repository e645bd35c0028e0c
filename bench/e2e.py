"""End-to-end CPU throughput (extract, filter, dedup, tokenize) against the closest DataTrove pipeline.

raypipe's stages run in one process on the same WARC, each timed on its own:

- extract+filter: ``read_warc_file`` + ``ExtractStage`` + its ``Select`` (language, Gopher quality), keep what passes;
- dedup: exact + MinHash-LSH from ``raypipe.dedup`` (fingerprints, then the per-partition grouping
  that the distributed plan runs after its shuffle, here on one partition);
- tokenize: ``raypipe.shards.tokenizer.TokenizeStage`` (LLaMA-3 by default).

A stage whose module is not in this checkout yet is reported as ``n/a`` and left out of the
totals on both sides, so the ratio always compares the same stages. DataTrove's side is
``bench/peer_datatrove.py e2e`` (its MinHash dedup and DocumentTokenizer with the same LLaMA-3
vocabulary, converted to a tokenizer.json by ``llama3_tokenizer_json``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from bench.measure import Measure, PeerError, run_peer, timed
from bench.peers import BENCH_DIR, PEERS, ensure_peer

BENCH = Path(__file__).resolve().parent
STAGES = ("extract+filter", "dedup", "tokenize")
Stage = Callable[[pd.DataFrame], pd.DataFrame]


def _plugin(*modules: str) -> list[Any] | str:
    """Import the named raypipe modules, or say which one this checkout does not have yet."""
    try:
        return [importlib.import_module(m) for m in modules]
    except ImportError as e:
        return f"n/a ({e.name or modules[0]} is not in this checkout)"


def _build_dedup(minhash: Any, exact: Any, lsh: Any, verify: Any) -> Stage:
    """Dedup of one frame of kept documents: fingerprints, then exact and near duplicates in one
    partition (what each partition of the distributed plan runs after its shuffle)."""
    from raypipe import config

    cfg = config.DedupConfig()
    fingerprint = minhash.DedupFingerprinter(cfg)

    def dedup(docs: pd.DataFrame) -> pd.DataFrame:
        fp = fingerprint(docs)
        dups = exact.exact_duplicates_in_partition(fp[["doc_id", "text_hash"]])
        edges = lsh.bucket_edges(
            lsh.bucket_rows(fp), threshold=cfg.threshold, verify=cfg.verify_candidates, collapse_exact=True
        )
        if cfg.verify_candidates and len(edges):
            edges = verify.verify_in_one_partition(edges, docs, cfg.threshold, cfg.verify_margin, cfg.shingle_words)
        removed = set(dups["doc_id"]) | set(edges.loc[edges["verified"], "src"])
        return docs[~docs["doc_id"].isin(removed)]

    return dedup


def _build_tokenize(tokenizer: Any) -> Stage:
    from raypipe import config

    return tokenizer.TokenizeStage(config.TokenizerConfig())


# stage -> (modules it needs, builder taking those modules); set-up is timed with the stage, as
# DataTrove's own set-up (its tokenizer load, for one) is inside its step's time.
PLUGINS: dict[str, tuple[tuple[str, ...], Callable[..., Stage]]] = {
    "dedup": (
        ("raypipe.dedup.minhash", "raypipe.dedup.exact", "raypipe.dedup.lsh", "raypipe.dedup.verify"),
        _build_dedup,
    ),
    "tokenize": (("raypipe.shards.tokenizer",), _build_tokenize),
}


def raypipe_e2e(warc: Path) -> dict[str, Measure | str]:
    """Each raypipe stage's measure on ``warc`` (or its n/a reason)."""
    from bench.extract import raypipe_extract_frame

    results: dict[str, Measure | str] = {}
    holder: dict[str, Any] = {}

    def extract_filter() -> tuple[int, int, dict]:
        pages, docs = raypipe_extract_frame(warc)
        holder["docs"] = docs[docs["drop_reason"].isna()][["doc_id", "url", "text"]].reset_index(drop=True)
        return pages, len(holder["docs"]), {}

    results["extract+filter"] = timed("raypipe extract+filter", extract_filter)
    for name, (modules, build) in PLUGINS.items():
        found = _plugin(*modules)
        if isinstance(found, str):
            results[name] = found
            continue

        def run(build: Callable[..., Stage] = build, found: list[Any] = found) -> tuple[int, int, dict]:
            docs_in = holder["docs"]
            out = build(*found)(docs_in.copy())
            details = {"tokens": int(out["n_tokens"].sum())} if "n_tokens" in out else {}
            holder["docs"] = out
            return len(docs_in), len(out), details

        try:
            results[name] = timed(f"raypipe {name}", run)
        except Exception as e:  # noqa: BLE001 - a stage still being built must not end the benchmark
            results[name] = f"n/a (error: {type(e).__name__}: {e})"
    return results


def llama3_tokenizer_json(root: Path = BENCH_DIR) -> Path:
    """LLaMA-3's BPE (from the llama-models wheel) as a HF tokenizer.json, for DataTrove's tokenizer."""
    import importlib.resources

    path = root / "llama3-tokenizer.json"
    if path.is_file():
        return path
    from transformers.convert_slow_tokenizer import TikTokenConverter

    found = _plugin("raypipe.shards.tokenizer")
    specials = ["<|begin_of_text|>", "<|end_of_text|>"] if isinstance(found, str) else found[0].LLAMA3_SPECIAL_TOKENS
    model = importlib.resources.files("llama_models") / "llama3" / "tokenizer.model"
    tokenizer = TikTokenConverter(vocab_file=str(model), extra_special_tokens=list(specials)).converted()
    root.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return path


def datatrove_e2e(warc: Path, log=print) -> dict[str, Measure | str]:
    python = ensure_peer(PEERS["datatrove"], log=log)
    if python is None:
        return dict.fromkeys(STAGES, "n/a (install failed)")
    args = ["e2e", str(warc), "--tokenizer", str(llama3_tokenizer_json())]
    try:
        res = run_peer(python, BENCH / "peer_datatrove.py", args, timeout_s=3600)
    except PeerError as e:
        log(f"datatrove e2e: {e}")
        return dict.fromkeys(STAGES, "n/a (run failed)")
    return {
        name: Measure(f"datatrove {name}", r["docs_in"], r["docs_out"], r["wall_s"], r["cpu_s"])
        for name, r in res.items()
    }


def e2e_ratio(ours: dict[str, Measure | str], theirs: dict[str, Measure | str]) -> tuple[str, float | str]:
    """(ratio name, ratio) over the stages both sides have: pages in per total CPU-second."""
    common = [s for s in STAGES if isinstance(ours.get(s), Measure) and isinstance(theirs.get(s), Measure)]
    if "extract+filter" not in common:
        return "e2e vs datatrove", "n/a"
    name = "e2e vs datatrove" if len(common) == len(STAGES) else f"e2e ({'+'.join(common)}) vs datatrove"
    pages_ours = ours["extract+filter"].docs_in  # type: ignore[union-attr]
    pages_theirs = theirs["extract+filter"].docs_in  # type: ignore[union-attr]
    rate_ours = pages_ours / sum(ours[s].cpu_s for s in common)  # type: ignore[union-attr]
    rate_theirs = pages_theirs / sum(theirs[s].cpu_s for s in common)  # type: ignore[union-attr]
    return name, rate_ours / rate_theirs
