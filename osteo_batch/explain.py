"""Explanations: Grad-CAM heat maps for flagged images only.

Why only flagged images: a coordinator looks at a heat map to see that the
model weighed bone (spine, ribs) and not a marker or the edge of the film;
nobody looks at heat maps of unflagged images, and Grad-CAM costs a backward
pass. Overlays are PNG files named by a hash of (model ID, SOP Instance UID),
never by anything a person could read.

The map is HiResCAM from the grad-cam library (Grad-CAM with element-wise
weights, see :func:`cam_maps`). For a ViT it is taken at the *first* block's input norm, before any
attention has mixed the tokens (see ``models.backbones.CAM_LAYER_NOTE``: at the
last block the demo model's maps weighed soft tissue and the lead marker, at
the first they sit on bone); the prefix tokens (class and register tokens) are
dropped and the patch tokens reshaped to the patch grid.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass

import numpy as np

from osteo_batch.models.model import LoadedModel, normalise
from osteo_batch.scoring.tensors import DicomDataset, Item, make_loader


@dataclass
class Explained:
    sop_instance_uid: str
    heatmap: str  # file name under the heat-map folder


def heatmap_name(model_id: str, sop_instance_uid: str) -> str:
    return hashlib.sha256(f"{model_id}|{sop_instance_uid}".encode()).hexdigest()[:24] + ".png"


def _vit_reshape(module):
    from osteo_batch.models.backbones import cam_layer_and_grid

    n_prefix = getattr(module, "num_prefix_tokens", 1)
    gh, gw = cam_layer_and_grid(module)[1]

    def reshape(t):
        t = t[:, n_prefix:, :]
        return t.reshape(t.size(0), gh, gw, t.size(2)).permute(0, 3, 1, 2)

    return reshape


def overlay(image: np.ndarray, cam: np.ndarray, *, scale: int = 1) -> np.ndarray:
    """RGB uint8 overlay of a [0,1] CAM on a [0,1] grey image (browsers scale it up)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = np.repeat(image[..., None], 3, axis=2).astype(np.float32)
    out = show_cam_on_image(rgb, cam.astype(np.float32), use_rgb=True, image_weight=0.6)
    if scale > 1:
        out = np.kron(out, np.ones((scale, scale, 1), dtype=np.uint8))
    return out


def cam_maps(module, config, x, *, device: str = "cpu", batch_size: int = 8) -> np.ndarray:
    """Class activation maps (N, H, W) in [0, 1] for the osteoporosis class of images ``x`` (N, 1, H, W).

    HiResCAM (grad-cam's element-wise gradient x activation), not Grad-CAM: at a layer whose tokens are still
    local, Grad-CAM's channel weights averaged over the image blur the map, while HiResCAM's map is the
    exact first-order share of each patch in the score (on the demo model: heat on bone 46% against 39%).
    """
    import torch
    from pytorch_grad_cam import HiResCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    target = config.labels.index(config.score_label)
    out = []
    from osteo_batch.models.backbones import cam_layer_and_grid

    layer = cam_layer_and_grid(module)[0]
    with HiResCAM(model=module, target_layers=[layer], reshape_transform=_vit_reshape(module)) as cam:
        for i in range(0, len(x), batch_size):
            xb = torch.as_tensor(x[i : i + batch_size]).to(device)
            xin = normalise(xb, config).requires_grad_(True)
            out.append(cam(input_tensor=xin, targets=[ClassifierOutputTarget(target)] * len(xb)))
    return np.concatenate(out) if out else np.empty((0,) + tuple(x.shape[2:]))


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

    from osteo_batch.outputs import private_dir

    out = private_dir(out_dir)
    done: list[Explained] = []
    failed: list[tuple[str, str]] = []
    loader = make_loader(DicomDataset(items, model.config.img_size, roots=roots), batch_size=batch_size, workers=workers)
    for idx, x, fails in loader:
        failed.extend((items[i].key, r) for i, r in fails)
        if not len(idx):
            continue
        maps = cam_maps(model.module, model.config, x, device=device, batch_size=batch_size)
        for j, i in enumerate(idx.tolist()):
            name = heatmap_name(model.model_id, items[i].sop_instance_uid)
            tmp = out / f".{name}.tmp"
            Image.fromarray(overlay(x[j, 0].numpy(), maps[j])).save(tmp, format="PNG", optimize=True)
            os.chmod(tmp, 0o600)
            os.replace(tmp, out / name)
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
