"""The shard tokenizers against LLaMA-3's reference tokenizer and HF ``tokenizers``, on real documents."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raypipe.config import TokenizerConfig
from raypipe.shards.tokenizer import (
    LLAMA3_PATTERN,
    LLAMA3_SPECIAL_TOKENS,
    TokenizerError,
    TokenizeStage,
    llama3_model_path,
    load_tokenizer,
)


def real_texts(shared_data: Path, code: int = 120, text: int = 60) -> list[str]:
    with gzip.open(shared_data / "mix" / "code" / "pypi_python_code.jsonl.gz", "rt") as f:
        out = [json.loads(line)["text"] for _, line in zip(range(code), f, strict=False)]
    with gzip.open(shared_data / "mix" / "text" / "c4_demo.jsonl.gz", "rt") as f:
        out += [json.loads(line)["text"] for _, line in zip(range(text), f, strict=False)]
    with gzip.open(shared_data / "seeds" / "function_calling" / "glaive_toolcall_zh_demo.json.gz", "rt") as f:
        out += [json.dumps(item, ensure_ascii=False) for item in json.load(f)[:20]]
    return out


# Inputs where LLaMA-3's reference tokenizer cuts text before encoding (runs over 25k characters,
# windows of 400k) and text that spells a special token, which must be encoded as plain text.
ADVERSARIAL = [
    "a" * 60_000 + " b \x1c" * 30_000 + "\n" * 26_000 + "x y",
    "é" * 900_001,
    "<|end_of_text|> is text here, <|begin_of_text|> too",
    "",
    json.loads('"a lone \\ud800 surrogate and a pair \\ud83d\\ude00 from JSON escapes"'),
]


@pytest.fixture(scope="module")
def llama3():
    return load_tokenizer(TokenizerConfig())


def test_llama3_default_matches_the_reference_tokenizer(llama3, shared_data):
    from llama_models.llama3.tokenizer import Tokenizer as Reference

    ref = Reference.get_instance()
    assert LLAMA3_PATTERN == ref.pat_str
    assert {t: 128_000 + i for i, t in enumerate(LLAMA3_SPECIAL_TOKENS)} == ref.special_tokens
    assert (llama3.eos_id, llama3.vocab_size, llama3.eos_token) == (128_001, 128_256, "<|end_of_text|>")
    texts = real_texts(shared_data) + ADVERSARIAL
    docs = llama3.encode_documents(texts)
    for text, doc in zip(texts, docs, strict=True):
        assert doc.dtype == np.int32
        assert doc.tolist() == ref.encode(text, bos=False, eos=True)


def test_threaded_batch_encoding_gives_the_same_ids(llama3, shared_data):
    threaded = load_tokenizer(TokenizerConfig(num_threads=2))
    texts = real_texts(shared_data, code=40, text=20)
    for a, b in zip(llama3.encode_documents(texts), threaded.encode_documents(texts), strict=True):
        assert np.array_equal(a, b)


def test_stage_adds_tokens_and_counts_and_keeps_every_row(llama3, shared_data):
    texts = real_texts(shared_data, code=10, text=10)
    batch = pd.DataFrame({"doc_id": [f"d{i}" for i in range(len(texts) + 1)], "text": [*texts, None]})
    out = TokenizeStage(TokenizerConfig())(batch.copy())
    assert list(out["doc_id"]) == list(batch["doc_id"])
    assert out["n_tokens"].tolist() == [len(t) for t in out["tokens"]]
    assert all(t[-1] == 128_001 for t in out["tokens"])
    assert out["tokens"].iloc[-1].tolist() == [128_001]
    assert out["tokens"].iloc[0].tolist() == llama3.encode_documents([texts[0]])[0].tolist()


def test_tiktoken_file_from_config_matches_the_default(llama3, shared_data):
    tok = load_tokenizer(TokenizerConfig(kind="tiktoken", path=str(llama3_model_path())))
    texts = real_texts(shared_data, code=30, text=30)
    assert tok.sha256 == llama3.sha256 and tok.eos_id == llama3.eos_id
    for a, b in zip(tok.encode_documents(texts), llama3.encode_documents(texts), strict=True):
        assert np.array_equal(a, b)
    with pytest.raises(TokenizerError, match="EOS token '<eos>'"):
        load_tokenizer(TokenizerConfig(kind="tiktoken", path=str(llama3_model_path()), eos_token="<eos>"))
    with pytest.raises(TokenizerError, match="needs tokenizer.path"):
        load_tokenizer(TokenizerConfig(kind="tiktoken"))


def test_hf_tokenizer_json_with_the_same_vocab_gives_the_same_ids(llama3, shared_data, tmp_path):
    """A HF tokenizer.json converted from LLaMA-3's BPE file: same ids as tiktoken on real text."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    hf = TikTokenConverter(vocab_file=str(llama3_model_path()), pattern=LLAMA3_PATTERN).converted()
    hf.add_special_tokens(LLAMA3_SPECIAL_TOKENS)
    path = tmp_path / "tokenizer.json"
    hf.save(str(path))
    tok = load_tokenizer(TokenizerConfig(kind="hf_json", path=str(path)))
    assert (tok.eos_id, tok.vocab_size) == (llama3.eos_id, llama3.vocab_size)
    texts = [*real_texts(shared_data, code=40, text=40), ADVERSARIAL[2], ADVERSARIAL[4]]
    for a, b in zip(tok.encode_documents(texts), llama3.encode_documents(texts), strict=True):
        assert np.array_equal(a, b)
