"""In-memory inference for training, evaluation and calibration: decode the pairs once, predict probabilities.

Why apart from the nightly scorer (:mod:`osteo_batch.scoring.score`): these
callers need every image of a few thousand pairs at once, in memory, several
times (each epoch, each occlusion test, both halves of a recalibration), so
the images are decoded once and kept, optionally in a cache folder that the
models trained on the same pairs share.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np

from osteo_batch.models.labels import LABELS
from osteo_batch.models.model import ModelConfig, normalise
from osteo_batch.scoring.tensors import DicomDataset, Item, make_loader


def predict(module, x, cfg: ModelConfig, batch_size: int = 32) -> np.ndarray:
    """Class probabilities (N, 3) for images x (N, 1, H, W) in [0, 1]."""
    import torch

    out = []
    module.eval()
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            xb = torch.as_tensor(x[i : i + batch_size])
            out.append(torch.softmax(module(normalise(xb, cfg)), dim=1).numpy())
    return np.concatenate(out) if out else np.empty((0, len(LABELS)))


def decode_all(items: list[Item], img_size: int, workers: int, *,
               roots: tuple[str, ...] = (), retrieval=None) -> tuple[np.ndarray, list[int]]:
    """Decode once into memory; returns images (N,1,H,W) and the indices that decoded.

    ``roots`` (:func:`osteo_batch.archive.walk.real_roots`): a file that
    resolves outside them is refused unopened, like the nightly scorer does.
    ``retrieval`` (:class:`osteo_batch.pacs.spool.Retrieval`): items that are PACS
    instances are retrieved into its spool while the ones before them decode.
    """
    import contextlib

    import torch

    uris = [it.path for it in items if "://" in it.path] if retrieval is not None else []
    ds = DicomDataset(items, img_size, roots=roots, spool_dir=retrieval.spool_dir if uris else None)
    xs, keep = [], []
    with retrieval.prefetcher(uris, at_least=16) if uris else contextlib.nullcontext() as fetch:
        for idx, x, failed in make_loader(ds, batch_size=16, workers=workers):
            if fetch is not None:
                for i in [*idx.tolist(), *(i for i, _ in failed)]:
                    if "://" in items[i].path:
                        fetch.done(items[i].path)
            if len(idx):
                xs.append(x)
                keep.extend(idx.tolist())
    if not xs:
        return np.empty((0, 1, img_size, img_size), np.float32), []
    return torch.cat(xs).numpy(), keep


def cache_key(items: list[Item], img_size: int, roots: tuple[str, ...] = ()) -> str:
    """What a cached decode must match: the files, the size, and the roots it was bounded by.

    Without roots the key is what it always was (caches written before roots
    were passed stay valid); with them, a decode made under other bounds (or
    none) is never reused, so a file outside the archive is not read back
    from the cache either.
    """
    text = "\n".join(f"{it.path}|{it.sop_instance_uid}" for it in items).encode() + str(img_size).encode()
    if roots:
        text += ("\nroots:" + "\n".join(roots)).encode()
    return hashlib.sha256(text).hexdigest()[:16]


def decode_cached(items: list[Item], img_size: int, workers: int, cache_dir: str | None, *,
                  roots: tuple[str, ...] = (), retrieval=None) -> tuple[np.ndarray, list[int]]:
    """:func:`decode_all`, kept in ``cache_dir`` keyed by :func:`cache_key` (0600)."""
    if not cache_dir:
        return decode_all(items, img_size, workers, roots=roots, retrieval=retrieval)
    from osteo_batch.outputs import private_dir, write_private

    path = private_dir(cache_dir) / f"decoded-{cache_key(items, img_size, roots)}.npz"
    if path.is_file():
        with np.load(path) as z:
            return z["x"], z["ok"].tolist()
    x, ok = decode_all(items, img_size, workers, roots=roots, retrieval=retrieval)
    buf = io.BytesIO()
    np.savez(buf, x=x, ok=np.array(ok, dtype=np.int64))
    write_private(path, buf.getbuffer())  # one copy in memory beside x: the images are already all there
    return x, ok
