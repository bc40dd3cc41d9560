"""Pixel tensors: a torch DataLoader whose workers decode DICOM into model inputs.

Why workers: decoding (JPEG 2000 especially) is CPU-bound and the model is
accelerator-bound; worker processes decode the next batches while the model
runs on this one. A file that fails to decode comes back as a rejection with a
reason code, never as an exception that stops the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from osteo_batch.dicom.pixels import DisplayOptions, PixelError, load_image
from osteo_batch.reasons import Reason


@dataclass(frozen=True)
class Item:
    key: str  # path
    sop_instance_uid: str
    patient_id: str | None


class DicomDataset:
    """Map-style dataset over ``items``; yields (index, image or None, reason or None)."""

    def __init__(self, items: list[Item], img_size: int, opts: DisplayOptions = DisplayOptions()):
        self.items = items
        self.img_size = img_size
        self.opts = opts

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        try:
            img = load_image(self.items[i].key, self.img_size, self.opts)
            return i, img, None
        except PixelError as e:
            return i, None, e.reason
        except Exception:  # a bug, not bad input; still only this file's loss
            return i, None, Reason.DECODE_FAILED.value


def collate(batch):
    """Stack decoded images as (N, 1, H, W); keep failures apart."""
    import torch

    ok = [(i, img) for i, img, r in batch if img is not None]
    failed = [(i, r) for i, img, r in batch if img is None]
    idx = torch.tensor([i for i, _ in ok], dtype=torch.long)
    x = torch.from_numpy(np.stack([img for _, img in ok])[:, None]) if ok else torch.empty(0)
    return idx, x, failed


def make_loader(dataset: DicomDataset, *, batch_size: int, workers: int, pin_memory: bool = False, prefetch: int = 4):
    """Batches in order; each batch is decoded by exactly one worker.

    A map-style dataset with the default sequential batch sampler gives each
    index to one batch and each batch to one worker, so no image is decoded
    (or scored) twice and none is padded in. ``prefetch`` batches per worker
    are decoded ahead of the model; with ``pin_memory`` they arrive in
    page-locked memory, ready for a non-blocking copy to the GPU.
    """
    from torch.utils.data import DataLoader

    kw = {}
    if workers > 0:
        import functools
        import os

        from osteo_batch.workers import context, watch_parent

        kw = {"prefetch_factor": prefetch, "persistent_workers": True, "multiprocessing_context": context(),
              "worker_init_fn": functools.partial(watch_parent, os.getpid())}
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
        pin_memory=pin_memory, **kw,
    )


def shard_of(sop_instance_uid: str, n_shards: int) -> int:
    """Deterministic shard of an image: a hash of its SOP Instance UID."""
    import hashlib

    return int.from_bytes(hashlib.sha256(sop_instance_uid.encode()).digest()[:8], "big") % n_shards
