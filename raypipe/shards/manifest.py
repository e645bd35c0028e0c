"""The run's commit marker (``manifest.json``), its document index and its datasheet (``README.md``).

Why the manifest is written last and holds no timestamp: a reader trusts the shards only once it
exists, and the same inputs and config must give a byte-identical manifest on every rerun.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from raypipe.config import RunConfig
from raypipe.shards.megatron import ShardFiles
from raypipe.storage import OutputStore, redact

MANIFEST = "manifest.json"
DATASHEET = "README.md"
DOCUMENTS = "documents"
FORMAT = "raypipe-forge-shards/1"
SCORE_COLUMNS = ("seed_similarity", "agent_score")
INDEX_COLUMNS = ["shard", "sequence", "stream", "source", "doc_id", "url", "license", "tokens", "copy"]


def documents_index(layout: pd.DataFrame, meta: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """One row per sequence in the shards, in shard order, with where it came from and its scores."""
    from raypipe.shards.layout import shard_name

    scores = [c for c in SCORE_COLUMNS if c in meta and meta[c].notna().any()]
    keep = ["stream", "doc_id", "source", "url", "license", *scores]
    index = layout.merge(meta[keep], on=["stream", "doc_id"], how="left", validate="many_to_one")
    index["shard"] = [shard_name(prefix, i) for i in index["shard"]]
    index = index.rename(columns={"n_tokens": "tokens"})
    return index[[*INDEX_COLUMNS, *scores]].sort_values(["shard", "sequence"]).reset_index(drop=True)


def write_documents_index(store: OutputStore, index: pd.DataFrame) -> list[str]:
    """``documents/<shard>.parquet`` for every shard, each written atomically."""
    written = []
    for shard, rows in index.groupby("shard", sort=True):
        table = pa.Table.from_pandas(rows.reset_index(drop=True), preserve_index=False)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        key = f"{DOCUMENTS}/{shard.rsplit('/', 1)[-1]}.parquet"
        store.write_bytes(key, buf.getvalue())
        written.append(key)
    return written


def _sources(index: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for (stream, source), rows in index.groupby(["stream", index["source"].fillna("unknown")], sort=True):
        licenses = sorted({str(v) for v in rows["license"].dropna()})
        out.append(
            {
                "stream": stream,
                "source": source,
                "licenses": licenses,
                "documents": int(rows["doc_id"].nunique()),
                "sequences": len(rows),
                "tokens": int(rows["tokens"].sum()),
            }
        )
    return out


def build_manifest(
    cfg: RunConfig,
    shards: Sequence[ShardFiles],
    index: pd.DataFrame,
    tokenizer: dict[str, Any],
    mix: dict[str, Any],
    funnel: dict[str, Any],
) -> dict[str, Any]:
    """The manifest as DESIGN.md describes it: shards, totals by source, mix, tokenizer, config hash, funnel."""
    per_shard = []
    for files in shards:
        rows = index[index["shard"] == files.path]
        per_shard.append(
            {
                "path": files.path,
                "bin": f"{files.path}.bin",
                "idx": f"{files.path}.idx",
                "documents": files.documents,
                "tokens": files.tokens,
                "tokens_by_stream": {k: int(v) for k, v in rows.groupby("stream")["tokens"].sum().items()},
                "tokens_by_source": {
                    k: int(v) for k, v in rows.groupby(rows["source"].fillna("unknown"))["tokens"].sum().items()
                },
                "sha256": files.sha256,
                "idx_sha256": files.idx_sha256,
            }
        )
    sources = _sources(index)
    by_source: dict[str, int] = {}
    for s in sources:
        by_source[s["source"]] = by_source.get(s["source"], 0) + s["tokens"]
    return {
        "format": FORMAT,
        "config_hash": cfg.config_hash(),
        "tokenizer": tokenizer,
        "shards": per_shard,
        "totals": {
            "shards": len(per_shard),
            "documents": int(sum(s.documents for s in shards)),
            "tokens": int(sum(s.tokens for s in shards)),
            "tokens_by_stream": {k: int(v) for k, v in index.groupby("stream")["tokens"].sum().items()},
            "tokens_by_source": dict(sorted(by_source.items())),
            "documents_by_stream": {k: int(v) for k, v in index.groupby("stream").size().items()},
        },
        "mix": mix,
        "sources": sources,
        "documents_index": f"{DOCUMENTS}/",
        "datasheet": DATASHEET,
        "funnel": funnel,
    }


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_datasheet(manifest: dict[str, Any], cfg: RunConfig) -> str:
    """A README a training team can read: what is in the shards, where it came from, how to load it."""
    tok = manifest["tokenizer"]
    mix = manifest["mix"]
    totals = manifest["totals"]
    streams = mix["streams"]
    mix_rows = [
        [
            s,
            f"{mix['target_ratio'].get(s, 0):.1%}",
            f"{mix['achieved_ratio'].get(s, 0):.2%}",
            f"{v['tokens']:,}",
            f"{v['selected_documents']:,}",
            f"{v['sequences']:,}",
            f"{v['available_tokens']:,}",
        ]
        for s, v in streams.items()
    ]
    source_rows = [
        [s["stream"], s["source"], ", ".join(s["licenses"]) or "not known", f"{s['documents']:,}", f"{s['tokens']:,}"]
        for s in manifest["sources"]
    ]
    shard_rows = [[s["path"], f"{s['documents']:,}", f"{s['tokens']:,}", s["sha256"][:16]] for s in manifest["shards"]]
    data_path = " ".join(f"{s['tokens']} {s['path']}" for s in manifest["shards"])
    funnel = manifest["funnel"] or {}
    funnel_text = "```json\n" + json.dumps(funnel, indent=2, sort_keys=True) + "\n```" if funnel else "(none recorded)"
    warnings = "\n".join(f"- {w}" for w in [*(funnel.get("warnings") or []), *mix["warnings"]]) or "- none"
    config = redact(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=True))
    return f"""# Forge pre-training shards: datasheet

Agent-oriented continual pre-training data built by raypipe (Hephaestus-Forge pipeline): web pages
selected as agent-relevant plus the seed corpus (`agent`), a code dataset (`code`) and general
text (`text`), mixed by tokens, tokenized and written as Megatron-LM indexed datasets.
`manifest.json` is the commit marker: trust these files only if it exists, and check each
shard's sha256 against it.

## Contents

- {totals["shards"]} shards, {totals["documents"]:,} sequences (one document per sequence, EOS appended),
  {totals["tokens"]:,} tokens.
- Tokenizer: {tok["name"]} (`{tok["kind"]}`), vocabulary {tok["vocab_size"]:,},
  EOS `{tok["eos_token"]}` = {tok["eos_id"]}, ids stored as `{tok["dtype"]}`; tokenizer file sha256 `{tok["sha256"]}`.
- `documents/*.parquet`: one row per sequence (shard, sequence index, stream, source, doc id, url,
  license, tokens, copy number and, where present, the scores that selected it).
- Config hash `{manifest["config_hash"]}`.

## Loading in Megatron-LM

Each shard is a `--data-path` prefix (`<prefix>.bin` + `<prefix>.idx`, relative to this folder);
the streams are already mixed and shuffled across shards, so weight each shard by its tokens:

```
--data-path {data_path}
```

## Mix (by tokens)

{_table(["stream", "target", "achieved", "tokens", "documents", "sequences", "available tokens"], mix_rows)}

Sequences above documents mean whole documents were repeated (upsampling). Warnings:

{warnings}

## Sources and licenses

{_table(["stream", "source", "licenses", "documents", "tokens"], source_rows)}

"not known" means the rows carried no license: web pages remain the copyright of their sites'
owners, whatever the license of the pipeline. Check the terms before redistributing.

## Shards

{_table(["path", "sequences", "tokens", "sha256 (first 16)"], shard_rows)}

## Funnel (documents in and out of every stage)

{funnel_text}

## Configuration

```yaml
{config}```
"""


def write_manifest(store: OutputStore, manifest: dict[str, Any]) -> str:
    """Write ``manifest.json`` atomically; call it last, once every shard has been validated."""
    return store.write_text(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
