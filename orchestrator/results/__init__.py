"""The results store: the folder layout and run record, storage (local or object store), the
crash-safe Parquet sink, the checked run reader, compaction and failure clusters."""
