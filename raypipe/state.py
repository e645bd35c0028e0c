"""Run state under ``<output>/_state/``: per-unit completion records and phase summaries.

Why: a build runs for hours and nodes die. A unit (one input WARC file in the crawl phase) is
only marked done after all of its rows are durably written, so a rerun of the same config skips
exactly the finished units and redoes the rest. ``raypipe status`` reads the same records.
"""

from __future__ import annotations

import json
import time
from typing import Any

from raypipe.storage import OutputStore

STATE = "_state"


class RunState:
    def __init__(self, store: OutputStore):
        self.store = store

    def unit_key(self, phase: str, unit: str) -> str:
        return f"{STATE}/{phase}/units/{unit}.json"

    def mark_unit(self, phase: str, unit: str, record: dict[str, Any]) -> None:
        self.store.write_text(self.unit_key(phase, unit), json.dumps(record, sort_keys=True))

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

    def phase(self, phase: str) -> dict[str, Any] | None:
        key = f"{STATE}/{phase}/phase.json"
        return json.loads(self.store.read_bytes(key)) if self.store.exists(key) else None

    def phases(self) -> list[dict[str, Any]]:
        found = []
        for key in self.store.list(STATE):
            if key.endswith("/phase.json"):
                found.append(json.loads(self.store.read_bytes(key)))
        return sorted(found, key=lambda r: r.get("started", r["updated"]))
