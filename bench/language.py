"""Language identification: English pages kept on the development set, and its cost against detect_fast.

Two measures in one run:

- Quality, on the development set (``pages.parquet``: url, project, ecosystem, label, kind, split,
  html). Every page of a documentation site (``ecosystem != "web"``) is English; it counts as kept
  when ``identify`` calls it ``en``, or ``unknown``, which ``ExtractStage`` keeps by default. The web
  pages (``ecosystem == "web"``) are the non-English negatives: a page that resiliparse's
  ``detect_fast`` and ``lid.176`` on the raw text both call the same non-English language is foreign
  for sure, and it is lost if ``identify`` keeps it (``en`` or ``unknown``). ``detect_fast``, the
  previous identifier, is scored on the same pages.
- Cost, on the benchmark WARC of ``bench/extract.py`` (the shared HTML pages): CPU per page of the
  whole read + extract path (``ExtractStage`` with ``identify``), and of ``identify`` and
  ``detect_fast`` alone on the same extracted texts. ``added`` is what ``identify`` costs beyond
  ``detect_fast`` as a share of the stage with ``detect_fast``; the target is at most 10%.

Thresholds are chosen on the dev split (``--sweep`` prints the grid); report the test split.

    PYTHONPATH=$PWD python bench/language.py [--devset /work/devset/pages.parquet] [--split test] [--sweep]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if __package__ in (None, ""):  # run as a script: import siblings as the ``bench`` package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from dataclasses import dataclass  # noqa: E402  (after the path fix: it imports tokenize, a bench/ name)

from bench.measure import best_of, cpu_seconds  # noqa: E402

if TYPE_CHECKING:
    import pandas as pd

BENCH = Path(__file__).resolve().parent
KEPT = ("en", "unknown")


def page_texts(frame: pd.DataFrame) -> list[str]:
    """The main-content text of every page, as ExtractStage extracts it (empty when extraction fails)."""
    from raypipe.extract.html import decode_html, extract_text

    texts = []
    for html in frame["html"]:
        try:
            texts.append(extract_text(decode_html(html, None)[0])[0].strip())
        except Exception:  # noqa: BLE001 - a page that fails to extract is dropped before language id
            texts.append("")
    return texts


def raw_lid(text: str) -> str:
    """lid.176 on the unfiltered text, the reference that marks a web page as surely foreign."""
    from raypipe.extract.language import model

    labels, _ = model().predict(" ".join(text[:5000].split()), k=1)
    return labels[0].removeprefix("__label__")


@dataclass
class Page:
    """One page with text, its references computed once for every threshold tried."""

    url: str
    docs: bool  # from a documentation site, so English (a translated manual shows up as not kept)
    text: str
    detect_fast: str
    surely_foreign: bool  # a web page that detect_fast and lid.176 on the raw text call the same non-English


def pages(frame: pd.DataFrame) -> list[Page]:
    from resiliparse.parse.lang import detect_fast

    out = []
    for url, eco, text in zip(frame["url"], frame["ecosystem"], page_texts(frame), strict=True):
        if text:
            theirs = detect_fast(text[:5000])[0]
            foreign = eco == "web" and theirs != "en" and theirs == raw_lid(text)
            out.append(Page(url, eco != "web", text, theirs, foreign))
    return out


def quality(items: list[Page], cfg) -> dict:
    """Kept-as-English rate of the docs pages (and detect_fast's), and foreign web pages lost."""
    from raypipe.extract.language import identify

    docs = [p for p in items if p.docs]
    web = [p for p in items if not p.docs]

    def ours(p: Page) -> str:
        return identify(p.text, cfg.language_min_confidence, cfg.language_min_prose_words, cfg.language_code_heavy).code

    docs_codes = [ours(p) for p in docs]
    web_codes = [ours(p) for p in web]
    return {
        "docs_pages": len(docs),
        "kept_as_english": sum(c in KEPT for c in docs_codes) / max(1, len(docs)),
        "unknown_kept": docs_codes.count("unknown"),
        "not_kept": [(p.url, c) for p, c in zip(docs, docs_codes, strict=True) if c not in KEPT],
        "detect_fast_kept_as_english": sum(p.detect_fast == "en" for p in docs) / max(1, len(docs)),
        "web_pages": len(web),
        "foreign_web_pages": sum(p.surely_foreign for p in web),
        "foreign_lost": sum(p.surely_foreign and c in KEPT for p, c in zip(web, web_codes, strict=True)),
        "web_unknown": web_codes.count("unknown"),
    }


def sweep(items: list[Page]) -> None:
    """The dev split's kept rate and foreign loss over the thresholds' grid."""
    from raypipe.config import ExtractConfig

    for conf in (0.3, 0.5, 0.7):
        for heavy in (0.05, 0.1, 0.2):
            for words in (5, 10, 20):
                cfg = ExtractConfig(
                    language_min_confidence=conf, language_code_heavy=heavy, language_min_prose_words=words
                )
                q = quality(items, cfg)
                print(
                    f"sweep confidence={conf} code_heavy={heavy} min_words={words}: "
                    f"kept {q['kept_as_english']:.4f} (unknown {q['unknown_kept']}) foreign lost {q['foreign_lost']}"
                    f" web unknown {q['web_unknown']}"
                )


def cost(warc: Path, rounds: int) -> dict[str, float]:
    """ms of CPU per page: the read + extract path, and the two identifiers alone on its texts."""
    import pyarrow as pa
    from resiliparse.parse.lang import detect_fast

    from bench.extract import raypipe_documents, raypipe_extract
    from raypipe.config import ExtractConfig
    from raypipe.extract.language import identify

    cfg = ExtractConfig()
    texts = [t for t in pa.concat_tables(raypipe_documents(warc)).column("text").to_pylist() if t]
    stage = best_of([raypipe_extract(warc) for _ in range(rounds)])

    def per_text(fn) -> float:
        best = float("inf")
        for _ in range(rounds):
            cpu0 = cpu_seconds()
            for t in texts:
                fn(t)
            best = min(best, cpu_seconds() - cpu0)
        return best / len(texts) * 1000

    ours = per_text(
        lambda t: identify(t, cfg.language_min_confidence, cfg.language_min_prose_words, cfg.language_code_heavy)
    )
    theirs = per_text(lambda t: detect_fast(t[:5000]))
    stage_ms = stage.cpu_s / stage.docs_in * 1000
    # identify runs on pages with text only; scale to the stage's per-page average
    share = len(texts) / stage.docs_in
    before_ms = stage_ms - (ours - theirs) * share
    return {
        "stage_ms_per_page": stage_ms,
        "identify_ms": ours,
        "detect_fast_ms": theirs,
        "identify_vs_detect_fast": ours / theirs,
        "added_share_of_stage": (ours - theirs) * share / before_ms,
    }


def main() -> None:
    import pandas as pd

    from bench.corpus import ensure_corpus
    from raypipe.config import ExtractConfig
    from raypipe.extract.language import model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devset", type=Path, default=Path("/work/devset/pages.parquet"))
    ap.add_argument("--split", default="test", help="split reported (thresholds come from the dev split)")
    ap.add_argument("--sweep", action="store_true", help="print the dev split's threshold grid")
    ap.add_argument("--shared", type=Path, default=BENCH.parents[1] / "shared" / "data")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    model()  # loaded once per process, as in a worker: not part of any timing

    frame = pd.read_parquet(args.devset)
    if args.sweep:
        sweep(pages(frame[frame["split"] == "dev"]))
    q = quality(pages(frame[frame["split"] == args.split]), ExtractConfig())
    for url, code in q["not_kept"]:
        print(f"not kept: {code} {url}")
    print(
        f"language ({args.split} split, {q['docs_pages']} docs pages): kept as English {q['kept_as_english']:.2%}"
        f" ({q['unknown_kept']} of them unknown), detect_fast {q['detect_fast_kept_as_english']:.2%};"
        f" foreign web pages lost {q['foreign_lost']} of {q['foreign_web_pages']};"
        f" web pages unknown {q['web_unknown']} of {q['web_pages']}"
    )
    corpus = ensure_corpus(args.shared, (1,))
    c = cost(Path(corpus[1]["path"]), args.rounds)
    print(
        f"language cost ({corpus[1]['pages']} bench pages): identify {c['identify_ms']:.3f} ms/page,"
        f" detect_fast {c['detect_fast_ms']:.3f} ms/page ({c['identify_vs_detect_fast']:.1f}x);"
        f" read+extract stage {c['stage_ms_per_page']:.3f} ms/page, identify adds {c['added_share_of_stage']:.1%}"
    )


if __name__ == "__main__":
    main()
