"""Peer frameworks in their own virtual environments under ``.bench/`` (never in the project's venv).

Why separate venvs: DataTrove pins trafilatura 1.11 and NeMo Curator pins trafilatura 2.0, both
different from ours; sharing one environment would benchmark whatever pip resolved last. A peer
whose install fails is skipped with a message, so the rest of the benchmark still runs.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[1] / ".bench"
TORCH = "torch==2.13.0"  # first and alone: the CPU build; a plain `torch` pulls GBs of CUDA wheels


@dataclass(frozen=True)
class Peer:
    name: str
    requirements: tuple[str, ...]
    needs_torch: bool
    probe: str  # a Python statement that must run in the venv once installed

    def stamp(self) -> str:
        blob = "\n".join((TORCH if self.needs_torch else "", *self.requirements))
        return hashlib.sha1(blob.encode()).hexdigest()


PEERS = {
    "datatrove": Peer(
        "datatrove",
        # spacy: GopherQualityFilter's English word tokenizer (spacy.blank, no model download)
        ("datatrove[io,processing,s3]==0.10.1", "lxml_html_clean", "spacy"),
        needs_torch=False,
        probe="from datatrove.pipeline.filters import GopherQualityFilter as G;"
        "from datatrove.data import Document as D; G().filter(D(text='a b c', id='0'))",
    ),
    "nemo_curator": Peer(
        "nemo_curator",
        ("nemo-curator[text-cpu]==1.4.0", "lxml_html_clean"),
        needs_torch=True,
        probe="from nemo_curator.stages.text.download.html_extractors import ResiliparseExtractor",
    ),
}


def venv_python(peer: Peer, root: Path = BENCH_DIR) -> Path:
    return root / f"venv-{peer.name}" / "bin" / "python"


def ensure_peer(peer: Peer, root: Path = BENCH_DIR, log=print) -> Path | None:
    """The venv's python for ``peer``, installing it when missing or stale; None when it cannot be had."""
    env_dir = root / f"venv-{peer.name}"
    python = venv_python(peer, root)
    stamp = env_dir / ".installed"
    if stamp.is_file() and stamp.read_text() == peer.stamp() and _probe(python, peer):
        return python
    log(f"peers: installing {peer.name} into {env_dir} (first run only; a few minutes)")
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    steps = [[str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"]]
    if peer.needs_torch:
        steps.append([str(python), "-m", "pip", "install", "-q", TORCH])
    steps.append([str(python), "-m", "pip", "install", "-q", *peer.requirements])
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            log(f"peers: SKIPPING {peer.name}: `{' '.join(cmd[3:])}` failed:\n    " + "\n    ".join(tail))
            return None
    if not _probe(python, peer):
        log(f"peers: SKIPPING {peer.name}: installed but `{peer.probe}` fails in its venv")
        return None
    stamp.write_text(peer.stamp())
    return python


def _probe(python: Path, peer: Peer) -> bool:
    if not python.is_file():
        return False
    done = subprocess.run([str(python), "-c", peer.probe], capture_output=True, text=True)
    return done.returncode == 0


if __name__ == "__main__":
    names = sys.argv[1:] or list(PEERS)
    for name in names:
        print(name, ensure_peer(PEERS[name]))
