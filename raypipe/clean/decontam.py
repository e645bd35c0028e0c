"""Decontamination: drop documents that contain agent-benchmark test items.

The rule (what counts as a leak):

* Indexed, as **questions**: what a model is asked. BFCL user messages; API-Bank dialogues (minus
  the API descriptions embedded in them), user turns and level-3 requirements; APIBench
  questions (``###Instruction``); ToolBench ToolEval queries; OpenFunctions questions.
* Indexed, as **answers**: what a model is graded against. BFCL ``possible_answer`` ground truth
  and assistant turns; API-Bank ``expected_output``/``output``, assistant turns, level-3 responses
  and API calls; OpenFunctions ``model_answer``.
* Not indexed as question or answer keys: the API documentation the items embed, which is public
  and shared with the seed corpus (PROVENANCE.md measures 65-82% 13-gram overlap between the
  Gorilla API docs and APIBench eval items): BFCL ``function`` and ``multi_turn_func_doc``,
  APIBench ``api_data`` and the answer's call, code and explanation (which restate the docs: "the
  model is trained on the ImageNet dataset and ..."), ToolBench ``available_tools``, API-Bank
  ``instruction`` templates, API descriptions and ``all_apis.csv``. Moreover, any window that
  occurs in that embedded documentation is removed from the index, so a page that documents
  ``torch.hub.load`` is not a leak, while a page that repeats a test question is. ToolBench's CoT
  answers are one model's outputs rather than ground truth, and are not indexed either.
* Indexed, as **function schemas**: the function definitions BFCL and OpenFunctions items are
  written against (``function``, ``multi_turn_func_doc``), but only the ``ngram``-word windows
  that contain the function's name (its name next to its description and parameters). The rest of
  a schema is often a real library's docstring (BFCL's ``requests.get`` schema repeats the
  requests sources word for word), which is no leak. APIBench ``api_data`` is model-card
  documentation rather than a schema and stays unindexed.
* **Benchmark-only**: every key that occurs in the run's seed documents is dropped
  (``allowed`` in :func:`build_index`; the clean phase passes the seed table). The seed API docs
  overlap APIBench (PROVENANCE.md), so without this a seed could be flagged; with it, no seed can
  be, by construction, while a page repeating a question, a call or a schema still is.

Matching: words are those of :mod:`raypipe.dedup.normalize` (NFC, lowercase, ``\\w+``), so
punctuation, quoting and markup do not hide a copy. Every ``ngram``-word window (default 13) of an
indexed field is a key. **Short items are matched whole, as phrases** (the paper decontaminated by
string matching): a question, or a call in an answer (a line reading ``name(...)``), shorter than
``ngram`` words but at least ``min_ngram`` (6) is one key of its own length, e.g. BFCL's "What key
signature does C# major have?" (7 words) or ``music_theory.key_signature(key="C#",
scale_type="major")`` (6). ``min_ngram`` bounds trivial phrases: over 2,405 real documents (C4,
article bodies, Wikipedia, PyPI code) phrases of 3 words matched 5 documents ("who are you", "bla
bla bla") and of 4 words one ("thank you very much"); 5 words and longer matched none, and 6 keeps
a word of margin over that small sample. Shorter questions and answer text shorter than ``ngram``
words are too generic to tell from ordinary prose and give no key.
A document is contaminated when at least ``min_matches`` of its windows are keys; it is reported
with every benchmark and item id it matched. Each distinct key length costs one vectorized pass
over a document's word hashes.

The index holds 64-bit hashes only (for all the benchmarks here: ~435k keys, 5 MiB, plus an 8 MiB
presence filter), so it is built once on the driver and broadcast to every worker in the stage's
constructor (a Ray object reference).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from raypipe.config import DecontamConfig, StorageConfig
from raypipe.dedup.normalize import normalize_text, window_hashes, word_hashes, words
from raypipe.store.storage import filesystem, read_bytes

CONTAMINATION = "contamination"
_FILTER_BITS = 23
_API_DESCRIPTION_LINE = re.compile(r"^\s*\{.*\}\s*$")


_CALL_LINE = re.compile(r"^\s*[A-Za-z_][\w.]*\(.*\)\s*$")


@dataclass(frozen=True)
class BenchmarkItem:
    """One test item: what the model is asked (``questions``), what it is graded against
    (``answers``), the API documentation it embeds (``docs``, whose windows are never question or
    answer keys) and the function schemas written for it (``schemas``: keys where benchmark-only)."""

    benchmark: str
    item_id: str
    questions: tuple[str, ...] = ()
    answers: tuple[str, ...] = ()
    docs: tuple[str, ...] = ()
    schemas: tuple[str, ...] = ()


def function_schemas(value: Any) -> tuple[str, ...]:
    """Each function schema (a dict with a ``name``) of a schema or a list of them, as JSON."""
    found = value if isinstance(value, list) else [value]
    return tuple(json.dumps(f) for f in found if isinstance(f, dict) and f.get("name"))


def schema_name(schema: str) -> str:
    """The function name of a JSON function schema (``""`` when it has none)."""
    value = json.loads(schema)
    return str(value.get("name") or "") if isinstance(value, dict) else ""


def named_windows(word_hash_array: np.ndarray, toks: list[str], name: list[str], n: int) -> np.ndarray:
    """Hashes of the ``n``-word windows of a schema that contain its function name.

    Only those are schema keys: the rest of a schema is often a real library's docstring (BFCL's
    ``requests.get`` says "how many seconds to wait for the server to send data before giving up",
    word for word like the requests sources), while a window that names the function next to its
    description and parameters is that benchmark's schema.
    """
    k = len(name)
    at = next((i for i in range(len(toks) - k + 1) if toks[i : i + k] == name), None) if k else None
    windows = window_hashes(word_hash_array, n)
    if at is None or not len(windows):
        return np.empty(0, dtype=np.uint64)
    return windows[max(0, at + k - n) : min(at, len(windows) - 1) + 1]


def answer_calls(answers: tuple[str, ...]) -> list[str]:
    """The function calls in answers (lines that read ``name(...)``), each a phrase of its own."""
    return [line.strip() for a in answers for line in a.splitlines() if _CALL_LINE.match(line)]


def _messages(value: Any, user: bool) -> Iterator[str]:
    """Every ``content`` of a (possibly nested) list of chat messages, from the user or not."""
    if isinstance(value, dict):
        if isinstance(value.get("content"), str) and (value.get("role", "user") == "user") == user:
            yield value["content"]
    elif isinstance(value, list):
        for v in value:
            yield from _messages(v, user)


def _render_call(name: str, args: dict[str, Any], first_alternative: bool) -> str:
    """A function call as a model would write it: ``name(key=value, ...)``."""
    parts = []
    for key, value in args.items():
        if first_alternative and isinstance(value, list):
            value = value[0] if value else ""
        parts.append(f"{key}={json.dumps(value, ensure_ascii=False)}")
    return f"{name}({', '.join(parts)})"


def _render_ground_truth(value: Any) -> str:
    """BFCL ground truth as text: call strings as they are, ``{fn: {arg: [alternatives]}}`` as calls."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(_render_ground_truth(v) for v in value)
    if isinstance(value, dict):
        return "\n".join(
            _render_call(name, args, True) if isinstance(args, dict) else f"{name} {_render_ground_truth(args)}"
            for name, args in value.items()
        )
    return "" if value is None else str(value)


def _stem(rel: str) -> str:
    return rel.rsplit("/", 1)[-1].split(".")[0]


def _bfcl(rel: str, records: Any) -> Iterator[BenchmarkItem]:
    stem = _stem(rel)
    if "format_sensitivity" in rel:
        return  # an id list: no text
    if "multi_turn_func_doc/" in rel:
        docs = tuple(json.dumps(r) for r in records)
        yield BenchmarkItem("bfcl", f"func_doc:{stem}", docs=docs, schemas=function_schemas(records))
        return
    answers = "possible_answer/" in rel or "executable_eval_sanity_check/" in rel
    for i, rec in enumerate(records):
        item_id = str(rec.get("id", rec.get("idx", f"{stem}:{i}")))
        if answers:
            yield BenchmarkItem("bfcl", item_id, answers=(_render_ground_truth(rec.get("ground_truth")),))
            continue
        q = rec.get("question")
        questions = (q,) if isinstance(q, str) else tuple(_messages(q, user=True))
        replies = () if isinstance(q, str) else tuple(_messages(q, user=False))
        docs = (json.dumps(rec.get("function", "")),)
        yield BenchmarkItem("bfcl", item_id, questions, replies, docs, function_schemas(rec.get("function")))


def _split_api_descriptions(text: str) -> tuple[str, str]:
    """API-Bank inputs start with JSON API descriptions (shared docs): (dialogue lines, description lines)."""
    lines = text.splitlines()
    docs = [line for line in lines if _API_DESCRIPTION_LINE.match(line)]
    return "\n".join(line for line in lines if not _API_DESCRIPTION_LINE.match(line)), "\n".join(docs)


def _api_bank(rel: str, records: Any) -> Iterator[BenchmarkItem]:
    stem = _stem(rel)
    if stem == "all_apis":  # the API catalogue: documentation only
        yield BenchmarkItem("api_bank", stem, docs=tuple(" ".join(map(str, r.values())) for r in records))
        return
    for i, rec in enumerate(records):
        if stem == "lv1_lv2_dialogues":
            turns = rec.get("turns", [])
            user = tuple(t.get("text", "") for t in turns if t.get("role") == "User")
            replies = tuple(t.get("text", "") for t in turns if t.get("role") == "AI")
            calls = tuple(
                _render_call(t.get("api_name", ""), t.get("param_dict") or {}, False)
                for t in turns
                if t.get("role") == "API"
            )
            item_id = rec.get("source_path", str(i)).rsplit("/", 1)[-1].removesuffix(".jsonl")
            yield BenchmarkItem("api_bank", f"{stem}:{item_id}", user, replies + calls)
        elif stem == "level-3":
            apis = rec.get("apis", [])
            calls = tuple(_render_call(a.get("api_name", ""), a.get("input") or {}, False) for a in apis)
            outputs = tuple(json.dumps(a.get("output")) for a in apis)
            answers = (rec.get("response", ""), *calls)
            yield BenchmarkItem("api_bank", f"{stem}:{i}", (rec.get("requirement", ""),), answers, outputs)
        else:
            item_id = rec.get("id", rec.get("sample_id", i))
            answer = rec.get("expected_output", rec.get("output", ""))
            dialogue, descriptions = _split_api_descriptions(rec.get("input", ""))
            docs = (rec.get("instruction", ""), descriptions)
            yield BenchmarkItem("api_bank", f"{stem}:{item_id}", (dialogue,), (answer,), docs)


def _apibench(rel: str, records: Any) -> Iterator[BenchmarkItem]:
    stem = _stem(rel)
    for i, rec in enumerate(records):
        if "question_id" in rec:
            yield BenchmarkItem("apibench", f"{stem}:{rec['question_id']}", (rec.get("text", ""),))
        else:
            instruction = rec.get("code", "").partition("###Output:")[0].replace("###Instruction:", "")
            yield BenchmarkItem("apibench", f"{stem}:{i}", (instruction,), docs=(json.dumps(rec.get("api_data")),))


def _toolbench(rel: str, records: Any) -> Iterator[BenchmarkItem]:
    group = rel.rsplit("__", 1)[-1].split(".")[0]
    for query_id, rec in records.items():
        docs = (json.dumps(rec.get("available_tools")),)
        yield BenchmarkItem("toolbench", f"{group}:{query_id}", (rec.get("query", ""),), docs=docs)


def _openfunctions(rel: str, records: Any) -> Iterator[BenchmarkItem]:
    stem = _stem(rel)
    for i, rec in enumerate(records):
        docs = (json.dumps(rec.get("function")),)
        yield BenchmarkItem(
            "openfunctions",
            f"{stem}:{i}",
            (rec.get("question", ""),),
            (rec.get("model_answer", ""),),
            docs,
            function_schemas(rec.get("function")),
        )


# Benchmark directory -> extractor. A directory not listed here is an error, never silently skipped.
EXTRACTORS = {
    "bfcl_v4": _bfcl,
    "api_bank_test": _api_bank,
    "apibench_eval": _apibench,
    "toolbench_tooleval": _toolbench,
    "openfunctions_v1": _openfunctions,
}


def _parse_records(name: str, data: bytes) -> Any:
    """CSV rows, or JSON (a list or a dict of items) or JSON lines, whatever the extension says."""
    text = data.decode("utf-8")
    if name.endswith(".csv"):
        return list(csv.DictReader(io.StringIO(text)))
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def load_benchmark_items(uri: str, storage: StorageConfig) -> list[BenchmarkItem]:
    """Every test item under a benchmarks directory (local path or s3:// prefix), in a stable order."""
    fs, root = filesystem(uri, storage)
    prefix = "s3://" if uri.startswith("s3://") else ""
    root = root.rstrip("/")
    files = sorted(p for p in fs.find(root) if re.search(r"\.(jsonl?|csv)(\.gz)?$", p))
    if not files:
        raise FileNotFoundError(f"no benchmark files under {uri}")
    items: list[BenchmarkItem] = []
    for path in files:
        rel = path[len(root) + 1 :]
        name = rel.rsplit("/", 1)[-1].removesuffix(".gz")
        top = rel.split("/", 1)[0]
        if top not in EXTRACTORS:
            raise ValueError(f"unknown benchmark directory {top!r} in {uri}: add an extractor for it")
        data = read_bytes(prefix + path, storage)
        if path.endswith(".gz"):
            data = gzip.decompress(data)
        items.extend(EXTRACTORS[top](rel, _parse_records(name, data)))
    return items


@dataclass
class DecontamIndex:
    """Hashes of every indexed window, each pointing at the test items that contain it.

    ``hashes`` is sorted; ``owners[i]`` is the item (row of ``items``) of ``hashes[i]`` (a window
    shared by several items appears once per item). ``lengths`` are the window lengths to scan.
    """

    hashes: np.ndarray
    owners: np.ndarray
    items: list[tuple[str, str]]
    lengths: list[int]
    fields_indexed: int = 0
    fields_too_short: int = 0
    items_by_benchmark: dict[str, int] = field(default_factory=dict)
    schema_keys: int = 0
    removed_by_allowed: int = 0

    @classmethod
    def build(cls, items: list[BenchmarkItem], cfg: DecontamConfig, allowed: Iterable[str] = ()) -> DecontamIndex:
        """Keys = windows of questions and answers minus every window of any item's embedded docs,
        plus the phrases (questions and answer calls matched whole), plus the windows of function
        schemas; then minus every key that occurs in an ``allowed`` text (the seed corpus).

        A question or a call in an answer shorter than ``ngram`` words (but at least
        ``min_ngram``) is one key of its own length; other answer text only gives full ``ngram``
        windows, because short ones are stock phrases ("is there anything else I can help you with").
        """
        fields = [(i, words(normalize_text(t)), "phrase") for i, it in enumerate(items) for t in it.questions]
        fields += [
            (i, words(normalize_text(t)), "phrase") for i, it in enumerate(items) for t in answer_calls(it.answers)
        ]
        fields += [(i, words(normalize_text(t)), "answer") for i, it in enumerate(items) for t in it.answers]
        schemas = [
            (i, words(normalize_text(text)), words(normalize_text(schema_name(text))))
            for i, it in enumerate(items)
            for text in (it.schemas if cfg.schemas else ())
        ]
        hashed = word_hashes([toks for _, toks, _ in fields])
        short = {len(t) for _, t, kind in fields if kind == "phrase" and cfg.min_ngram <= len(t) < cfg.ngram}
        lengths = sorted({cfg.ngram} | short)
        keys: list[np.ndarray] = [np.empty(0, np.uint64)]
        owners: list[np.ndarray] = [np.empty(0, np.int32)]
        indexed = too_short = 0
        for (owner, toks, kind), wh in zip(fields, hashed, strict=True):
            if len(toks) < (cfg.min_ngram if kind == "phrase" else cfg.ngram):
                too_short += bool(toks)
                continue
            indexed += 1
            keys.append(np.unique(window_hashes(wh, min(cfg.ngram, len(toks)))))
            owners.append(np.full(len(keys[-1]), owner, dtype=np.int32))
        all_keys = np.concatenate(keys)
        all_owners = np.concatenate(owners)
        doc_hashes = word_hashes([words(normalize_text(d)) for item in items for d in item.docs])
        doc_windows = np.concatenate(
            [np.empty(0, np.uint64)] + [window_hashes(h, n) for h in doc_hashes for n in lengths]
        )
        keep = ~np.isin(all_keys, doc_windows)
        all_keys, all_owners = all_keys[keep], all_owners[keep]
        schema_keys = [
            np.unique(named_windows(h, toks, name, cfg.ngram))
            for (_, toks, name), h in zip(schemas, word_hashes([t for _, t, _ in schemas]), strict=True)
        ]
        all_keys = np.concatenate([all_keys, *schema_keys])
        all_owners = np.concatenate(
            [all_owners, *(np.full(len(k), o, np.int32) for (o, _, _), k in zip(schemas, schema_keys, strict=True))]
        )
        order = np.lexsort((all_owners, all_keys))
        by_bench: dict[str, int] = {}
        for item in items:
            if item.questions or item.answers or item.schemas:
                by_bench[item.benchmark] = by_bench.get(item.benchmark, 0) + 1
        index = cls(
            hashes=all_keys[order],
            owners=all_owners[order],
            items=[(it.benchmark, it.item_id) for it in items],
            lengths=lengths,
            fields_indexed=indexed,
            fields_too_short=too_short,
            items_by_benchmark=by_bench,
            schema_keys=int(sum(len(k) for k in schema_keys)),
        )
        index.remove_occurring_in(allowed)
        return index

    def remove_occurring_in(self, texts: Iterable[str], batch: int = 512) -> None:
        """Drop every key that occurs in one of ``texts`` (streamed in batches): text known to be
        clean, such as the seed corpus, can then never match."""
        drop = np.zeros(len(self.hashes), dtype=bool)
        pending: list[str] = []

        def scan() -> None:
            for wh in word_hashes([words(normalize_text(t)) for t in pending]):
                for n in self.lengths:
                    windows = window_hashes(wh, n)
                    windows = windows[self.present[windows >> np.uint64(64 - _FILTER_BITS)]]
                    lo = np.searchsorted(self.hashes, windows, side="left")
                    hi = np.searchsorted(self.hashes, windows, side="right")
                    for a, b in zip(lo[hi > lo], hi[hi > lo], strict=True):
                        drop[a:b] = True
            pending.clear()

        for text in texts:
            pending.append(text)
            if len(pending) >= batch:
                scan()
        scan()
        if drop.any():
            self.removed_by_allowed += int(drop.sum())
            self.hashes, self.owners = self.hashes[~drop], self.owners[~drop]
            self.__post_init__()

    def summary(self) -> dict[str, Any]:
        return {
            "items": self.items_by_benchmark,
            "keys": int(len(self.hashes)),
            "fields_indexed": self.fields_indexed,
            "fields_too_short": self.fields_too_short,
            "window_lengths": self.lengths,
            "schema_keys": self.schema_keys,
            "keys_removed_as_seen_in_seeds": self.removed_by_allowed,
        }

    def __post_init__(self) -> None:
        # A one-bit-per-slot presence filter on the top hash bits: most windows are rejected by one
        # cache-friendly lookup, and only the few that pass pay for a binary search.
        self.present = np.zeros(1 << _FILTER_BITS, dtype=bool)
        self.present[self.hashes >> np.uint64(64 - _FILTER_BITS)] = True

    def match(self, word_hash_array: np.ndarray) -> tuple[int, np.ndarray]:
        """(number of matching windows, sorted distinct item rows they belong to) for one document."""
        found = 0
        owners: list[np.ndarray] = []
        for n in self.lengths:
            windows = window_hashes(word_hash_array, n)
            windows = windows[self.present[windows >> np.uint64(64 - _FILTER_BITS)]]
            if not len(windows):
                continue
            lo = np.searchsorted(self.hashes, windows, side="left")
            hi = np.searchsorted(self.hashes, windows, side="right")
            hit = hi > lo
            found += int(hit.sum())
            owners.extend(self.owners[a:b] for a, b in zip(lo[hit], hi[hit], strict=True))
        if not owners:
            return found, np.empty(0, dtype=np.int32)
        return found, np.unique(np.concatenate(owners))


class NoBenchmarkSource(LookupError):
    """Decontamination has no benchmark test sets to match against; the message says why."""


def load_packaged_bfcl() -> list[BenchmarkItem]:
    """The BFCL v4 test items shipped in the ``bfcl-eval`` wheel (``decontam.benchmarks: "@bfcl-eval"``)."""
    from raypipe.defaults import bfcl_eval_files

    files = bfcl_eval_files()
    if not files:
        raise NoBenchmarkSource("decontam.benchmarks is @bfcl-eval but the bfcl-eval package is not installed")
    return [item for rel, path in files for item in _bfcl(rel, _parse_records(path.name, path.read_bytes()))]


def build_index(cfg: DecontamConfig, storage: StorageConfig, allowed: Iterable[str] = ()) -> DecontamIndex:
    """Load the configured benchmarks and build the n-gram index (driver side; a few seconds).

    ``allowed`` are texts known to be clean (the run's seed documents): no key they contain is kept.
    Raises ``NoBenchmarkSource`` when none is configured or the packaged one is not installed; a
    configured folder that is missing or empty is an error of its own (FileNotFoundError).
    """
    from raypipe.defaults import BFCL_EVAL

    if not cfg.benchmarks:
        raise NoBenchmarkSource("decontam.benchmarks is not set")
    if cfg.benchmarks == BFCL_EVAL:
        return DecontamIndex.build(load_packaged_bfcl(), cfg, allowed)
    return DecontamIndex.build(load_benchmark_items(cfg.benchmarks, storage), cfg, allowed)


class DecontamMatcher:
    """Stage: adds ``contaminated`` (bool), ``contamination_ngrams`` (matching windows),
    ``contamination_benchmarks`` and ``contamination_items`` (``benchmark:item_id``) to each row.

    Takes the index in its constructor, so on Ray Data it is shipped once per actor (pass an
    object reference in ``fn_constructor_args`` and Ray resolves it).
    """

    def __init__(self, index: DecontamIndex, min_matches: int = 1, text_column: str = "text"):
        self.index = index
        self.min_matches = min_matches
        self.text_column = text_column

    def columns(self, hashes: list[np.ndarray]) -> dict[str, list[Any]]:
        """The contamination columns for documents given as word-hash arrays."""
        counts, benches, item_ids = [], [], []
        for wh in hashes:
            found, owners = self.index.match(wh)
            refs = [self.index.items[o] for o in owners] if found >= self.min_matches else []
            counts.append(found)
            benches.append(sorted({b for b, _ in refs}))
            item_ids.append([f"{b}:{i}" for b, i in refs])
        return {
            "contaminated": [c >= self.min_matches for c in counts],
            "contamination_ngrams": counts,
            "contamination_benchmarks": benches,
            "contamination_items": item_ids,
        }

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        tokens = [words(normalize_text(t)) for t in batch[self.text_column].tolist()]
        return batch.assign(**self.columns(word_hashes(tokens)))
