"""Class activation maps of the osteoporosis class: HiResCAM at the first block's input norm.

Why here, in the models package: both the explain stage (heat maps of flagged
images) and the evaluation of a trained model (IoU_bone, heat on the side
marker) need the same map from the same layer; the map belongs to the model,
the PNG to the stage.

For a ViT the map is taken at the *first* block's input norm, before any
attention has mixed the tokens (see :data:`osteo_batch.models.backbones.CAM_LAYER_NOTE`:
at the last block the demo model's maps weighed soft tissue and the lead
marker, at the first they sit on bone); the prefix tokens (class and register
tokens) are dropped and the patch tokens reshaped to the patch grid.
"""

from __future__ import annotations

import numpy as np

from osteo_batch.models.backbones import cam_layer_and_grid
from osteo_batch.models.model import normalise


def _vit_reshape(module):
    """Tokens (N, prefix + gh*gw, C) to a feature map (N, C, gh, gw), prefix tokens dropped."""
    n_prefix = getattr(module, "num_prefix_tokens", 1)
    gh, gw = cam_layer_and_grid(module)[1]

    def reshape(t):
        t = t[:, n_prefix:, :]
        return t.reshape(t.size(0), gh, gw, t.size(2)).permute(0, 3, 1, 2)

    return reshape


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
    layer = cam_layer_and_grid(module)[0]
    with HiResCAM(model=module, target_layers=[layer], reshape_transform=_vit_reshape(module)) as cam:
        for i in range(0, len(x), batch_size):
            xb = torch.as_tensor(x[i : i + batch_size]).to(device)
            xin = normalise(xb, config).requires_grad_(True)
            out.append(cam(input_tensor=xin, targets=[ClassifierOutputTarget(target)] * len(xb)))
    return np.concatenate(out) if out else np.empty((0,) + tuple(x.shape[2:]))
