"""Peak RSS of one WARC read task at growing input sizes: the reader must stay flat.

Each size is read in a fresh subprocess (``python -m bench.rss FILE``) that streams the file
through ``read_warc_file`` exactly as a crawl read task does and consumes the Arrow batches as
they come; it reports ``ru_maxrss`` after its imports (the baseline) and at the end (the peak).
A fresh process per size means one size's high-water mark never hides another's. The mark is
the kernel's ``VmHWM`` of the process's own address space: ``ru_maxrss`` survives ``exec`` and would
report the parent's peak when the parent is larger than the probe.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def high_water_mib() -> float:
    """Peak resident set of this address space (Linux ``VmHWM``; ``ru_maxrss`` elsewhere)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def probe(path: str) -> dict:
    """Stream ``path`` with the production reader; runs in the child process."""
    from raypipe.config import ExtractConfig, StorageConfig
    from raypipe.store.warc import read_warc_file

    baseline = high_water_mib()
    start = time.perf_counter()
    pages = html_bytes = 0
    for table in read_warc_file(path, StorageConfig(), ExtractConfig()):
        urls = table.column("url")
        pages += len(urls) - urls.null_count
        html_bytes += table.column("html").nbytes
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = high_water_mib()
    return {
        "pages": pages,
        "html_bytes": html_bytes,
        "baseline_mib": round(baseline, 1),
        "peak_mib": round(peak, 1),
        "growth_mib": round(peak - baseline, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "wall_s": round(time.perf_counter() - start, 2),
    }


def peak_rss(path: Path, timeout_s: float = 1800) -> dict:
    """Run the probe on ``path`` in a fresh interpreter and return its report."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.rss", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout_s,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1])))
