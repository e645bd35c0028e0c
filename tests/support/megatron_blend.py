"""Read an output's shards the way a Megatron-LM training run does, and count what it draws.

megatron-core's own ``BlendedMegatronDatasetBuilder`` builds a ``GPTDataset`` per ``--data-path``
prefix and the ``BlendedDataset`` over them; we draw samples (fixed-length token windows) and
count them per stream, so the ratio checked is the one a trainer would see.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class LlamaIds:
    """The tokenizer facts GPTDataset reads (it never encodes text): EOD, padding, vocabulary, identity."""

    eod = 128_001
    pad = 128_004
    vocab_size = 128_256
    unique_identifiers = {"class": "LlamaIds", "eod": eod}


def blended_shares(
    root: Path, data_path: str, stream_of: dict[str, str], samples: int = 3000, seq_length: int = 256
) -> dict[str, float]:
    """Share of ``samples`` drawn samples per stream from the blend ``data_path`` (prefixes relative to ``root``).

    ``stream_of`` maps a shard path (as in the manifest) to its stream. Every drawn sample is
    checked to hold ``seq_length`` valid token ids. No index cache: megatron's cache path needs
    torch.distributed, which a CPU test does not start.
    """
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.datasets.utils import get_blend_from_list

    prefixes, weights = get_blend_from_list(data_path.split())
    config = GPTDatasetConfig(
        random_seed=1234,
        sequence_length=seq_length,
        blend=([str(root / p) for p in prefixes], weights),
        split="1,0,0",
        tokenizer=LlamaIds(),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
    )
    train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [samples, 0, 0], lambda: True, config).build()
    assert len(train) >= samples
    counts: dict[str, int] = {}
    for i in range(samples):
        sample = train[i]
        tokens = np.asarray(sample["tokens"])
        assert len(tokens) == seq_length and int(tokens.min()) >= 0 and int(tokens.max()) < LlamaIds.vocab_size
        stream = stream_of[prefixes[int(sample["dataset_id"])]]
        counts[stream] = counts.get(stream, 0) + 1
    return {s: n / samples for s, n in sorted(counts.items())}
