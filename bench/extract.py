"""Extraction throughput: raypipe's read+extract path against the raw floor and the peers.

- raypipe: ``read_warc_file`` + ``ExtractStage`` in one process, exactly what a crawl read task and
  the extraction batch UDF run (resilient gzip member split, fastwarc, charset decoding,
  resiliparse main content, language id, Gopher signals, Arrow in and out).
- floor: fastwarc iteration + resiliparse ``extract_plain_text(main_content=True)`` in a plain
  loop: the least work that turns these WARC records into main-content text.
- DataTrove: WarcReader + Trafilatura with its defaults (``bench/peer_datatrove.py``, own venv), and
  WarcReader + DataTrove's own ``Resiliparse`` extractor, the fair peer (same extraction library);
  reported as n/a while no DataTrove release on PyPI ships that extractor (0.10.1 does not).
- NeMo Curator: its Common Crawl WARC iterator + HTML extractor with the resiliparse algorithm
  (``bench/peer_nemo.py``, own venv), in process and on ``RayDataExecutor`` with one CPU.

All on the same WARC file in one run; rates are documents per CPU-second (see measure.py), each
the least CPU time of several runs (noise only adds time): raypipe, the floor and NeMo in process
best of 3, DataTrove best of 2 (a run takes a minute), NeMo on Ray one run.

    PYTHONPATH=$PWD python bench/extract.py [--quick]   # or: make bench (everything)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if __package__ in (None, ""):  # run as a script: import siblings as the ``bench`` package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.measure import Measure, PeerError, best_of, run_peer, timed  # noqa: E402
from bench.peers import PEERS, ensure_peer  # noqa: E402

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

BENCH = Path(__file__).resolve().parent


def raypipe_documents(warc: Path) -> Iterator[pa.Table]:
    """The crawl phase's read task and extraction UDF back to back: document rows (markers dropped)."""
    import pyarrow.compute as pc

    from raypipe.config import ExtractConfig, QualityConfig, StorageConfig
    from raypipe.extract import extract_and_select
    from raypipe.store.warc import read_warc_file

    cfg = ExtractConfig()
    quality = QualityConfig()
    for table in read_warc_file(str(warc), StorageConfig(), cfg):
        out = extract_and_select(table, cfg, quality)
        yield out.filter(pc.is_valid(out.column("url")))


def raypipe_extract(warc: Path) -> Measure:
    import pyarrow.compute as pc

    def go() -> tuple[int, int, dict]:
        pages = extracted = kept = 0
        for docs in raypipe_documents(warc):
            pages += docs.num_rows
            extracted += pc.sum(pc.greater(pc.utf8_length(docs.column("text")), 0)).as_py() or 0
            kept += docs.num_rows - docs.column("drop_reason").drop_null().length()
        return pages, extracted, {"quality_kept": kept}

    return timed("raypipe", go)


def raypipe_extract_frame(warc: Path) -> tuple[int, pd.DataFrame]:
    """Pages read and the extracted documents as one pandas frame (for the end-to-end stages)."""
    import pyarrow as pa

    table = pa.concat_tables(raypipe_documents(warc))
    return table.num_rows, table.to_pandas()


def floor_extract(warc: Path) -> Measure:
    """fastwarc + resiliparse main-content extraction, nothing else."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import detect_encoding
    from resiliparse.parse.html import HTMLTree

    def go() -> tuple[int, int, dict]:
        pages = nonempty = 0
        with warc.open("rb") as f:
            for record in ArchiveIterator(f, record_types=WarcRecordType.response, parse_http=True):
                payload = record.reader.read()
                tree = HTMLTree.parse_from_bytes(payload, detect_encoding(payload))
                pages += 1
                nonempty += bool(extract_plain_text(tree, main_content=True).strip())
        return pages, nonempty, {}

    return timed("floor", go)


def datatrove_extract(warc: Path, rounds: int = 1, log=print, extractor: str = "trafilatura") -> Measure | str:
    """DataTrove's measure with its ``extractor`` (trafilatura or resiliparse), or why there is none."""
    python = ensure_peer(PEERS["datatrove"], log=log)
    if python is None:
        return "n/a (install failed)"
    args = ["extract", str(warc), "--rounds", str(rounds), "--extractor", extractor]
    try:
        out = run_peer(python, BENCH / "peer_datatrove.py", args, timeout_s=3600)
    except PeerError as e:
        log(f"datatrove ({extractor}): {e}")
        return "n/a (run failed)"
    if "unavailable" in out:
        return f"n/a ({out['unavailable']})"
    res = out["extract"]
    step = "Resiliparse" if extractor == "resiliparse" else "Trafilatura"
    stats = next((s["stats"] for s in res["stats"] if step in s["name"]), {})
    details = {k: stats.get(k, 0) for k in ("timeout", "extracted", "clean_error", "broken_process")}
    details["runs_cpu_s"] = [round(x, 3) for x in res["runs_cpu_s"]]
    name = "datatrove_resiliparse" if extractor == "resiliparse" else "datatrove"
    return Measure(name, res["docs_in"], res["docs_out"], res["wall_s"], res["cpu_s"], details)


def nemo_extract(warc: Path, rounds: int = 1, log=print) -> list[Measure] | str:
    """NeMo Curator in process and on RayDataExecutor (1 CPU), or why there is none."""
    python = ensure_peer(PEERS["nemo_curator"], log=log)
    if python is None:
        return "n/a (install failed)"
    try:
        res = run_peer(python, BENCH / "peer_nemo.py", [str(warc), "--rounds", str(rounds)], timeout_s=3600)
    except PeerError as e:
        log(f"nemo_curator: {e}")
        return "n/a (run failed)"
    return [
        Measure(f"nemo_curator {mode}", r["docs_in"], r["docs_out"], r["wall_s"], r["cpu_s"], r.get("details", {}))
        for mode, r in res.items()
    ]


def measure_extraction(warc: Path, rounds: int, log=print) -> dict[str, Measure | str]:
    """Every extraction measure on one file; raypipe and the floor alternate, best of ``rounds``."""
    raypipe_extract(warc)  # warm-up: imports, page cache
    ours, floor = [], []
    for _ in range(rounds):
        floor.append(floor_extract(warc))
        ours.append(raypipe_extract(warc))
    results: dict[str, Measure | str] = {"raypipe": best_of(ours), "floor": best_of(floor)}
    log("extract: running DataTrove (WarcReader + Trafilatura) in its venv")
    results["datatrove"] = datatrove_extract(warc, max(1, rounds - 1), log=log)
    log("extract: running DataTrove (WarcReader + its Resiliparse extractor) in its venv")
    results["datatrove_resiliparse"] = datatrove_extract(warc, rounds, log=log, extractor="resiliparse")
    log("extract: running NeMo Curator (resiliparse extractor) in its venv")
    nemo = nemo_extract(warc, rounds, log=log)
    if isinstance(nemo, str):
        results["nemo_curator"] = nemo
    else:
        for m in nemo:
            results[m.name] = m
    return results


def extraction_ratios(results: dict[str, Measure | str]) -> dict[str, float | str]:
    """``extract vs X`` = raypipe's docs/s/core over X's; a peer is credited with its best mode."""
    ours = results["raypipe"]
    assert isinstance(ours, Measure)
    ratios: dict[str, float | str] = {}
    for peer in ("datatrove", "datatrove_resiliparse", "nemo_curator", "floor"):
        found = [m for k, m in results.items() if k.split(" ")[0] == peer and isinstance(m, Measure)]
        ratios[f"extract vs {peer}"] = ours.rate / max(m.rate for m in found) if found else "n/a"
    return ratios


def main() -> None:
    from bench.corpus import ensure_corpus
    from bench.tables import print_ratios, print_table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=BENCH.parents[1] / "shared" / "data")
    ap.add_argument("--quick", action="store_true", help="100 pages, one round")
    args = ap.parse_args()
    corpus = ensure_corpus(args.shared, (1,), limit=100 if args.quick else None)
    results = measure_extraction(Path(corpus[1]["path"]), rounds=1 if args.quick else 3)
    print_table(results)
    print_ratios(extraction_ratios(results))


if __name__ == "__main__":
    main()
