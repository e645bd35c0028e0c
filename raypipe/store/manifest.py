"""The run's commit marker (``manifest.json``), its document index and its datasheet (``README.md``).

Why the manifest is written last and holds no timestamp: a reader trusts the shards only once it
exists, and the same inputs and config must give a byte-identical manifest on every rerun.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import yaml

from raypipe.config import RunConfig
from raypipe.store.storage import OutputStore, redact

MANIFEST = "manifest.json"
DATASHEET = "README.md"
DOCUMENTS = "documents"
FORMAT = "raypipe-forge-shards/2"


def _sources(shards: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Documents, tokens and licenses per (stream, source), summed over the shards' summaries."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for shard in shards:
        for source, facts in json.loads(shard["sources"]).items():
            entry = merged.setdefault((shard["stream"], source), {"documents": 0, "tokens": 0, "licenses": set()})
            entry["documents"] += facts["documents"]
            entry["tokens"] += facts["tokens"]
            entry["licenses"].update(facts["licenses"])
    return [
        {"stream": stream, "source": source, **{**v, "licenses": sorted(v["licenses"])}}
        for (stream, source), v in sorted(merged.items())
    ]


def _sum_by(shards: Sequence[dict[str, Any]], key: str, value: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in shards:
        out[s[key]] = out.get(s[key], 0) + int(s[value])
    return dict(sorted(out.items()))


def build_manifest(
    cfg: RunConfig,
    shards: Sequence[dict[str, Any]],
    weights: Sequence[float],
    tokenizer: dict[str, Any],
    mix: dict[str, Any],
    funnel: dict[str, Any],
) -> dict[str, Any]:
    """The manifest as DESIGN.md describes it, from one summary row per shard (sorted by path):
    shards with their blend weights, totals by stream and source, mix, tokenizer, config hash, funnel."""
    per_shard = []
    for shard, weight in zip(shards, weights, strict=True):
        sources = json.loads(shard["sources"])
        per_shard.append(
            {
                "path": shard["path"],
                "bin": f"{shard['path']}.bin",
                "idx": f"{shard['path']}.idx",
                "stream": shard["stream"],
                "repeat": int(shard["repeat"]),
                "generation": int(shard["generation"]),
                "weight": weight,
                "documents": int(shard["documents"]),
                "tokens": int(shard["tokens"]),
                "tokens_by_stream": {shard["stream"]: int(shard["tokens"])},
                "tokens_by_source": {k: int(v["tokens"]) for k, v in sorted(sources.items())},
                "sha256": shard["sha256"],
                "idx_sha256": shard["idx_sha256"],
            }
        )
    sources = _sources(shards)
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
            "documents": sum(s["documents"] for s in per_shard),
            "tokens": sum(s["tokens"] for s in per_shard),
            "tokens_by_stream": _sum_by(shards, "stream", "tokens"),
            "tokens_by_source": dict(sorted(by_source.items())),
            "documents_by_stream": _sum_by(shards, "stream", "documents"),
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
            f"{v['documents']:,}",
            f"{v['epochs']:g}",
            f"{v['available_tokens']:,}",
        ]
        for s, v in streams.items()
    ]
    source_rows = [
        [s["stream"], s["source"], ", ".join(s["licenses"]) or "not known", f"{s['documents']:,}", f"{s['tokens']:,}"]
        for s in manifest["sources"]
    ]
    shard_rows = [[s["path"], f"{s['documents']:,}", f"{s['tokens']:,}", s["sha256"][:16]] for s in manifest["shards"]]
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

- {totals["shards"]} shards in one set per stream (`shards/<stream>/`), {totals["documents"]:,} sequences
  (one document per sequence, EOS appended), {totals["tokens"]:,} tokens.
- Tokenizer: {tok["name"]} (`{tok["kind"]}`), vocabulary {tok["vocab_size"]:,},
  EOS `{tok["eos_token"]}` = {tok["eos_id"]}, ids stored as `{tok["dtype"]}`; tokenizer file sha256 `{tok["sha256"]}`.
- `documents/<stream>/*.parquet`: one row per sequence (shard, sequence index, stream, source, doc id,
  url, license, tokens, repeat factor and, where present, the scores that selected it).
- Config hash `{manifest["config_hash"]}`.

## Loading in Megatron-LM

Each shard is a `--data-path` prefix (`<prefix>.bin` + `<prefix>.idx`, relative to this folder).
The streams are separate shard sets; these weights make Megatron's blended dataset draw them at
the target ratio (each stream's shards in proportion to their tokens):

```
--data-path {mix["data_path"]}
```

For another ratio, without re-tokenizing: `raypipe mix <this folder> --ratio agent=2,code=1,text=1`.

## Mix (by tokens)

{_table(["stream", "target", "achieved", "shipped tokens", "documents", "epochs", "available tokens"], mix_rows)}

"achieved" is the share the blend weights draw; "epochs" is how often a stream's shipped tokens are
drawn at the planned total of {mix["total_tokens"]:,} tokens (above 1: repeated). Warnings:

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
