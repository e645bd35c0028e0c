"""Run state under ``<output>/_state/``: per-unit completion records and phase summaries.

Why: a build runs for hours and nodes die. A unit (one input WARC file in the crawl phase) is
only marked done after all of its rows are durably written, so a rerun of the same config skips
exactly the finished units and redoes the rest. ``raypipe status`` reads the same records.

A unit whose input could not be read (after every retry) is recorded under ``failed/``, with its
error, and never under ``units/``: a rerun reads it again.

Why phases record what produced them: a phase marked done is only reused while its output is
still what this config would write. Each completion record stores the values of the config keys
that change the phase's output (``RunConfig.phase_settings``) and the fingerprints of the phases
it read (``UPSTREAM``); its own fingerprint hashes both, plus its inputs (the extract phase's file
list). A changed key, or an upstream phase that was redone, makes the phase stale, and the reason
(which key, from what to what) is logged and kept in the record for ``raypipe status``.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from raypipe.store.storage import OutputStore

STATE = "_state"
# The phases whose output each phase reads: redoing one of them makes the reader stale.
UPSTREAM: dict[str, tuple[str, ...]] = {
    "seeds": (),
    "extract": (),
    "score": ("seeds", "extract"),
    "clean": ("seeds", "score"),
    "shard": ("clean",),
}


def digest(value: Any) -> str:
    """A short stable hash of a JSON value (settings, input lists)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [
        f"{k} changed ({old.get(k)!r} -> {new.get(k)!r})"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]


class RunState:
    def __init__(self, store: OutputStore):
        self.store = store

    def unit_key(self, phase: str, unit: str) -> str:
        return f"{STATE}/{phase}/units/{unit}.json"

    def mark_unit(self, phase: str, unit: str, record: dict[str, Any]) -> None:
        self.store.write_text(self.unit_key(phase, unit), json.dumps(record, sort_keys=True))
        failed = f"{STATE}/{phase}/failed/{unit}.json"
        if self.store.exists(failed):
            self.store.delete(failed)

    def mark_failed(self, phase: str, unit: str, record: dict[str, Any]) -> None:
        """Record a unit whose input could not be read: it is not done, and a rerun retries it."""
        self.store.write_text(f"{STATE}/{phase}/failed/{unit}.json", json.dumps(record, sort_keys=True))

    def failures(self, phase: str) -> dict[str, dict[str, Any]]:
        """Every unit of a phase whose last attempt failed, with its record (``uri``, ``error``)."""
        out = {}
        for key in self.store.list(f"{STATE}/{phase}/failed"):
            if key.endswith(".json"):
                out[key.rsplit("/", 1)[-1][: -len(".json")]] = json.loads(self.store.read_bytes(key))
        return out

    def units(self, phase: str) -> dict[str, dict[str, Any]]:
        """Every completed unit of a phase and its record."""
        out = {}
        for key in self.store.list(f"{STATE}/{phase}/units"):
            if key.endswith(".json"):
                name = key.rsplit("/", 1)[-1][: -len(".json")]
                out[name] = json.loads(self.store.read_bytes(key))
        return out

    def set_phase(self, phase: str, status: str, **info: Any) -> None:
        """Record a phase's status (running, done) with progress fields for ``raypipe status``."""
        record = {"phase": phase, "status": status, "updated": time.time(), **info}
        self.store.write_text(f"{STATE}/{phase}/phase.json", json.dumps(record, sort_keys=True))

    def finished(self, phase: str) -> dict[str, Any] | None:
        """The summary of a phase that completed on an earlier run (a rerun skips it), else None."""
        record = self.phase(phase)
        return record["summary"] if record and record["status"] == "done" else None

    def stale_reason(self, phase: str, settings: dict[str, Any]) -> str | None:
        """Why a phase recorded as done must be redone for these settings; None if it is current
        (or has no done record, in which case it runs anyway)."""
        record = self.phase(phase)
        if not record or record["status"] != "done":
            return None
        if "settings" not in record:
            return "its completion record has no settings (written by an older raypipe)"
        changes = _changes(record["settings"], settings)
        if changes:
            return "; ".join(changes)
        for up in UPSTREAM[phase]:
            now = (self.phase(up) or {}).get("fingerprint")
            if record.get("upstream", {}).get(up) != now:
                cause = (self.phase(up) or {}).get("rerun_because")
                return f"its input, the {up} phase's output, changed" + (f" ({up}: {cause})" if cause else "")
        return None

    def invalidate(self, phase: str, reason: str) -> None:
        """Mark a done phase stale, so that ``finished`` no longer returns it and it runs again."""
        record = self.phase(phase) or {"phase": phase}
        record.update(status="stale", rerun_because=reason, updated=time.time())
        self.store.write_text(f"{STATE}/{phase}/phase.json", json.dumps(record, sort_keys=True))

    def stamp(self, phase: str, settings: dict[str, Any], rerun_because: str | None) -> str:
        """Add what produced a phase's output to its completion record; returns its fingerprint."""
        record = self.phase(phase) or {"phase": phase, "status": "done", "updated": time.time()}
        upstream = {up: (self.phase(up) or {}).get("fingerprint") for up in UPSTREAM[phase]}
        record.update(settings=settings, upstream=upstream, settings_hash=digest(settings))
        record["fingerprint"] = digest([settings, upstream, record.get("inputs")])
        if rerun_because:
            record["rerun_because"] = rerun_because
        else:
            record.pop("rerun_because", None)
        self.store.write_text(f"{STATE}/{phase}/phase.json", json.dumps(record, sort_keys=True))
        return record["fingerprint"]

    def phase(self, phase: str) -> dict[str, Any] | None:
        key = f"{STATE}/{phase}/phase.json"
        return json.loads(self.store.read_bytes(key)) if self.store.exists(key) else None

    def phases(self) -> list[dict[str, Any]]:
        found = []
        for key in self.store.list(STATE):
            if key.endswith("/phase.json"):
                found.append(json.loads(self.store.read_bytes(key)))
        return sorted(found, key=lambda r: r.get("started", r["updated"]))
