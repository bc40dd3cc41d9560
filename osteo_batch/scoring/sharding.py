"""Which shard an image belongs to: the first 8 bytes of the SHA-256 of its SOP Instance UID, modulo the shard count.

Why a hash of the UID: the same image lands in the same shard however the
archive is listed, on whichever machine, and ``sql/score_plan.sql`` computes
the same number in DuckDB, so a plan made in SQL and a check made here agree.
"""

from __future__ import annotations

import hashlib


def shard_of(sop_instance_uid: str, n_shards: int) -> int:
    """Deterministic shard of an image: a hash of its SOP Instance UID."""
    return int.from_bytes(hashlib.sha256(sop_instance_uid.encode()).digest()[:8], "big") % n_shards
