"""Training: the shared Lightning trainer, the data loaders over the shards, one module per paper model."""
