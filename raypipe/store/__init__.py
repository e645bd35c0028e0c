"""Everything that touches storage: object stores and retries, run state and completion records,
parquet parts, WARC reading, Megatron files and the manifest."""
