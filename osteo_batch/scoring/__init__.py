"""Pixels to scores: :mod:`.tensors` (the DataLoader whose workers decode) and :mod:`.score`
(shard plans, batches through the model, Parquet parts, the single loader into the store)."""
