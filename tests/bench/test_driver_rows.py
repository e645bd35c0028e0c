"""The driver-row counter of bench/scale.py counts the rows Ray Data hands to the driver, once each."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.driver_rows import DriverRows, install, uninstall


@pytest.fixture
def counter(local_ray: None) -> Iterator[DriverRows]:
    counted = install(DriverRows())
    try:
        yield counted
    finally:
        uninstall()


def test_counts_rows_of_every_consuming_call(counter: DriverRows) -> None:
    import ray

    ds = ray.data.range(1000, override_num_blocks=4)
    assert sum(len(b["id"]) for b in ds.iter_batches(batch_size=64)) == 1000
    assert counter.by_method["iter_batches"] == 1000
    assert sum(1 for _ in ds.iter_rows()) == 1000
    assert len(ds.to_pandas()) == 1000
    assert len(ds.take(7)) == 7
    assert len(ds.take_batch(5)["id"]) == 5
    assert counter.by_method == {"iter_batches": 1000, "iter_rows": 1000, "to_pandas": 1000, "take": 7, "take_batch": 5}
    assert counter.total == 3012
    # every count is attributed to this file, the line that asked for the rows
    assert all(caller.startswith(__file__) for caller in counter.by_caller)


def test_nested_and_summarizing_calls(counter: DriverRows) -> None:
    import ray

    ds = ray.data.range(500, override_num_blocks=5)
    # take() runs iter_rows() which runs iter_batches(): the rows count once, under take
    assert len(ds.take(100)) == 100
    assert dict(counter.by_method) == {"take": 100}
    # count() brings no rows through these calls; an aggregation brings its one result row
    assert ds.count() == 500
    assert counter.total == 100
    assert ds.sum("id") == sum(range(500))
    assert counter.total == 101
    # the iterator of a dataset counts like the dataset
    assert sum(len(b) for b in ds.iterator().iter_batches(batch_format="pandas")) == 500
    assert counter.total == 601
