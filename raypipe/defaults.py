"""Data the installed packages ship, so a machine with no data of its own (no ``../shared``) runs.

Why: a newcomer's first ``make demo`` must build a real corpus, not stop on a missing folder or
quietly leave a step out. Each default names something every install has:

- ``@bfcl-eval`` (``decontam.benchmarks``): the BFCL v4 test questions, answers and function docs
  in the ``bfcl-eval`` wheel (installed with ``--no-deps``: only its data files are read, never
  its module, whose own dependencies are for running the leaderboard).
- ``@site-packages`` (``mix.code.uri``): the Python sources of the installed packages, one document
  per ``.py`` file, id = the path under site-packages, license from the package's metadata. The
  driver writes them once as a JSONL file under the run's output prefix (``_defaults/``), so the
  workers read them like any configured dataset.

Seeds default to harvested API docs (``seeds.harvest_modules``) and input to Common Crawl over HTTPS
(``storage.commoncrawl_https``); neither needs anything here.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import json
import logging
import sysconfig
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from raypipe.store.storage import OutputStore

log = logging.getLogger(__name__)

BFCL_EVAL = "@bfcl-eval"
SITE_PACKAGES = "@site-packages"
CODE_KEY = "_defaults/code/site_packages.jsonl.gz"
# Enough code for the demo's mix (a few million tokens), bounded so a large venv cannot make the
# driver hold a big file or the shard phase tokenize code the mix would not use.
MAX_CODE_FILES = 2000
MAX_CODE_BYTES = 8 << 20
MAX_FILE_BYTES = 200_000
# bfcl-eval folders that hold no test items: prerequisite chats for the memory category, and
# datasets the leaderboard itself no longer uses.
_BFCL_SKIPPED = ("unused_datasets/", "memory_prereq_conversation/")


def bfcl_eval_data() -> Path | None:
    """The ``data`` folder of the installed ``bfcl-eval`` wheel (found without importing it)."""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    return data if data.is_dir() else None


def bfcl_eval_files() -> list[tuple[str, Path]]:
    """(path as the decontamination loader names BFCL files, ``bfcl_v4/...``; file) per test file."""
    data = bfcl_eval_data()
    if data is None:
        return []
    files = []
    for path in sorted(data.rglob("*.json")):
        rel = path.relative_to(data).as_posix()
        if not rel.startswith(_BFCL_SKIPPED):
            files.append((f"bfcl_v4/{rel}", path))
    return files


def bfcl_eval_version() -> str | None:
    try:
        return importlib.metadata.version("bfcl-eval")
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_benchmarks(uri: str | None) -> str | None:
    """The benchmark source as stats and the datasheet name it (the wheel's version for ``@bfcl-eval``)."""
    if uri == BFCL_EVAL:
        return f"BFCL v4 test data of the bfcl-eval {bfcl_eval_version()} wheel ({BFCL_EVAL})"
    return uri


def _package_licenses() -> dict[str, str]:
    """Top-level module -> the license its distribution declares ('not known' when it declares none)."""
    out: dict[str, str] = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        try:
            meta = importlib.metadata.metadata(dists[0])
        except importlib.metadata.PackageNotFoundError:
            continue
        license_ = meta.get("License-Expression") or meta.get("License") or ""
        if not license_ or len(license_) > 80:  # some put the whole license text there
            classifiers = [c.rsplit(" :: ", 1)[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License")]
            license_ = classifiers[0] if classifiers else "not known"
        out[module] = license_.strip()
    return out


def site_packages_sources(root: Path | None = None) -> Iterator[dict[str, str]]:
    """One record per ``.py`` file of the installed packages, within the caps, taking files from
    each top-level package in turn (so the first packages in name order cannot fill the stream)."""
    root = Path(root or sysconfig.get_paths()["purelib"])
    licenses = _package_licenses()
    by_package: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if "/tests/" not in f"/{rel}" and "/test/" not in f"/{rel}":  # test suites: fixtures, repetition
            by_package[rel.split("/", 1)[0]].append(path)
    queues = [iter(paths) for _, paths in sorted(by_package.items())]
    files = total = 0
    while queues and files < MAX_CODE_FILES and total < MAX_CODE_BYTES:
        for queue in list(queues):
            path = next(queue, None)
            if path is None:
                queues.remove(queue)
                continue
            try:
                if not 200 <= path.stat().st_size <= MAX_FILE_BYTES:
                    continue
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            rel = path.relative_to(root).as_posix()
            yield {
                "id": f"site-packages:{rel}",
                "text": text,
                "license": licenses.get(rel.split("/", 1)[0], "not known"),
            }
            files += 1
            total += len(text)
            if files >= MAX_CODE_FILES or total >= MAX_CODE_BYTES:
                return


def materialize_site_packages(store: OutputStore) -> str:
    """Write the site-packages code dataset under the run's output prefix; returns its URI."""
    if not store.exists(CODE_KEY):
        lines = [json.dumps(r) for r in site_packages_sources()]
        store.write_bytes(CODE_KEY, gzip.compress("\n".join(lines).encode(), mtime=0))
        log.info("code stream: %d Python files of the installed packages -> %s", len(lines), store.uri(CODE_KEY))
    return store.uri(CODE_KEY)
