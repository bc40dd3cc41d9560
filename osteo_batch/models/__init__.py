"""Models: what scores an image, how it was made, and how a site judges and recalibrates it.

In the order a model is made and used:

- ``labels``: WHO classes from DXA T-scores, and the T-score sites.
- ``backbones`` (+ ``hf``): the registry of backbones and how each is built; ``foundation``: a
  pretrained backbone's manifest; ``pretrain``: self-supervised pretraining of the phantom foundation.
- ``model``: the model folder (weights, config, card): write, check, load; ``digest``: the file hash
  its model ID rests on.
- ``pairing``: image-DXA pairs, labels and the patient split, for training and calibration alike.
- ``predict``: decode pairs once (cached) and predict in memory; ``train``: the fine-tune, in named
  steps; ``checkpoints``: resumable epochs; ``validate``: threshold, bands and figures on held-out
  women; ``card``: card.json and card.html.
- ``metrics``, ``evaluate``, ``plots``: AUC and its CIs, calibration, subgroups, bone metrics, figures;
  ``gradcam``: the heat map of the osteoporosis class.
- ``calibrate``: site recalibration, a new model version; ``bands``: risk bands and the displayed score.
"""
