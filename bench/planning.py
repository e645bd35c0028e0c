"""Planning at dump scale (issue 14, item 4): the extract phase's work before its first read.

Starts the local S3 server (SeaweedFS on 127.0.0.1), puts ``--files`` tiny generated WARC.gz
objects there, and a run state as an interrupted run leaves it: ``--done`` of them recorded done
(with one part each under ``extracted/``) and ``--partial`` of the rest with a part left behind.
Then, on a local Ray started before the clock does, it times the extract phase's ``run()``:

- ``list_s``: ``expand_inputs`` (listing the input prefix);
- ``resume_s``: ``RunState.units`` (the resume check);
- ``plan_s``: from ``run()`` until the read plan is handed to Ray (listing, resume check, the
  deletes of pending files' partial output, the dataset's creation);
- ``first_read_s``: until the first read task starts (it stamps the wall clock as it begins);
- ``first_part_s``: until the driver holds the first written part's summary;
- ``plan_requests``: the S3 requests made before the read plan is handed to Ray (the phase talks to
  the server through a counting proxy, ``tests/support/faulty_proxy.py`` with no faults), which
  unlike the seconds does not depend on how loaded the machine is.

It prints them beside the raw floor (one paginated ``list_objects_v2`` of the same input keys)
and, with ``--baseline DIR``, the same measurements of another checkout's code (the code before a
change: ``git archive <commit> | tar -x -C DIR``) on its own copy of the state, written with that
code's own API. Each version runs in a child process whose ``raypipe`` is that checkout's.

    python -m bench.planning --baseline /tmp/raypipe-base
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BUCKET = "bench-planning"
INPUTS = "inputs"
RESULTS = Path(__file__).resolve().parent / "results" / "planning.json"
REPO = Path(__file__).resolve().parent.parent


def tiny_warc(index: int) -> bytes:
    """One gzipped WARC response record of a short HTML page, different for every index."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    url = f"https://example.org/page/{index}"
    body = f"<html><head><title>Page {index}</title></head><body><p>Page {index} of the bench.</p></body></html>"
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)
    http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
    record = writer.create_warc_record(url, "response", payload=io.BytesIO(body.encode()), http_headers=http)
    writer.write_record(record)
    return buf.getvalue()


def put_inputs(client: Any, files: int) -> list[str]:
    keys = [f"{INPUTS}/CC-MAIN-bench-{i:05d}.warc.gz" for i in range(files)]
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda i: client.put_object(Bucket=BUCKET, Key=keys[i], Body=tiny_warc(i)), range(files)))
    return keys


def list_floor(client: Any) -> tuple[float, int]:
    """Seconds for one paginated listing of the input keys (the least any planner must do)."""
    start = time.perf_counter()
    found = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{INPUTS}/"):
        found += len(page.get("Contents", []))
    return time.perf_counter() - start, found


def _seed_state(cfg: Any, done: int, partial: int) -> dict[str, int]:
    """The state an interrupted run leaves, written with the checkout's own API (not timed)."""
    from raypipe.store.state import RunState, digest
    from raypipe.store.storage import OutputStore, expand_inputs
    from raypipe.store.warc import file_stem

    store = OutputStore(cfg.output, cfg.storage)
    state = RunState(store)
    uris = expand_inputs(cfg.input, cfg.storage)
    settings = digest(cfg.phase_settings("extract"))
    finished, left = uris[:done], uris[done : done + partial]

    def record(uri: str) -> dict[str, Any]:
        part = f"extracted/{file_stem(uri)}/part-0000000000000000.parquet"
        return {
            "uri": uri,
            "records": 1,
            "html_responses": 1,
            "skipped": {},
            "damage": {},
            "errors": [],
            "documents": 1,
            "drops": {"too_short": 1},
            "languages": {"en": 1},
            "parts": [part],
            "settings": settings,
        }

    def part(uri: str) -> None:
        store.write_bytes(f"extracted/{file_stem(uri)}/part-0000000000000000.parquet", b"bench")

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(part, finished + left))
        if hasattr(state, "journal"):
            journal = state.journal("extract", every=len(finished) + 1, every_s=1e9)
            for uri in finished:
                journal.done(file_stem(uri), record(uri))
            journal.flush()
        else:  # the per-record layout of the code before the journal
            list(pool.map(lambda u: state.mark_unit("extract", file_stem(u), record(u)), finished))
    return {"files": len(uris), "done": len(finished), "partial": len(left)}


class _FirstPart(Exception):
    """Stops the phase once the first part is written: what comes after is not planning."""


def measure(endpoint: str, output: str, done: int, partial: int) -> dict[str, Any]:
    """In this process's ``raypipe``: seed the state, then time the extract phase's planning."""
    sys.path.append(str(REPO))  # the counting proxy of this checkout's tests
    from tests.support.faulty_proxy import FaultyProxy

    with FaultyProxy(endpoint, fault_rate=0.0) as proxy:
        result = _measure(endpoint, proxy.url, output, done, partial)
        planned = result.pop("plan_monotonic")
        result["plan_requests"] = sum(1 for e in proxy.events if e.t < planned)
    return result


def _measure(endpoint: str, proxied: str, output: str, done: int, partial: int) -> dict[str, Any]:
    import raypipe.phases.extract as extract
    import raypipe.store.warc as warc
    from raypipe.config import load_config
    from raypipe.runtime import init_ray
    from raypipe.store.state import RunState
    from raypipe.store.storage import OutputStore

    cfg = load_config(
        base={
            "input": f"s3://{BUCKET}/{INPUTS}/",
            "output": output,
            "phases": ["extract"],
            "ray": {"num_cpus": 2, "progress_bars": False},
            "storage": {"endpoint_url": endpoint},
        }
    )
    seeded = _seed_state(cfg, done, partial)
    cfg = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"endpoint_url": proxied})})
    init_ray(cfg)
    marks: dict[str, float] = {}
    spans: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spans.setdefault(name, time.perf_counter() - start)

        return wrapper

    real_update = extract.ExtractTracker.update
    stamps = Path(tempfile.mkdtemp(prefix="bench-planning-")) / "reads"

    real_read, real_dataset = warc.read_warc_file, extract.warc_dataset

    def stamped_read(*args: Any, **kwargs: Any) -> Any:
        """The checkout's own reader, stamping when a read task starts (a nested function, so Ray
        ships it by value and the workers run it instead of the module's)."""
        with open(stamps, "a") as f:
            f.write(f"{time.time()}\n")
        yield from real_read(*args, **kwargs)

    def dataset(*args: Any, **kwargs: Any) -> Any:
        marks.setdefault("plan", time.time())
        marks.setdefault("plan_monotonic", time.monotonic())
        return real_dataset(*args, **kwargs)

    def update(self: Any, row: dict[str, Any]) -> None:
        real_update(self, row)
        if row.get("part"):
            marks["first_part"] = time.time()
            raise _FirstPart

    extract.expand_inputs = timed("list", extract.expand_inputs)
    RunState.units = timed("resume", RunState.units)
    extract.warc_dataset = dataset
    warc.read_warc_file = stamped_read
    extract.ExtractTracker.update = update
    store = OutputStore(cfg.output, cfg.storage)
    start = time.time()
    try:
        extract.run(cfg, store, RunState(store))
    except _FirstPart:
        pass
    marks["first_read"] = min(float(line) for line in stamps.read_text().split())
    return {
        **seeded,
        "list_s": round(spans["list"], 2),
        "resume_s": round(spans["resume"], 2),
        "plan_s": round(marks["plan"] - start, 2),
        "first_read_s": round(marks["first_read"] - start, 2),
        "first_part_s": round(marks["first_part"] - start, 2),
        "plan_monotonic": marks["plan_monotonic"],
    }


def run_version(code: Path, endpoint: str, env: dict[str, str], label: str, args: argparse.Namespace) -> dict:
    """One measurement in a child process importing ``raypipe`` from ``code``."""
    child_env = {**os.environ, **env, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1"}
    # Loaded by path, not with -m: the checkout's own ``bench`` package may not have this module,
    # and running the file as a script would put bench/ (tokenize.py, ...) before the stdlib.
    load = (
        "import importlib.util, sys; spec = importlib.util.spec_from_file_location('bench_planning', sys.argv[1]); "
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); sys.exit(m.main(sys.argv[2:]))"
    )
    cmd = [
        sys.executable,
        "-c",
        load,
        str(Path(__file__).resolve()),
        "--measure",
        endpoint,
        f"s3://{BUCKET}/out-{label}",
        str(args.done),
        str(args.partial),
    ]
    proc = subprocess.run(cmd, env=child_env, capture_output=True, text=True, timeout=args.timeout_s, cwd=code)
    if proc.returncode:
        raise RuntimeError(f"{label} measurement failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000, help="input files on the local S3 server")
    parser.add_argument("--done", type=int, default=5_000, help="of them recorded done by an earlier run")
    parser.add_argument("--partial", type=int, default=100, help="pending files an interrupted run left a part of")
    parser.add_argument("--baseline", type=Path, help="another checkout to measure the same way (the code before)")
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="per measurement")
    parser.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        endpoint, output, done, partial = args.measure
        print(json.dumps(measure(endpoint, output, int(done), int(partial))))
        return 0

    sys.path.insert(0, str(REPO))
    from devtools.local_s3 import start_local_s3

    server = start_local_s3()
    try:
        client = server.client()
        server.create_bucket(BUCKET)
        start = time.perf_counter()
        put_inputs(client, args.files)
        print(f"put {args.files} input objects in {time.perf_counter() - start:.1f}s", file=sys.stderr)
        floor_s, listed = list_floor(client)
        results: dict[str, Any] = {
            "files": args.files,
            "done": args.done,
            "partial": args.partial,
            "floor_list_s": round(floor_s, 2),
            "floor_listed": listed,
        }
        versions = [("this", REPO)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
        for label, code in versions:
            results[label] = run_version(code, server.endpoint, server.env, label, args)
            print(f"{label}: {results[label]}", file=sys.stderr)
    finally:
        server.stop()
    print(f"raw floor: one paginated list_objects_v2 of {listed} keys: {results['floor_list_s']}s")
    columns = ["list_s", "resume_s", "plan_s", "first_read_s", "first_part_s", "plan_requests"]
    print(f"{'code':<10}" + "".join(f"{c:>14}" for c in columns))
    for label, _ in versions:
        print(f"{label:<10}" + "".join(f"{results[label][c]:>14}" for c in columns))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
