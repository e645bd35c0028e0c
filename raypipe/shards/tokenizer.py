"""Tokenizers for the shards, loaded from config, and the tokenizer stage for a CPU actor pool.

Why here: the trainer's tokenizer decides the ids in the shards, so it must come from config (a
tiktoken BPE file, a HF ``tokenizer.json`` or a HF model name) and work offline by default. The
default is LLaMA-3's tokenizer, whose BPE ranks ship in the ``llama-models`` wheel; we build the
``tiktoken.Encoding`` from that file with LLaMA-3's pre-tokenizer pattern and special tokens,
which is ~3-4x faster per core than HF ``tokenizers`` with identical ids.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.resources
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

from raypipe.config import StorageConfig, TokenizerConfig
from raypipe.stage import Resources, Stage, apply, pool_size
from raypipe.store.storage import read_bytes

# LLaMA-3's pre-tokenizer regex and special-token layout, as published with the model: 256 special
# tokens follow the 128,000 BPE ranks; twelve are named, the rest are reserved placeholders.
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_NAMED = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    "<|image|>",
]
LLAMA3_SPECIAL_TOKENS = _LLAMA3_NAMED + [
    f"<|reserved_special_token_{i}|>" for i in range(2, 2 + 256 - len(_LLAMA3_NAMED))
]

# tiktoken's core regex is slow (and once crashed) on very long inputs and on very long runs of
# whitespace or non-whitespace; LLaMA-3's reference tokenizer therefore encodes 400k-character
# windows and cuts such runs every 25k characters. We cut at the same places, so ids match it.
WINDOW_CHARS = 400_000
MAX_RUN_CHARS = 25_000
# str.isspace() for every code point (all whitespace lies below U+3001): finding runs with numpy
# over code points is ~10x faster than a Python regex over a long document.
_SPACE_TABLE = np.zeros(0x110000, dtype=bool)
_SPACE_TABLE[[c for c in range(0x3001) if chr(c).isspace()]] = True


class TokenizerError(ValueError):
    """The configured tokenizer cannot be loaded or lacks the configured EOS token."""


def llama3_model_path() -> Any:
    """The LLaMA-3 ``tokenizer.model`` (a tiktoken BPE ranks file) inside the installed llama-models."""
    path = importlib.resources.files("llama_models") / "llama3" / "tokenizer.model"
    if not path.is_file():
        raise TokenizerError("llama-models is installed without llama3/tokenizer.model")
    return path


def parse_bpe_ranks(data: bytes) -> dict[bytes, int]:
    """Parse a tiktoken ranks file: one ``<base64 token> <rank>`` pair per line."""
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise TokenizerError(f"line {lineno} of the BPE file is not '<base64> <rank>'")
        ranks[base64.b64decode(parts[0])] = int(parts[1])
    if not ranks:
        raise TokenizerError("the BPE ranks file is empty")
    return ranks


def safe_pieces(text: str) -> Iterator[str]:
    """Split ``text`` where LLaMA-3's reference tokenizer does; most documents come back whole."""
    if len(text) <= MAX_RUN_CHARS:
        yield text
        return
    for start in range(0, len(text), WINDOW_CHARS):
        window = text[start : start + WINDOW_CHARS]
        cut = 0
        for run_start, run_end in _long_runs(window):
            for pos in range(run_start + MAX_RUN_CHARS, run_end, MAX_RUN_CHARS):
                yield window[cut:pos]
                cut = pos
        yield window[cut:]


def _long_runs(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every run of whitespace or of non-whitespace longer than MAX_RUN_CHARS."""
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    space = _SPACE_TABLE[codes]
    edges = np.flatnonzero(space[1:] != space[:-1]) + 1
    starts = np.concatenate(([0], edges))
    ends = np.concatenate((edges, [len(codes)]))
    long = ends - starts > MAX_RUN_CHARS
    return list(zip(starts[long].tolist(), ends[long].tolist(), strict=True))


def without_surrogates(text: str) -> str:
    """Text that UTF-8 can encode: surrogate pairs joined, lone surrogates (e.g. from JSON escapes
    in scraped pages) replaced by U+FFFD, as ``tiktoken``'s own ``encode`` does."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class Encoder(Protocol):
    def __call__(self, texts: list[str]) -> list[np.ndarray]: ...


@dataclass
class Tokenizer:
    """A loaded tokenizer: what the manifest records about it, and a batch encoder."""

    kind: str
    name: str
    vocab_size: int
    eos_token: str
    eos_id: int
    sha256: str
    encode_batch: Encoder

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "vocab_size": self.vocab_size,
            "eos_token": self.eos_token,
            "eos_id": self.eos_id,
            "sha256": self.sha256,
        }

    def encode_documents(self, texts: list[str | None]) -> list[np.ndarray]:
        """int32 ids of each text with EOS appended: one training document per array (a missing text is empty)."""
        out = []
        for ids in self.encode_batch([t if isinstance(t, str) else "" for t in texts]):
            doc = np.empty(len(ids) + 1, dtype=np.int32)
            doc[:-1] = ids
            doc[-1] = self.eos_id
            out.append(doc)
        return out


class _TiktokenEncoder:
    """Encodes with ``encode_to_numpy`` (no Python int per token); threads only when asked."""

    def __init__(self, encoding: Any, num_threads: int):
        self.encoding = encoding
        self.pool = ThreadPoolExecutor(num_threads) if num_threads > 1 else None

    def piece(self, text: str) -> np.ndarray:
        try:
            return self.encoding.encode_to_numpy(text, disallowed_special=())
        except UnicodeEncodeError:
            return self.encoding.encode_to_numpy(without_surrogates(text), disallowed_special=())

    def one(self, text: str) -> np.ndarray:
        pieces = list(safe_pieces(text))
        if len(pieces) == 1:
            return self.piece(pieces[0])
        return np.concatenate([self.piece(p) for p in pieces])

    def __call__(self, texts: list[str]) -> list[np.ndarray]:
        if self.pool is None:
            return [self.one(t) for t in texts]
        return list(self.pool.map(self.one, texts))


def _tiktoken(
    kind: str, name: str, ranks_file: bytes, pattern: str, specials: list[str], cfg: TokenizerConfig
) -> Tokenizer:
    import tiktoken

    ranks = parse_bpe_ranks(ranks_file)
    special_ids = {tok: len(ranks) + i for i, tok in enumerate(specials)}
    if cfg.eos_token not in special_ids:
        raise TokenizerError(f"EOS token {cfg.eos_token!r} is not among the tokenizer's special tokens")
    encoding = tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special_ids)
    return Tokenizer(
        kind=kind,
        name=name,
        vocab_size=encoding.n_vocab,
        eos_token=cfg.eos_token,
        eos_id=special_ids[cfg.eos_token],
        sha256=hashlib.sha256(ranks_file).hexdigest(),
        encode_batch=_TiktokenEncoder(encoding, cfg.num_threads),
    )


def _huggingface(kind: str, name: str, hf: Any, serialized: bytes, cfg: TokenizerConfig) -> Tokenizer:
    eos_id = hf.token_to_id(cfg.eos_token)
    if eos_id is None:
        raise TokenizerError(f"EOS token {cfg.eos_token!r} is not in the tokenizer's vocabulary")
    # A web page that spells "<|end_of_text|>" is text, not a document boundary (as with tiktoken).
    hf.encode_special_tokens = True

    def encode(texts: list[str]) -> list[np.ndarray]:
        try:
            encoded = hf.encode_batch(texts, add_special_tokens=False)
        except TypeError:  # a text UTF-8 cannot encode (lone surrogates)
            encoded = hf.encode_batch([without_surrogates(t) for t in texts], add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in encoded]

    return Tokenizer(
        kind=kind,
        name=name,
        vocab_size=hf.get_vocab_size(with_added_tokens=True),
        eos_token=cfg.eos_token,
        eos_id=int(eos_id),
        sha256=hashlib.sha256(serialized).hexdigest(),
        encode_batch=encode,
    )


def load_tokenizer(cfg: TokenizerConfig, storage: StorageConfig | None = None) -> Tokenizer:
    """The tokenizer the config names; files may be local paths or ``s3://`` URIs."""
    storage = storage or StorageConfig()
    if cfg.kind == "llama3":
        version = importlib.metadata.version("llama-models")
        data = llama3_model_path().read_bytes()
        return _tiktoken("llama3", f"llama3 (llama-models {version})", data, LLAMA3_PATTERN, LLAMA3_SPECIAL_TOKENS, cfg)
    if cfg.kind == "tiktoken":
        if not cfg.path:
            raise TokenizerError("tokenizer.kind=tiktoken needs tokenizer.path (a BPE ranks file)")
        specials = cfg.special_tokens if cfg.special_tokens is not None else LLAMA3_SPECIAL_TOKENS
        data = read_bytes(cfg.path, storage)
        return _tiktoken("tiktoken", cfg.path, data, cfg.pattern or LLAMA3_PATTERN, specials, cfg)
    from tokenizers import Tokenizer as HFTokenizer

    if cfg.kind == "hf_json":
        if not cfg.path:
            raise TokenizerError("tokenizer.kind=hf_json needs tokenizer.path (a tokenizer.json)")
        data = read_bytes(cfg.path, storage)
        return _huggingface("hf_json", cfg.path, HFTokenizer.from_str(data.decode()), data, cfg)
    if not cfg.name:
        raise TokenizerError("tokenizer.kind=hf_name needs tokenizer.name (a model on the HF hub)")
    hf = HFTokenizer.from_pretrained(cfg.name)
    return _huggingface("hf_name", cfg.name, hf, hf.to_str().encode(), cfg)


class TokenizeStage:
    """Adds ``tokens`` (int32 ids, EOS appended) and ``n_tokens`` to a batch of documents.

    A callable class so a Ray Data actor pool loads the tokenizer once per actor.
    """

    def __init__(self, cfg: TokenizerConfig, storage: StorageConfig | None = None):
        self.tokenizer = load_tokenizer(cfg, storage)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        docs = self.tokenizer.encode_documents(batch["text"].tolist())
        batch["tokens"] = docs
        batch["n_tokens"] = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
        return batch


class TokenizeDocs(Stage):
    """The shard phase's tokenizer stage: adds ``tokens`` (int32 ids, EOS appended) and ``n_tokens``.

    Runs on an actor pool (the tokenizer loads once per actor); the ids go straight into an
    Arrow list column, so a batch never holds one Python int per token.
    """

    needs = ("text",)
    adds = pa.schema([("tokens", pa.list_(pa.int32())), ("n_tokens", pa.int64())])

    def __init__(self, cfg: TokenizerConfig, storage: StorageConfig | None, actors: int):
        self.cfg = cfg
        self.storage = storage
        self.resources = Resources(cpus=cfg.actor_cpus, actors=actors)
        self.batch_size = cfg.batch_size
        self.tokenizer: Tokenizer | None = None

    @classmethod
    def apply_to(cls, ds: Any, cfg: Any) -> Any:
        """``ds`` with the stage appended, its pool growing up to ``tokenizer.max_actors`` (see ``pool_size``)."""
        actors = pool_size(cfg.tokenizer.max_actors)
        return apply(ds, cls(cfg.tokenizer, cfg.storage, actors))

    def setup(self) -> None:
        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(self.cfg, self.storage)

    def __call__(self, batch: pa.Table) -> pa.Table:
        assert self.tokenizer is not None, "setup() loads the tokenizer"
        docs = self.tokenizer.encode_documents(batch.column("text").to_pylist())
        lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
        offsets = np.zeros(len(docs) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        values = np.concatenate(docs) if docs else np.empty(0, dtype=np.int32)
        tokens = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int32()))
        return batch.append_column("tokens", tokens).append_column("n_tokens", pa.array(lengths, pa.int64()))
