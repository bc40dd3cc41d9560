"""The explain stage: heat maps of flagged images only, written as PNGs and recorded in the store.

Why only flagged images: a coordinator looks at a heat map to see that the
model weighed bone (spine, ribs) and not a marker or the edge of the film;
nobody looks at heat maps of unflagged images, and Grad-CAM costs a backward
pass. Overlays are PNG files named by a hash of (model ID, SOP Instance UID),
never by anything a person could read.

The map itself (HiResCAM at the first block's input norm) is
:func:`osteo_batch.models.gradcam.cam_maps`; this module turns it into files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
from dataclasses import dataclass

import numpy as np

from osteo_batch.models.gradcam import cam_maps
from osteo_batch.models.model import LoadedModel
from osteo_batch.scoring.tensors import DicomDataset, Item, make_loader


@dataclass
class Explained:
    sop_instance_uid: str
    heatmap: str  # file name under the heat-map folder


def heatmap_name(model_id: str, sop_instance_uid: str) -> str:
    return hashlib.sha256(f"{model_id}|{sop_instance_uid}".encode()).hexdigest()[:24] + ".png"


def overlay(image: np.ndarray, cam: np.ndarray, *, scale: int = 1) -> np.ndarray:
    """RGB uint8 overlay of a [0,1] CAM on a [0,1] grey image (browsers scale it up)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = np.repeat(image[..., None], 3, axis=2).astype(np.float32)
    out = show_cam_on_image(rgb, cam.astype(np.float32), use_rgb=True, image_weight=0.6)
    if scale > 1:
        out = np.kron(out, np.ones((scale, scale, 1), dtype=np.uint8))
    return out


def explain(
    model: LoadedModel,
    items: list[Item],
    out_dir: str | os.PathLike,
    *,
    batch_size: int = 8,
    workers: int = 0,
    device: str = "cpu",
    progress=None,
    roots: tuple[str, ...] = (),
) -> tuple[list[Explained], list[tuple[str, str]]]:
    """Write a heat map per item; returns what was written and (path, reason) failures."""
    from PIL import Image

    from osteo_batch.outputs import private_dir, write_private

    out = private_dir(out_dir)
    done: list[Explained] = []
    failed: list[tuple[str, str]] = []
    loader = make_loader(DicomDataset(items, model.config.img_size, roots=roots), batch_size=batch_size, workers=workers)
    for idx, x, fails in loader:
        failed.extend((items[i].path, r) for i, r in fails)
        if not len(idx):
            continue
        maps = cam_maps(model.module, model.config, x, device=device, batch_size=batch_size)
        for j, i in enumerate(idx.tolist()):
            name = heatmap_name(model.model_id, items[i].sop_instance_uid)
            png = io.BytesIO()
            Image.fromarray(overlay(x[j, 0].numpy(), maps[j])).save(png, format="PNG", optimize=True)
            write_private(out / name, png.getvalue())
            done.append(Explained(items[i].sop_instance_uid, name))
        if progress:
            progress(len(done) + len(failed), len(items))
    return done, failed


def record(store, model_id: str, run_id: str, explained: list[Explained]) -> None:
    import pyarrow as pa

    if not explained:
        return
    now = dt.datetime.now()
    tbl = pa.table(
        {
            "sop_instance_uid": [e.sop_instance_uid for e in explained],
            "model_id": [model_id] * len(explained),
            "heatmap": [e.heatmap for e in explained],
            "run_id": [run_id] * len(explained),
            "created_at": pa.array([now] * len(explained), pa.timestamp("us")),
        }
    )
    store.run("explanations_insert", expl=tbl)
