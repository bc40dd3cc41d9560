"""Pixel tensors: a torch DataLoader whose workers decode DICOM into model inputs.

Why workers: decoding (JPEG 2000 especially) is CPU-bound and the model is
accelerator-bound; worker processes decode the next batches while the model
runs on this one. A file that fails to decode comes back as a rejection with a
reason code, never as an exception that stops the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from osteo_batch.dicom.decode import is_panic
from osteo_batch.dicom.display import DisplayOptions
from osteo_batch.dicom.pixels import load_image
from osteo_batch.dicom.rejections import PixelError
from osteo_batch.reasons import Reason
from osteo_batch.timeouts import ItemTimeout, time_limit

#: Seconds one image may take to open, read and decode. A 2500x2048 JPEG 2000
#: lossless decodes in about 0.6 s on one core; the limit is for what never ends.
ITEM_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Item:
    path: str  # the file, as the sweep indexed it
    sop_instance_uid: str
    patient_id: str | None


class DicomDataset:
    """Map-style dataset over ``items``; yields (index, image or None, reason or None).

    ``roots`` (:func:`osteo_batch.archive.walk.real_roots`): where a file may
    resolve; one that now leads outside is never opened. ``item_timeout_s``:
    the time one image may take (:func:`time_limit`), past which it is
    rejected as ``decode_timeout`` and the worker goes on with the next.
    Each item is also checked to still hold the SOP Instance UID the sweep
    indexed (see :func:`osteo_batch.dicom.pixels.load_image`).
    """

    def __init__(self, items: list[Item], img_size: int, opts: DisplayOptions = DisplayOptions(), *,
                 roots: tuple[str, ...] = (), item_timeout_s: float | None = ITEM_TIMEOUT_S,
                 spool_dir: str | None = None):
        self.items = items
        self.img_size = img_size
        self.opts = opts
        self.roots = tuple(roots)
        self.item_timeout_s = item_timeout_s
        self.spool_dir = spool_dir  # PACS instances (a URI for a path) are read from here once retrieved

    def __len__(self) -> int:
        return len(self.items)

    def _local(self, it: Item) -> tuple[str, tuple[str, ...], str | None]:
        """The file to read for ``it``, the roots it may resolve in, and a rejection reason (PACS instances)."""
        if self.spool_dir is None or "://" not in it.path:
            return it.path, self.roots, None
        from osteo_batch.pacs.spool import checked_file

        return checked_file(self.spool_dir, it.path)

    def __getitem__(self, i: int):
        it = self.items[i]
        try:
            path, roots, reason = self._local(it)
            if reason:
                return i, None, reason
            with time_limit(self.item_timeout_s):
                img = load_image(path, self.img_size, self.opts, roots=roots,
                                 sop_instance_uid=it.sop_instance_uid)
            return i, img, None
        except ItemTimeout:
            return i, None, Reason.DECODE_TIMEOUT.value
        except PixelError as e:
            return i, None, e.reason
        except Exception:  # a bug, not bad input; still only this file's loss
            return i, None, Reason.DECODE_FAILED.value
        except BaseException as e:  # a native decoder's panic: this file's loss, not the worker's end
            if is_panic(e):
                return i, None, Reason.DECODE_FAILED.value
            raise


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
