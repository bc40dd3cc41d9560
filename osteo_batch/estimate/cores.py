"""Per-core rates: decoding on one worker with one thread, and the model on one thread.

Why per core: the pipeline's figure is one machine's. Decoding and the model
per core say what another machine of the same CPU would do with more cores,
``cores / (1/decode_core_ips + 1/model_core_ips)``, and what decoding could
feed a GPU, ``cores × decode_core_ips`` (:mod:`osteo_batch.estimate.project`).
Both are timed on images of the sample, after the sample's own run, so they
never slow it; each is cut off at a few seconds.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from osteo_batch.scoring.tensors import DicomDataset, Item

#: seconds each per-core measurement may take (at least one image, or one pass, is always timed)
BUDGET_S = 4.0
#: images decoded at most (their pixels then feed the model's measurement)
MAX_DECODE = 16
#: images per timed forward of the model
MODEL_BATCH = 4


def decode_core_ips(items: list[Item], img_size: int, *, roots: tuple[str, ...] = (), spool_dir: str | None = None,
                    budget_s: float = BUDGET_S) -> tuple[float | None, list[np.ndarray]]:
    """Images/s decoded here on one thread (as one DataLoader worker does), and the images decoded.

    The first image is decoded untimed (the codecs' first call loads them).
    """
    from osteo_batch.scoring.threads import intra_op_threads

    ds = DicomDataset(items[:MAX_DECODE + 1], img_size, roots=roots, spool_dir=spool_dir)
    images: list[np.ndarray] = []
    n, spent = 0, 0.0
    with intra_op_threads(1):  # a DataLoader worker runs torch on one thread
        for i in range(len(ds)):
            t = time.monotonic()
            _, img, _reason = ds[i]
            dt = time.monotonic() - t
            if img is None:
                continue
            images.append(img)
            if len(images) == 1:
                continue  # the warm-up
            n, spent = n + 1, spent + dt
            if spent >= budget_s:
                break
    return (n / spent if n and spent > 0 else None), images


def model_core_ips(model, images: list[np.ndarray], opts, precision: str | None, *,
                   budget_s: float = BUDGET_S) -> float | None:
    """Images/s of the model's forward on one thread, in the precision the sample was scored in."""
    import torch

    from osteo_batch.scoring.forward import Forward
    from osteo_batch.scoring.threads import intra_op_threads

    if not images:
        return None
    x = torch.from_numpy(np.stack(images[:MODEL_BATCH])[:, None])
    # a batch of exactly these images (bf16 would pad a smaller one to the run's batch size and time that)
    fwd = Forward(model, replace(opts, precision=precision or "fp32", compile=False, batch_size=len(x)))
    n, spent = 0, 0.0
    with intra_op_threads(1), torch.inference_mode():
        fwd(x)  # the warm-up, at the timed shape (and no precision to choose: it is given)
        while n == 0 or spent < budget_s:
            t = time.monotonic()
            fwd(x)
            spent += time.monotonic() - t
            n += len(x)
    return n / spent if spent > 0 else None
