"""The stage contract, and the one adapter that applies stages to Ray Data.

A :class:`Stage` maps one Arrow batch to one Arrow batch. It declares the columns it ``needs``,
the typed columns it ``adds`` (or overwrites), the :class:`Resources` it wants and its batch
size; ``setup()`` loads what it needs (a model, an index) once per worker. Stages tag and never
drop rows: one selector (:mod:`raypipe.select`) decides.

:func:`apply` is the only place that turns a stage into ``Dataset.map_batches`` arguments, so the
small-cluster scheduling rules live here once:

- tasks and actors ask for fractional CPUs, because Ray Data asks for whole CPUs in places a
  caller cannot change (``ListFiles``, shuffle map/reduce tasks, column projections); a plan whose
  actors hold every CPU waits forever for those tasks;
- an actor pool never reserves so much that less than one whole CPU is left for them (on a 1-CPU
  Ray the actors reserve nothing and share the core).

:func:`map_table` is the same adapter for the light, stateless column maps inside whole-dataset
operations (dedup shuffles, joins, parquet writes), which are functions, not stages.

A stage is testable without Ray: ``stage.setup(); stage.run(table)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import pyarrow as pa

LIGHT_TASK_CPUS = 0.25
"""CPUs asked by light Ray Data tasks (column maps, reads of our own parquet). Actor pools hold
fractional CPUs; a task that needs a whole CPU can then fit on no small node (a 2-CPU laptop, a
1-CPU worker) and the plan waits forever, so light tasks ask for a quarter."""


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage asks Ray for.

    ``actors`` None runs the stage as stateless tasks (``setup()`` then runs per task: keep it
    cheap); a number runs it on an autoscaling pool of ``min_actors``..``actors`` actors that each
    call ``setup()`` once. ``cpus`` is what one task or actor wants; for a pool, :func:`apply` may
    give less on a small cluster (see :func:`actor_cpus`). ``memory`` is bytes of heap to reserve.
    """

    cpus: float = LIGHT_TASK_CPUS
    gpus: float = 0.0
    memory: int | None = None
    actors: int | None = None
    min_actors: int = 1


class Stage:
    """One per-batch step of a phase: Arrow in, the same rows with more columns out.

    Subclasses set ``needs``/``adds`` (class or instance attributes), may set ``resources`` and
    ``batch_size`` per instance (from the config), and implement ``__call__``.
    """

    needs: ClassVar[tuple[str, ...]] = ()
    adds: ClassVar[pa.Schema] = pa.schema([])
    resources: Resources = Resources()
    batch_size: int | None = 1024

    @property
    def name(self) -> str:
        return type(self).__name__

    def setup(self) -> None:
        """Load what the stage needs once per worker (models, indexes); default: nothing."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        raise NotImplementedError

    def run(self, batch: pa.Table) -> pa.Table:
        """``__call__`` between the contract's checks: the needed columns are there before, and
        every added column is there with its declared type after (cast if it came out otherwise,
        so parts written from different batches share one schema)."""
        missing = [c for c in self.needs if c not in batch.column_names]
        if missing:
            raise ValueError(f"stage {self.name} needs columns {missing}; the batch has {batch.column_names}")
        out = self(batch)
        if out.num_rows != batch.num_rows:
            raise ValueError(f"stage {self.name} returned {out.num_rows} rows for {batch.num_rows}: stages never drop")
        return conform(out, self.adds, self.name)


class FrameStage(Stage):
    """A stage whose work is written over pandas frames (model wrappers whose APIs take lists).

    ``fn`` is a class, built once per worker in ``setup`` with ``kwargs``, or a function called
    with ``kwargs``; either maps a frame to a frame with the same rows. The batch crosses the
    contract as Arrow, like every stage's.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        needs: tuple[str, ...],
        adds: pa.Schema,
        resources: Resources | None = None,
        batch_size: int | None = 1024,
        **kwargs: Any,
    ):
        self.fn, self.kwargs = fn, kwargs
        self.needs, self.adds = needs, adds
        self.resources = resources or Resources()
        self.batch_size = batch_size
        self._call: Callable[[Any], Any] | None = None

    @property
    def name(self) -> str:
        return getattr(self.fn, "__name__", type(self.fn).__name__)

    def setup(self) -> None:
        if self._call is None:
            self._call = self.fn(**self.kwargs) if isinstance(self.fn, type) else partial(self.fn, **self.kwargs)

    def __call__(self, batch: pa.Table) -> pa.Table:
        assert self._call is not None, "setup() first"
        out = self._call(batch.to_pandas())
        if isinstance(out, pa.Table):
            return out
        # Columns the function left alone pass through as Arrow (no pandas round trip to change
        # their types); columns it dropped are dropped; the added ones take their declared types.
        kept = [c for c in batch.column_names if c in out.columns and c not in self.adds.names]
        table = batch.select(kept)
        for field in self.adds:
            table = table.append_column(field, pa.array(out[field.name], type=field.type, from_pandas=True))
        return table


def conform(table: pa.Table, schema: pa.Schema, who: str = "stage") -> pa.Table:
    """``table`` with every field of ``schema`` cast to its declared type; a missing one is an error."""
    for field in schema:
        if field.name not in table.column_names:
            raise ValueError(f"{who} did not add its declared column {field.name!r}")
        i = table.schema.get_field_index(field.name)
        if table.schema.field(i).type != field.type:
            table = table.set_column(i, field.name, table.column(i).cast(field.type))
    return table


class _StageActor:
    """An actor of a stage's pool: ``setup()`` once, then one batch per call."""

    def __init__(self, stage: Stage):
        stage.setup()
        self.stage = stage

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.stage.run(batch)


def _stage_task(batch: pa.Table, stage: Stage) -> pa.Table:
    stage.setup()
    return stage.run(batch)


_planned_cpus = 0.0


def plan_for_cpus(max_cpus: float | None) -> None:
    """Plan pools and the small-cluster guards for a cluster that may grow to ``max_cpus`` CPUs
    (``ray.max_cpus``): an autoscaling cluster starts with fewer, or none. None: a fixed cluster."""
    global _planned_cpus
    _planned_cpus = float(max_cpus or 0)


def cluster_cpus() -> float:
    """The CPUs to plan for: those the cluster may grow to (``ray.max_cpus``) or has now, the more."""
    import ray

    return max(float(ray.cluster_resources().get("CPU", 1.0)), _planned_cpus)


def pool_size(maximum: int) -> int:
    """Most actors of an autoscaling pool (it starts at one): the config's ``maximum``, but no
    more than one per CPU the cluster can have, so a fixed small cluster keeps its few workers."""
    return max(1, min(maximum, int(cluster_cpus())))


def actor_cpus(wanted: float, pool: int, cpus: float) -> float:
    """CPUs per actor of a pool of ``pool``: ``wanted`` while the pool leaves a whole CPU for the
    plan's tasks (some of Ray Data's own ask for one), else a share of what is left, down to
    nothing: the actors then share the cores with the tasks instead of starving them."""
    return wanted if cpus - pool * wanted >= 1 else max(0.0, (cpus - 1) / pool)


def ray_args(resources: Resources, cpus: float | None = None) -> dict[str, Any]:
    """``map_batches`` resource arguments for ``resources`` on a cluster of ``cpus`` CPUs."""
    args: dict[str, Any] = {}
    if resources.actors:
        from ray.data import ActorPoolStrategy

        size = max(1, resources.actors)
        args["compute"] = ActorPoolStrategy(min_size=min(resources.min_actors, size), max_size=size)
        if resources.gpus:
            args["num_cpus"] = resources.cpus
        else:
            args["num_cpus"] = actor_cpus(resources.cpus, size, cluster_cpus() if cpus is None else cpus)
    else:
        args["num_cpus"] = resources.cpus
    if resources.gpus:
        args["num_gpus"] = resources.gpus
    if resources.memory:
        args["memory"] = resources.memory
    return args


def apply(ds: Any, stage: Stage) -> Any:
    """Append ``stage`` to the Ray Dataset ``ds`` (the only ``map_batches`` of stages)."""
    if stage.resources.actors:
        return _map(ds, _StageActor, stage.resources, stage.batch_size, constructor_args=(stage,))
    return _map(ds, _stage_task, stage.resources, stage.batch_size, fn_args=(stage,))


def map_table(
    ds: Any,
    fn: Callable[..., Any],
    *,
    batch_format: str = "pyarrow",
    batch_size: int | None = None,
    cpus: float = LIGHT_TASK_CPUS,
    **fn_kwargs: Any,
) -> Any:
    """A light stateless column map inside a whole-dataset operation (a task, ``cpus`` CPUs).

    Unlike a stage it may change the rows (filter, explode, aggregate a batch); ``fn_kwargs`` go
    to ``fn``. ``batch_format`` "pandas" is for the dedup internals written over frames.
    """
    return _map(ds, fn, Resources(cpus=cpus), batch_size, batch_format=batch_format, fn_kwargs=fn_kwargs)


def sink(ds: Any, writer: type, *args: Any, resources: Resources, batch_size: int | None = None) -> Any:
    """Append a writer: a class built once per actor with ``args`` that consumes batches and
    returns a small summary table per batch (what it wrote), for the driver to count files."""
    return _map(ds, writer, resources, batch_size, constructor_args=args)


def _map(
    ds: Any,
    fn: Any,
    resources: Resources,
    batch_size: int | None,
    *,
    batch_format: str = "pyarrow",
    fn_args: tuple[Any, ...] = (),
    fn_kwargs: dict[str, Any] | None = None,
    constructor_args: tuple[Any, ...] | None = None,
) -> Any:
    kwargs: dict[str, Any] = {"batch_format": batch_format, "batch_size": batch_size, **ray_args(resources)}
    if fn_args:
        kwargs["fn_args"] = fn_args
    if fn_kwargs:
        kwargs["fn_kwargs"] = fn_kwargs
    if constructor_args is not None:
        kwargs["fn_constructor_args"] = constructor_args
    return ds.map_batches(fn, **kwargs)
