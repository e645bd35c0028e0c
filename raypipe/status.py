"""What ``raypipe status OUTPUT`` prints: each phase's progress from the run state alone.

Why from the state files: the driver may be on another machine (a RayJob pod) or gone; the
output prefix is the one place every run writes to. A phase record (``_state/<phase>/phase.json``)
carries its status, ``started``/``updated`` times and ``files_done``/``files_total``; the completed
unit records (``_state/<phase>/units/*.json``) carry the documents written per input file, and
the failed ones (``_state/<phase>/failed/*.json``) the error that stopped their read. A phase's
``fingerprint`` (what produced its output) and ``rerun_because`` (the changed key that made it
rerun) are shown with its other one-line facts.
"""

from __future__ import annotations

import json
import time
from typing import Any

from raypipe.store.state import RunState
from raypipe.store.storage import OutputStore

_SHOWN = {"phase", "status", "updated", "started", "files_done", "files_total", "docs", "inputs", "settings_hash"}


def phase_progress(record: dict[str, Any], units: dict[str, dict[str, Any]], now: float) -> dict[str, Any]:
    """Numbers for one phase: files, documents, elapsed, rate and (while running) ETA and staleness."""
    status = record.get("status", "?")
    started = record.get("started")
    updated = record.get("updated")
    end = now if status == "running" else (updated or now)
    elapsed = max(0.0, end - started) if started else None
    unit_docs = sum(int(u.get("documents", 0)) for u in units.values())
    docs = max(unit_docs, int(record.get("docs") or 0)) if units or "docs" in record else None
    done, total = record.get("files_done"), record.get("files_total")
    if done is None and units:
        done = len(units)
    out: dict[str, Any] = {
        "phase": record.get("phase", "?"),
        "status": status,
        "files_done": done,
        "files_total": total,
        "docs": docs,
        "elapsed_s": elapsed,
        "docs_per_s": docs / elapsed if elapsed and docs is not None else None,
    }
    if status == "running":
        out["since_update_s"] = max(0.0, now - updated) if updated else None
        out["eta_s"] = None
        if elapsed and done and total is not None and total > done:
            out["eta_s"] = (total - done) * elapsed / done
        elif total is not None and done is not None and done >= total:
            out["eta_s"] = 0.0
    out["extra"] = _scalars({k: v for k, v in record.items() if k not in _SHOWN})
    return out


def _scalars(info: dict[str, Any]) -> dict[str, Any]:
    """The one-line facts of a phase record: its scalar fields and those of its ``summary``
    (phases put histograms and per-round tables there too, which belong in report.html)."""
    flat = {k: v for k, v in info.items() if k != "summary"}
    if isinstance(info.get("summary"), dict):
        flat.update({k: v for k, v in info["summary"].items() if k not in flat})
    return {k: v for k, v in flat.items() if isinstance(v, (str, int, float, bool)) and k != "seconds"}


def status_lines(store: OutputStore, now: float | None = None) -> list[str] | None:
    """The status report for the run under ``store``; None when there is no run state there."""
    now = time.time() if now is None else now
    state = RunState(store)
    phases = state.phases()
    if not phases:
        return None
    lines = [f"run: {store.prefix}"]
    for record in phases:
        lines.append(_format(phase_progress(record, state.units(record["phase"]), now)))
        for failure in state.failures(record["phase"]).values():
            lines.append(f"  failed: {failure.get('uri')}: {failure.get('error')}")
    lines.append(_committed(store))
    return lines


def _format(p: dict[str, Any]) -> str:
    parts = [f"{p['phase']:<10}", f"{p['status']:<8}"]
    if p["files_total"] is not None:
        parts.append(f"{p['files_done'] or 0}/{p['files_total']} files")
    elif p["files_done"] is not None:
        parts.append(f"{p['files_done']} files")
    if p["docs"] is not None:
        parts.append(f"{p['docs']:,} docs")
    if p["elapsed_s"] is not None:
        parts.append(f"{'elapsed' if p['status'] == 'running' else 'in'} {duration(p['elapsed_s'])}")
    if p["docs_per_s"] is not None:
        parts.append(f"{p['docs_per_s']:.1f} docs/s")
    if p["status"] == "running":
        eta = p.get("eta_s")
        parts.append(f"ETA {duration(eta)}" if eta is not None else "ETA ?")
        if p.get("since_update_s") is not None:
            parts.append(f"(last update {duration(p['since_update_s'])} ago)")
    for key, value in p["extra"].items():
        shown = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
        parts.append(f"{key}={shown}")
    return "  ".join(parts)


def _committed(store: OutputStore) -> str:
    if not store.exists("manifest.json"):
        return "committed: no (no manifest.json yet)"
    try:
        totals = json.loads(store.read_bytes("manifest.json")).get("totals") or {}
    except ValueError:
        return "committed: yes (manifest.json present, unreadable)"
    if totals:
        return (
            f"committed: yes (manifest.json: {totals.get('shards', '?')} shards, "
            f"{totals.get('documents', 0):,} documents, {totals.get('tokens', 0):,} tokens)"
        )
    return "committed: yes (manifest.json present)"


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
