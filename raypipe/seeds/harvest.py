"""Python-module API harvester: one ``api_doc`` seed per public function, class and method.

The paper counts documented APIs; here they come from introspecting importable modules (the
standard library and installed distributions by default). Importing arbitrary code is unsafe in
process, so a child interpreter (harvest_child.py) does it and streams JSON lines back; a module
that hangs past its time limit is recorded and the child restarted after it, one that fails to
import is recorded too. Nothing is dropped without a count in the returned stats.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import selectors
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from raypipe.config import SeedsConfig
from raypipe.seeds.records import make_seed
from raypipe.seeds.render import doc_page, rst_to_text

CHILD = Path(__file__).with_name("harvest_child.py")
MODULES_PER_CHILD = 40  # restart the child this often so imported modules do not pile up in memory
STDLIB_LICENSE = "PSF-2.0"


def _public(name: str) -> bool:
    return bool(name) and not name.startswith("_") and name.isidentifier()


def _importable(name: str) -> bool:
    """Whether a top-level module can be found; a module already loaded without a spec (some
    packages install such shims into sys.modules) makes find_spec raise ValueError."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def expand_modules(cfg: SeedsConfig) -> list[str]:
    """Top-level module names: ``@stdlib`` and ``@installed`` expanded, excludes removed, in order."""
    excluded = set(cfg.harvest_exclude)
    out: list[str] = []
    for item in cfg.harvest_modules:
        if item == "@stdlib":
            names = sorted(sys.stdlib_module_names)
        elif item == "@installed":
            names = sorted(n for n in importlib.metadata.packages_distributions() if n not in sys.stdlib_module_names)
        else:
            names = [item]
        for name in names:
            if _public(name.split(".")[0]) and name not in excluded and name.split(".")[0] not in excluded:
                if name == item or _importable(name):
                    out.append(name)
    seen: set[str] = set()
    return [n for n in out if not (n in seen or seen.add(n))]


def _license_of(top: str, dists: dict[str, list[str]]) -> str | None:
    if top in sys.stdlib_module_names:
        return STDLIB_LICENSE
    for dist in dists.get(top, []):
        meta = importlib.metadata.metadata(dist)
        lic = meta.get("License-Expression") or (meta.get("License") or "").split("\n")[0].strip()
        if not lic:
            lic = next(
                (c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License")), ""
            )
        if lic:
            return lic[:80]
    return None


class _LineReader:
    """Lines from a pipe with a deadline; reads the fd directly so no line hides in a buffer."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = b""
        self.sel = selectors.DefaultSelector()
        self.sel.register(fd, selectors.EVENT_READ)

    def next(self, deadline: float) -> bytes | None:
        """The next line; ``b""`` at end of stream; None when the deadline passes first."""
        while b"\n" not in self.buf:
            if not self.sel.select(timeout=max(0.0, deadline - time.monotonic())):
                return None
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                line, self.buf = self.buf, b""
                return line
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def close(self) -> None:
        self.sel.close()


def _run_child(modules: list[str], cfg: SeedsConfig, stats: Counter, failures: list[str]) -> Iterator[dict]:
    """Stream the child's events; on a module timeout kill it and resume after that module."""
    pending = list(modules)
    while pending:
        batch, pending = pending[:MODULES_PER_CHILD], pending[MODULES_PER_CHILD:]
        proc = subprocess.Popen(
            [sys.executable, "-X", "utf8", str(CHILD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg"},
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(
            json.dumps(
                {
                    "modules": batch,
                    "max_submodules": cfg.harvest_max_submodules,
                    "max_apis_per_module": cfg.harvest_max_apis_per_module,
                }
            ).encode()
        )
        proc.stdin.close()
        lines = _LineReader(proc.stdout.fileno())
        # until the child announces a module, a stall is blamed on the first one, so a retry always advances
        current, deadline, done = batch[0], time.monotonic() + cfg.harvest_module_timeout_s, set()
        try:
            while True:
                line = lines.next(deadline)
                if line is None:
                    stats["module_timeouts"] += 1
                    failures.append(f"{current}: timed out after {cfg.harvest_module_timeout_s:.0f}s")
                    break
                if not line:
                    if current not in done:
                        stats["child_crashes"] += 1
                        failures.append(f"{current}: interpreter exited with code {proc.wait()}")
                    break
                event = json.loads(line)
                if event["event"] == "start":
                    current, deadline = event["module"], time.monotonic() + cfg.harvest_module_timeout_s
                elif event["event"] == "done":
                    done.add(event["module"])
                    stats["modules_imported"] += event["imported"]
                    stats["top_modules_capped"] += bool(event["capped"])
                yield event
        finally:
            proc.kill()
            proc.wait()
            lines.close()
        started = batch.index(current) + 1
        pending = batch[max(started, len(done)) :] + pending if len(done) < len(batch) else pending


def harvest_api_docs(cfg: SeedsConfig) -> tuple[list[dict], dict[str, Any]]:
    """Seeds for the public APIs of the configured modules, and stats (distinct APIs, failures, caps)."""
    modules = expand_modules(cfg)
    dists = importlib.metadata.packages_distributions()
    stats: Counter = Counter()
    failures: list[str] = []
    seeds: list[dict] = []
    names: set[str] = set()
    by_kind: Counter = Counter()
    licenses: dict[str, str | None] = {}
    for event in _run_child(modules, cfg, stats, failures):
        if event["event"] == "error":
            stats["module_errors"] += 1
            failures.append(f"{event['module']}: {event['error']}")
        elif event["event"] == "start":
            stats["top_modules"] += 1
        if stats["modules_imported"] >= cfg.harvest_max_modules or len(names) >= cfg.harvest_max_apis:
            stats["capped"] = 1
            break
        if event["event"] != "api" or event["name"] in names:
            continue
        names.add(event["name"])
        by_kind[event["kind"]] += 1
        if cfg.harvest_require_docstring and not event["doc"].strip():
            stats["apis_without_docstring"] += 1
            continue
        top = event["top"]
        if top not in licenses:
            licenses[top] = _license_of(top, dists)
        short = event["name"].rsplit(".", 1)[-1]
        text = doc_page(
            event["name"],
            subtitle=f"{event['kind']} in module {event['module']}",
            signature=f"{'class ' if event['kind'] == 'class' else ''}{short}{event['signature']}",
            description=rst_to_text(event["doc"]),
        )
        source = "python_stdlib" if top in sys.stdlib_module_names else "python_packages"
        seeds.append(
            make_seed(
                kind="api_doc",
                text=text,
                source=source,
                schema="python_api",
                origin=f"python:{event['module']}",
                apis=[event["name"]],
                license=licenses[top],
            )
        )
    out = {
        "distinct_apis": len(names),
        "apis_by_kind": dict(by_kind),
        "seeds": len(seeds),
        "top_modules_requested": len(modules),
        **{k: int(v) for k, v in stats.items()},
        "failures": failures[:50],
        "failures_total": len(failures),
    }
    return seeds, out
