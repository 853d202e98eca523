"""Storage: locations on any fsspec file system, atomic writes, Parquet shards, cache keys, the data-root layout."""
