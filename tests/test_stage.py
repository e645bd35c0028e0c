"""The stage contract: declared columns are checked, added types are cast, resources become Ray
arguments under the small-cluster rules, and one adapter runs a stage as tasks or as an actor pool."""

from __future__ import annotations

import os
import time

import pyarrow as pa
import pytest
import ray

from raypipe.stage import (
    LIGHT_TASK_CPUS,
    Resources,
    Stage,
    actor_cpus,
    apply,
    map_table,
    plan_for_cpus,
    pool_size,
    ray_args,
)


class WordCount(Stage):
    needs = ("text",)
    adds = pa.schema([("n_words", pa.int32())])

    def __call__(self, batch: pa.Table) -> pa.Table:
        counts = [len((t or "").split()) for t in batch.column("text").to_pylist()]
        return batch.append_column("n_words", pa.array(counts, pa.int64()))  # cast to int32 by the contract


def setup_counter(resources: Resources) -> Stage:
    """A stage defined in a function, so Ray pickles it by value (workers cannot import tests)."""

    class SetupCounter(Stage):
        """Tags each row with the process that ran it and how many times ``setup`` ran there."""

        needs = ("text",)
        adds = pa.schema([("pid", pa.int64()), ("setups", pa.int64())])

        def __init__(self, resources: Resources):
            self.resources = resources
            self.batch_size = 4
            self.setups = 0

        def setup(self) -> None:
            self.setups += 1

        def __call__(self, batch: pa.Table) -> pa.Table:
            n = batch.num_rows
            batch = batch.append_column("pid", pa.array([os.getpid()] * n, pa.int64()))
            return batch.append_column("setups", pa.array([self.setups] * n, pa.int64()))

    return SetupCounter(resources)


def test_run_casts_added_columns_to_their_declared_types() -> None:
    out = WordCount().run(pa.table({"text": ["a b c", None, ""]}))
    assert out.schema.field("n_words").type == pa.int32()
    assert out.column("n_words").to_pylist() == [3, 0, 0]


def test_run_names_a_missing_input_column() -> None:
    with pytest.raises(ValueError, match=r"WordCount needs columns \['text'\]"):
        WordCount().run(pa.table({"body": ["x"]}))


def test_run_refuses_a_stage_that_forgets_a_column_or_drops_rows() -> None:
    class Forgets(WordCount):
        def __call__(self, batch: pa.Table) -> pa.Table:
            return batch

    class Drops(WordCount):
        def __call__(self, batch: pa.Table) -> pa.Table:
            return super().__call__(batch).slice(1)

    with pytest.raises(ValueError, match="did not add its declared column 'n_words'"):
        Forgets().run(pa.table({"text": ["x"]}))
    with pytest.raises(ValueError, match="stages never drop"):
        Drops().run(pa.table({"text": ["x", "y"]}))


def test_resources_become_ray_arguments_under_the_small_cluster_rules() -> None:
    task = ray_args(Resources(), cpus=2)
    assert task == {"num_cpus": LIGHT_TASK_CPUS} and "compute" not in task
    pool = ray_args(Resources(cpus=1.0, actors=3, memory=2**30), cpus=16)
    assert pool["compute"].max_size == 3 and pool["num_cpus"] == 1.0 and pool["memory"] == 2**30
    # a pool never leaves less than one whole CPU for Ray Data's own whole-CPU tasks
    small = ray_args(Resources(cpus=1.0, actors=2), cpus=2)
    assert small["num_cpus"] == actor_cpus(1.0, 2, 2) == 0.5
    assert ray_args(Resources(cpus=0.5, actors=1), cpus=1)["num_cpus"] == 0.0
    gpu = ray_args(Resources(cpus=1.0, gpus=1.0, actors=2), cpus=1)
    assert gpu["num_gpus"] == 1.0 and gpu["num_cpus"] == 1.0  # GPU nodes bring their own CPUs


def test_apply_runs_setup_once_per_actor_and_per_task(local_ray) -> None:
    ds = ray.data.from_items([{"text": f"page {i}"} for i in range(24)], override_num_blocks=6)
    pooled = apply(ds, setup_counter(Resources(cpus=0.25, actors=1))).take_all()
    assert len(pooled) == 24 and {r["pid"] for r in pooled} == {pooled[0]["pid"]}
    assert {r["setups"] for r in pooled} == {1}  # one actor, one setup, every batch
    tasks = apply(ds, setup_counter(Resources())).take_all()
    assert len(tasks) == 24 and {r["setups"] for r in tasks} == {1}  # each task builds its own copy


def test_map_table_may_change_rows_and_passes_its_arguments(local_ray) -> None:
    ds = ray.data.from_items([{"n": i} for i in range(10)])

    def keep_multiples(batch: pa.Table, of: int) -> pa.Table:
        return batch.filter(pa.array([n % of == 0 for n in batch.column("n").to_pylist()]))

    assert sorted(r["n"] for r in map_table(ds, keep_multiples, of=3).take_all()) == [0, 3, 6, 9]


def test_a_gpu_that_never_comes_fails_the_plan_naming_it(local_ray) -> None:
    """A local Ray has no GPU and no autoscaler: the plan must fail in the configured wait, not hang."""
    from raypipe.runtime import resources_within

    gpu = Resources(cpus=0.25, gpus=1.0, actors=1)
    ds = apply(ray.data.from_items([{"text": "x"}] * 4), setup_counter(gpu))
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"no GPU appeared within 3s .*retrieve\.num_gpus"):
        with resources_within(gpu, wait_s=3, knob="retrieve.num_gpus", poll_s=0.2):
            ds.take_all()
    assert time.monotonic() - started < 60
    with resources_within(Resources(cpus=0.25, actors=1), wait_s=3, knob="unused"):  # no GPU asked: no wait
        assert len(apply(ray.data.from_items([{"text": "x"}] * 4), setup_counter(Resources())).take_all()) == 4


def test_pools_grow_to_the_config_maximum_on_a_cluster_that_can_grow(local_ray) -> None:
    from raypipe.config import load_config
    from raypipe.phases.extract import _writer_resources

    cfg = load_config(base={"input": "x", "output": "y", "extract": {"max_writers": 24}})
    assert pool_size(64) == 2 and _writer_resources(cfg).actors == 2  # a fixed 2-CPU cluster: one per CPU
    plan_for_cpus(512)  # ray.max_cpus: an autoscaling cluster that may grow to 512 CPUs
    try:
        assert pool_size(64) == 64 and _writer_resources(cfg).actors == 24
        args = ray_args(_writer_resources(cfg))
        assert args["compute"].min_size == 1 and args["compute"].max_size == 24
        assert args["num_cpus"] == LIGHT_TASK_CPUS  # each actor asks its CPUs, so the autoscaler brings nodes
    finally:
        plan_for_cpus(None)
    assert pool_size(64) == 2
