"""The phase loop: ``run(cfg)`` runs each configured phase of :mod:`raypipe.phases` in order, checks
before each that its completion record was made under the same settings and inputs (else it
reruns, with the key that changed in the log), then writes ``stats.json`` and ``report.html``.
``manifest.json``, the run's commit marker, is written last by the shard phase.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from raypipe.config import RunConfig
from raypipe.phases import clean, extract, score, seeds, shard
from raypipe.phases.extract import InputsFailed
from raypipe.report import write_report
from raypipe.runtime import ensure_cwd, init_ray
from raypipe.store.state import RunState
from raypipe.store.storage import OutputStore, s3_endpoint

log = logging.getLogger(__name__)
PHASES = {"seeds": seeds.run, "extract": extract.run, "score": score.run, "clean": clean.run}
"""The phases before the shard phase, in order; each is ``run(cfg, store, state) -> summary``."""


def _resolve_endpoint(cfg: RunConfig) -> RunConfig:
    """Pin the S3 endpoint into the config shipped to workers (it is not a secret; credentials stay
    in the environment), so remote workers reach the same store as the driver."""
    endpoint = s3_endpoint(cfg.storage)
    if endpoint and not cfg.storage.endpoint_url:
        cfg = cfg.model_copy(deep=True)
        cfg.storage.endpoint_url = endpoint
    return cfg


def full_funnel(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Documents in/out of every stage, from the WARC records to the shards."""
    funnel = list(stats["extract"]["funnel"]) if "extract" in stats else []
    score, clean = stats.get("score"), stats.get("clean")
    if score:
        funnel.append({"stage": "agent_selected", "documents": score["selected"]})
    if clean and "funnel" in clean:
        funnel.extend(clean["funnel"])
    if stats.get("mix"):
        funnel.append({"stage": "in_shards", "documents": stats["mix"]["documents"]})
    return funnel


def run(cfg: RunConfig) -> dict[str, Any]:
    """Run every phase for ``cfg``, then ``stats.json`` and ``report.html``; ``manifest.json`` (the
    commit marker) is written last by the shard phase. Returns the stats."""
    cfg = _resolve_endpoint(cfg)
    init_ray(cfg)
    store = OutputStore(cfg.output, cfg.storage)
    state = RunState(store)
    timings: dict[str, float] = {}
    stats: dict[str, Any] = {"output": cfg.output, "config_hash": cfg.config_hash(), "timings": timings}
    failed: list[dict[str, str]] = []
    # The clean phase cleans the code and text datasets too, and the shard phase ships them: both
    # read "@site-packages" as the dataset written under the output prefix.
    datasets_cfg = _resolve_code_stream(cfg, store) if {"clean", "shard"} & set(cfg.phases) else cfg
    for name, phase in PHASES.items():
        if name in cfg.phases:
            ensure_cwd()
            began = time.monotonic()
            provenance = _check_phase(name, cfg, state)
            stats[name] = phase(datasets_cfg if name == "clean" else cfg, store, state)
            timings[name] = round(time.monotonic() - began, 2)
            failed = stats[name].get("failed_inputs") or []
            if failed:
                break  # later phases would build a corpus without these files
            _stamp_phase(name, provenance, state)
    if "score" in stats:
        stats["scores"] = stats["score"]["histograms"]
        stats["top_domains"] = [{"domain": d, "documents": n} for d, n in stats["score"]["top_domains"].items()]
    warnings = [w for name in PHASES if isinstance(stats.get(name), dict) for w in stats[name].get("warnings") or []]
    if "shard" in cfg.phases and not failed:
        ensure_cwd()
        began = time.monotonic()
        provenance = _check_phase("shard", cfg, state)
        manifest = shard.run(datasets_cfg, store, state, full_funnel(stats), warnings)
        _stamp_phase("shard", provenance, state)
        timings["shard"] = round(time.monotonic() - began, 2)
        stats["mix"] = {**manifest["totals"], **manifest["mix"], "tokenizer": manifest["tokenizer"]}
    stats["funnel"] = full_funnel(stats)
    stats["warnings"] = warnings
    if failed:
        stats["failed_inputs"] = failed
    store.write_text("stats.json", json.dumps(stats, indent=2, sort_keys=True, default=str))
    write_report(stats, store)
    for warning in warnings:
        log.error("%s", warning)
    if failed:
        log.error(
            "run incomplete: %d input files could not be read after retries (stats.json failed_inputs):", len(failed)
        )
        for item in failed:
            log.error("failed input: %s: %s", item["uri"], item["error"])
        log.error("rerun the same config to read them again; finished files are kept")
        raise InputsFailed(failed)
    return stats


def _resolve_code_stream(cfg: RunConfig, store: OutputStore) -> RunConfig:
    """``mix.code.uri: "@site-packages"``: the installed packages' sources, written once under the
    output prefix (``raypipe.defaults``) so the workers read them like any configured dataset."""
    from raypipe.defaults import SITE_PACKAGES, materialize_site_packages

    code = cfg.mix.code
    if code is None or code.uri != SITE_PACKAGES:
        return cfg
    resolved = code.model_copy(
        update={"uri": materialize_site_packages(store), "id_field": "id", "name": code.name or "site_packages"}
    )
    return cfg.model_copy(update={"mix": cfg.mix.model_copy(update={"code": resolved})})


@dataclass
class _Provenance:
    settings: dict[str, Any]
    reason: str | None
    previous: dict[str, Any] | None


def _check_phase(name: str, cfg: RunConfig, state: RunState) -> _Provenance:
    """Before a phase: if its done record was made under other settings or inputs, say which key
    changed and mark it stale, so the phase (and, through the fingerprints, every later one) reruns."""
    settings = cfg.phase_settings(name)
    previous = state.phase(name)
    reason = state.stale_reason(name, settings)
    if reason:
        log.warning("%s: rerunning: %s", name, reason)
        state.invalidate(name, reason)
    return _Provenance(settings, reason, previous)


def _stamp_phase(name: str, p: _Provenance, state: RunState) -> None:
    """After a phase: record what produced its output (a skipped, current phase keeps its record)."""
    record = state.phase(name) or {}
    previous = p.previous or {}
    if record.get("fingerprint") and record.get("fingerprint") == previous.get("fingerprint"):
        return
    if p.reason is None and previous.get("status") == "done" and previous.get("inputs") != record.get("inputs"):
        p.reason = f"input files changed ({previous.get('files_total')} -> {record.get('files_total')} files)"
        log.warning("%s: %s", name, p.reason)
    state.stamp(name, p.settings, p.reason)
