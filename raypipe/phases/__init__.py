"""One module per phase, each ``run(cfg, store, state) -> summary`` over its stages and operations:
:mod:`~raypipe.phases.seeds`, :mod:`~raypipe.phases.extract`, :mod:`~raypipe.phases.score`,
:mod:`~raypipe.phases.clean`, :mod:`~raypipe.phases.shard`; :mod:`raypipe.pipeline` runs them in order."""
