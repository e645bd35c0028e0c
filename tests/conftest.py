"""Shared fixtures: where ../shared/data is, a real S3 server on 127.0.0.1 and its environment, and a
local Ray for the tests of stages and whole-dataset operations."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.local_s3 import LocalS3, start_local_s3

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("RAYPIPE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it skip when it is absent (never in CI, where it exists)."""
    path = shared_data_dir()
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing, but CI always has ../shared/data")
        pytest.skip(f"{path} not found: these tests read the real data in ../shared/data")
    return path


@pytest.fixture(scope="session")
def s3_server() -> Iterator[LocalS3]:
    """One SeaweedFS S3 server for the session, bound to 127.0.0.1 on free ports."""
    server = start_local_s3()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server: LocalS3, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point boto3, s3fs and pyarrow at the local server for one test, as production would."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return s3_server.env


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A 2-CPU local Ray for one test module (loopback only, no dashboard)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()
