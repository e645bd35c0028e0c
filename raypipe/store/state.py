"""Run state under ``<output>/_state/``: per-unit completion records and phase summaries.

Why: a build runs for hours and nodes die. A unit (one input WARC file in the crawl phase) is
only marked done after all of its rows are durably written, so a rerun of the same config skips
exactly the finished units and redoes the rest. ``raypipe status`` reads the same records.

Why a journal: at dump scale (90,000 input files) one object per completion record costs one
PUT per finished file and one GET per record on every resume check. Records are appended in
batches instead (:class:`UnitJournal`) to numbered, gzipped JSON-lines objects under
``journal/``; the resume check lists that folder once and reads a handful of objects, and
:meth:`RunState.compact` folds them into one. A batch is written only after every unit in it is
durably written, so a crash loses at most the batch in flight: those units are redone, and their
parts, named by content, are rewritten under the same keys. Each entry says ``done``, ``failed``
or ``removed``; the last entry for a unit wins.

A unit whose input could not be read (after every retry) is recorded as failed, with its error,
and never as done: a rerun reads it again. Outputs written by older code keep one object per
record under ``units/`` and ``failed/``; they are read (in parallel) and folded into the journal
by the next :meth:`RunState.compact`.

Why phases record what produced them: a phase marked done is only reused while its output is
still what this config would write. Each completion record stores the values of the config keys
that change the phase's output (``RunConfig.phase_settings``) and the fingerprints of the phases
it read (``UPSTREAM``); its own fingerprint hashes both, plus its inputs (the extract phase's file
list). A changed key, or an upstream phase that was redone, makes the phase stale, and the reason
(which key, from what to what) is logged and kept in the record for ``raypipe status``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
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


JOURNAL = "journal"
_JOURNAL_NAME = re.compile(r"^(\d{10})\.jsonl\.gz$")
_READ_THREADS = 32  # parallel GETs of state objects: each is one small round trip


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
        """Where older code kept one unit's completion record (read, never written, since the journal)."""
        return f"{STATE}/{phase}/units/{unit}.json"

    def journal(self, phase: str, every: int = 500, every_s: float = 10.0) -> UnitJournal:
        """A writer of ``phase``'s unit records, numbering its objects after those already there."""
        keys = self._journal_keys(phase)
        last = int(_JOURNAL_NAME.match(keys[-1].rsplit("/", 1)[-1]).group(1)) if keys else -1
        return UnitJournal(self, phase, last + 1, every, every_s)

    def _journal_keys(self, phase: str, keys: list[str] | None = None) -> list[str]:
        keys = self.store.list(f"{STATE}/{phase}/{JOURNAL}") if keys is None else keys
        return [k for k in keys if k.rsplit("/", 2)[-2] == JOURNAL and _JOURNAL_NAME.match(k.rsplit("/", 1)[-1])]

    def _read_many(self, keys: list[str]) -> list[bytes]:
        if len(keys) <= 1:
            return [self.store.read_bytes(k) for k in keys]
        with ThreadPoolExecutor(min(_READ_THREADS, len(keys))) as pool:
            return list(pool.map(self.store.read_bytes, keys))

    def _legacy(self, keys: list[str], folder: str) -> tuple[list[str], dict[str, dict[str, Any]]]:
        keys = [k for k in keys if k.rsplit("/", 2)[-2] == folder and k.endswith(".json")]
        blobs = self._read_many(keys)
        records = {k.rsplit("/", 1)[-1][: -len(".json")]: json.loads(b) for k, b in zip(keys, blobs, strict=True)}
        return keys, records

    def _entries(self, phase: str) -> tuple[dict[str, tuple[str, dict[str, Any]]], list[str], list[str]]:
        """Every unit's latest (status, record), with the journal's keys and the older layout's keys.

        One listing of the phase's folder. Order: the older layout's records first (failed over
        done, as older code deleted a failed record when its unit completed), then the journal's
        objects in number order.
        """
        listed = self.store.list(f"{STATE}/{phase}")
        legacy_done, done = self._legacy(listed, "units")
        legacy_failed, failed = self._legacy(listed, "failed")
        latest: dict[str, tuple[str, dict[str, Any]]] = {u: ("done", r) for u, r in done.items()}
        latest.update((u, ("failed", r)) for u, r in failed.items())
        keys = self._journal_keys(phase, listed)
        for blob in self._read_many(keys):
            for line in gzip.decompress(blob).splitlines():
                if line.strip():
                    entry = json.loads(line)
                    latest[entry["unit"]] = (entry["status"], entry.get("record") or {})
        return latest, keys, legacy_done + legacy_failed

    def failures(self, phase: str) -> dict[str, dict[str, Any]]:
        """Every unit of a phase whose last attempt failed, with its record (``uri``, ``error``)."""
        return {u: r for u, (status, r) in self._entries(phase)[0].items() if status == "failed"}

    def units(self, phase: str) -> dict[str, dict[str, Any]]:
        """Every completed unit of a phase and its record."""
        return {u: r for u, (status, r) in self._entries(phase)[0].items() if status == "done"}

    def compact(self, phase: str, min_objects: int = 2) -> None:
        """Fold the journal (and records of older code) into one object, if it has ``min_objects``
        or more, and drop the objects it replaces.

        The merged object takes the last journal object's number, written atomically over it, so
        it is read last: a crash before the old objects are deleted leaves duplicates, which agree.
        """
        if min_objects > 2 and len(self._journal_keys(phase)) < min_objects:
            return  # one listing; records of older code are folded in by the next full compaction
        latest, keys, legacy = self._entries(phase)
        if not legacy and len(keys) < 2:
            return  # already one object, or none
        entries = [{"unit": u, "status": s, "record": r} for u, (s, r) in sorted(latest.items()) if s != "removed"]
        target = keys[-1] if keys else f"{STATE}/{phase}/{JOURNAL}/{0:010d}.jsonl.gz"
        self.store.write_bytes(target, _encode(entries))
        self.store.delete_keys([k for k in keys if k != target] + legacy)

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


def _encode(entries: list[dict[str, Any]]) -> bytes:
    return gzip.compress("".join(json.dumps(e, sort_keys=True) + "\n" for e in entries).encode(), compresslevel=6)


class UnitJournal:
    """Unit records of one phase, written in batches as numbered objects under ``journal/``.

    ``done``/``failed``/``removed`` buffer an entry; the batch is written when ``every`` entries
    are waiting or ``every_s`` seconds have passed since the last write (the first entry is written
    at once, so a run shows progress early), and always by :meth:`flush`. The caller adds a unit
    only once its output is durable: what the buffer holds when the driver dies is redone.
    """

    def __init__(self, state: RunState, phase: str, next_number: int, every: int = 500, every_s: float = 10.0):
        self.state, self.phase = state, phase
        self.number = next_number
        self.every, self.every_s = every, every_s
        self.pending: list[dict[str, Any]] = []
        self.last_write = float("-inf")

    def done(self, unit: str, record: dict[str, Any]) -> bool:
        return self._add(unit, "done", record)

    def failed(self, unit: str, record: dict[str, Any]) -> bool:
        return self._add(unit, "failed", record)

    def removed(self, unit: str) -> bool:
        return self._add(unit, "removed", {})

    def _add(self, unit: str, status: str, record: dict[str, Any]) -> bool:
        """Buffer one entry; True when this call wrote the batch."""
        self.pending.append({"unit": unit, "status": status, "record": record})
        if len(self.pending) >= self.every or time.monotonic() - self.last_write >= self.every_s:
            self.flush()
            return True
        return False

    def flush(self) -> None:
        """Write the buffered entries as the next numbered object (nothing when none wait)."""
        self.last_write = time.monotonic()
        if not self.pending:
            return
        key = f"{STATE}/{self.phase}/{JOURNAL}/{self.number:010d}.jsonl.gz"
        self.state.store.write_bytes(key, _encode(self.pending))
        self.number += 1
        self.pending = []
