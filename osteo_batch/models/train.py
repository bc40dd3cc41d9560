"""Fine-tune a screening model: pair images with DXA, split by patient, LoRA, validate, save.

Why this shape: the SNUH study's best model was DINOv2 with LoRA adapters and
a 3-class WHO head; we keep that recipe, and make every choice a field of
:class:`TrainConfig` so the card can say exactly what was done. Labels are the
WHO class of the minimum T-score over the label sites; the split is by
patient (never by image) and stratified by label; the operating threshold is
chosen on held-out patients for a target sensitivity, because a screening
program cares first about how many osteoporotic women it finds.

:func:`train` reads as its steps: check the settings, pair and split
(:mod:`~osteo_batch.models.pairing`), build the network, fit (resumable,
:mod:`~osteo_batch.models.checkpoints`), merge, validate
(:mod:`~osteo_batch.models.validate`), write the folder and its card
(:mod:`~osteo_batch.models.card`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from osteo_batch.errors import UserError
from osteo_batch.models import validate
from osteo_batch.models.backbones import BackboneSpec, get_backbone, load_backbone_weights, lora_targets
from osteo_batch.models.card import code_version, write_card
from osteo_batch.models.checkpoints import Checkpoint, run_key
from osteo_batch.models.labels import LABELS, SITES
from osteo_batch.models.model import (
    ModelConfig, build_module, normalise, publish_model_dir, save_model_dir, staging_dir,
)
from osteo_batch.models.pairing import MIN_PAIRS, Pairs, load_pairs, sites_problem, split_by_patient, unpaired
from osteo_batch.models.predict import decode_cached, predict
from osteo_batch.store import Store

log = logging.getLogger("osteo_batch.train")

STRATEGIES = ("lora", "linear", "full")
CALIBRATIONS = ("platt", "isotonic")


@dataclass
class TrainConfig:
    backbone: str = "dinov2_tiny_demo"
    weights: str | None = None  # local safetensors; None = random init (demo only)
    strategy: str = "lora"  # "lora", "linear" (frozen backbone) or "full"
    masks: str | None = None  # folder of <SOP Instance UID>.png bone masks, for Δbone and IoU_bone
    marker_masks: str | None = None  # folder of <SOP Instance UID>.png side-marker masks: the heat on the marker
    cache_dir: str | None = None  # decoded images kept here, shared by models trained on the same pairs
    label_sites: tuple[str, ...] = SITES
    epochs: int = 30
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    lora_r: int = 8
    lora_alpha: int = 16
    val_fraction: float = 0.3  # held-out patients (never trained on)
    #: fit a calibration of P(osteoporosis) ("platt" or "isotonic") on part of the held-out patients; the
    #: threshold and bands are chosen there too, and every figure on the card comes from the rest (the test split)
    calibration: str | None = None
    calibration_share: float = 0.4  # of the held-out patients
    very_high_probability: float = 0.75  # with calibration: "very high" = at least this chance of osteoporosis
    pair_window_days: int = 180
    target_sensitivity: float = 0.85
    very_high_specificity: float = 0.95
    seed: int = 0
    workers: int = 2
    time_budget_s: float | None = None  # stop early (at an epoch end) past this


class TrainingDataError(UserError, ValueError):
    """Settings or pairs that cannot train a model; the message says what to change."""

    code = "training_data"


@dataclass
class TrainResult:
    model_dir: Path
    model_id: str
    card: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Splits:
    """Decoded images split by patient: train, and the held-out rest (validation + calibration)."""

    x_tr: np.ndarray
    y_tr: np.ndarray
    held: validate.HeldOut
    decoded: int  # images that decoded
    label_counts: dict[str, int]
    cal_patients: int


@dataclass
class _Network:
    """The network to fit and where its starting weights came from."""

    model: Any  # the module to fit (a PEFT wrapper with LoRA)
    mcfg: ModelConfig
    weights_note: str
    weights_sha256: str | None
    foundation: dict[str, Any] | None
    for_patients: bool
    trainable_parameters: int
    total_parameters: int


def train(store: Store, out: str | Path, cfg: TrainConfig, *, truth_csv: str | Path | None = None,
          progress=None, roots: tuple[str, ...] = (), retrieval=None) -> TrainResult:
    """Train on the eligible, DXA-paired images in ``store``; write the model directory ``out``.

    ``roots``: the archive's resolved roots (``Settings.archive_roots()``); when given, an image
    whose file has become a link out of them since the sweep is not opened (as in scoring).
    """
    import torch

    out = Path(out)
    check_config(cfg)
    t0 = time.monotonic()
    torch.manual_seed(cfg.seed)  # before decoding: the loader draws its base seed from torch's generator
    spec = get_backbone(cfg.backbone)
    pairs = _pairs(store, cfg)
    missing = unpaired(store, cfg.pair_window_days)
    data = _split(pairs, cfg, spec.img_size, roots, retrieval)
    net = _build(cfg, spec)
    ckpt = Checkpoint(out, run_key(asdict(cfg), pairs.rows, pairs.labels))
    history = _fit(net, data, cfg, ckpt, progress, t0)
    merged, p_val, merge_diff = _merge(net, data.held.x_val, cfg)
    val = validate.operating_points(merged, net.mcfg, data.held, p_val, _targets(cfg))
    net.mcfg.threshold, net.mcfg.bands, net.mcfg.calibration = val.threshold, val.bands, val.calibration
    ceiling = validate.ceiling(data.held.pid_val, val.y_bin, truth_csv)
    card = _card(cfg, spec, net, pairs, data, val, unpaired=missing, ceiling=ceiling)
    card.update(
        subgroups=validate.subgroups(val, data.held.meta_val),
        bone=validate.bone(merged, net.mcfg, data.held, val.y_bin, masks=cfg.masks, marker_masks=cfg.marker_masks,
                           seed=cfg.seed),
        code_version=code_version(), merge_max_abs_diff=merge_diff, epochs_run=len(history) - history.start,
        loss_history=list(history),
    )
    card["train_seconds"] = round(time.monotonic() - t0, 1)
    result = _publish(merged, net.mcfg, out, card)
    ckpt.clear()
    return result


def check_config(cfg: TrainConfig) -> None:
    """Refuse settings that cannot work before any image is decoded."""
    problem = sites_problem(cfg.label_sites)
    if problem:
        raise TrainingDataError(problem, code="bad_label_sites")
    if cfg.strategy not in STRATEGIES:
        raise TrainingDataError(f"strategy {cfg.strategy!r}: use one of {', '.join(STRATEGIES)}", code="bad_strategy")
    if cfg.calibration and cfg.calibration not in CALIBRATIONS:
        raise TrainingDataError(f"calibration {cfg.calibration!r}: use one of {', '.join(CALIBRATIONS)}",
                                code="bad_calibration")
    if cfg.weights:  # a damaged or swapped foundation is refused before any image is decoded
        from osteo_batch.models.foundation import read_manifest

        read_manifest(cfg.weights)


def _pairs(store: Store, cfg: TrainConfig) -> Pairs:
    pairs = load_pairs(store, window_days=cfg.pair_window_days, sites=tuple(cfg.label_sites))
    if len(pairs) < MIN_PAIRS:
        raise TrainingDataError(
            f"only {len(pairs)} eligible images have a DXA within {cfg.pair_window_days} days; "
            f"at least {MIN_PAIRS} are needed (check the DXA table's patient_id values and dates)",
            code="too_few_pairs")
    return pairs


def _split(pairs: Pairs, cfg: TrainConfig, img_size: int, roots: tuple[str, ...] = (), retrieval=None) -> _Splits:
    """Patients to validation (and calibration) first, then decode, then images to their side."""
    labels, patients = pairs.labels, pairs.patients
    val_patients = split_by_patient(patients, labels, cfg.val_fraction, cfg.seed)
    cal_patients: set[str] = set()
    if cfg.calibration:
        held_pairs = [(p, y) for p, y in zip(patients, labels) if p in val_patients]
        cal_patients = split_by_patient([p for p, _ in held_pairs], [y for _, y in held_pairs], cfg.calibration_share,
                                        cfg.seed + 1)
    x_all, ok = decode_cached(pairs.items(), img_size, cfg.workers, cfg.cache_dir, roots=roots, retrieval=retrieval)
    y_all = np.array([labels[i] for i in ok])
    pid_all = np.array([patients[i] for i in ok])
    is_held = np.array([p in val_patients for p in pid_all])
    is_cal = np.array([p in cal_patients for p in pid_all])
    is_val = is_held & ~is_cal  # the split every reported figure comes from
    meta_val = [pairs.rows[i] for i, v in zip(ok, is_val) if v]
    held = validate.HeldOut(x_all[is_val], y_all[is_val], pid_all[is_val], meta_val, x_all[is_cal], y_all[is_cal])
    if len(set(held.y_val.tolist())) < 2 or (held.y_val == 2).sum() == 0:
        raise TrainingDataError("the validation split has no osteoporosis cases; add data or change --seed",
                                code="no_validation_cases")
    if cfg.calibration and ((held.y_cal == 2).sum() < 5 or (held.y_cal != 2).sum() < 5):
        raise TrainingDataError("the calibration split needs 5 or more women with and without osteoporosis; "
                                "add pairs or raise calibration_share", code="no_calibration_cases")
    return _Splits(x_all[~is_held], y_all[~is_held], held, len(ok),
                   {LABELS[k]: int((y_all == k).sum()) for k in range(len(LABELS))},
                   len(cal_patients & set(pid_all.tolist())))


def _build(cfg: TrainConfig, spec: BackboneSpec) -> _Network:
    """The network from the registry, the starting weights loaded, LoRA (or the probe's frozen body) set up."""
    from peft import LoraConfig, get_peft_model

    mcfg = ModelConfig.for_backbone(spec.name, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, weights=cfg.weights)
    module = build_module(mcfg)
    targets = lora_targets(spec, module)
    mcfg.lora["target_modules"] = targets
    foundation, sha = None, None
    note = "random initialisation: a demonstration model, not a clinical one"
    if cfg.weights:
        info = load_backbone_weights(module, cfg.weights)
        foundation, sha = info.get("foundation"), info["sha256"]
        note = f"pretrained backbone from local file {info['file']} (sha256 {sha[:16]}...)"
        if foundation:
            note = f"foundation {foundation['name']}: {note}"
    # a model is fit for patients only if it started from a foundation that says it is (a real checkpoint
    # with no manifest is a site's own responsibility); random weights and phantom foundations never are
    for_patients = bool(cfg.weights) and (foundation is None or foundation.get("clinical_use") is not False)
    if cfg.strategy == "lora":
        lora = LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
            # pretrained weights keep their patch embedding; random ones have no features to adapt
            target_modules=targets, modules_to_save=list(spec.lora_modules_to_save) if not cfg.weights else ["head"],
        )
        model = get_peft_model(module, lora)
    else:  # linear probe: only the head learns; full: everything does
        model = module
        mcfg.lora = {}
        for name, prm in module.named_parameters():
            prm.requires_grad_(cfg.strategy == "full" or name.startswith("head."))
    params = list(model.parameters())
    return _Network(model, mcfg, note, sha, foundation, for_patients,
                    sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))


class _History(list):
    """Mean training loss per epoch; ``start`` is the epoch a resumed run began at."""

    start = 0


def _fit(net: _Network, data: _Splits, cfg: TrainConfig, ckpt: Checkpoint, progress, t0: float) -> _History:
    """AdamW with a one-cycle schedule and class weights; a checkpoint after every epoch."""
    import torch

    rng = np.random.default_rng(cfg.seed)
    model, x_tr, y_tr = net.model, data.x_tr, data.y_tr
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    counts = np.bincount(y_tr, minlength=3).astype(np.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(counts.sum() / np.maximum(counts, 1) / 3.0))
    steps = cfg.epochs * int(np.ceil(len(x_tr) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(1, steps), pct_start=0.15)
    history = _History()
    history.start = ckpt.restore(model, opt, sched, rng, history)
    if history.start:
        log.info("resuming from the checkpoint after epoch %d", history.start)
    for epoch in range(history.start, cfg.epochs):
        model.train()
        order = rng.permutation(len(x_tr))
        total = 0.0
        for i in range(0, len(order), cfg.batch_size):
            b = order[i : i + cfg.batch_size]
            xb = _augment(torch.from_numpy(x_tr[b]), rng)
            loss = loss_fn(model(normalise(xb, net.mcfg)), torch.from_numpy(y_tr[b]).long())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(b)
        history.append(round(total / max(1, len(x_tr)), 4))
        ckpt.save(epoch + 1, model, opt, sched, rng, history)
        if progress:
            progress(epoch + 1, cfg.epochs, history[-1])
        if cfg.time_budget_s and time.monotonic() - t0 > cfg.time_budget_s:
            log.info("time budget reached after %d epochs", len(history) - history.start)
            break
    return history


def _augment(x, rng: np.random.Generator):
    """Small exposure and position jitter: what differs between two exposures of one woman."""
    import torch

    n = x.shape[0]
    gain = torch.from_numpy(rng.uniform(0.9, 1.1, (n, 1, 1, 1)).astype(np.float32))
    bias = torch.from_numpy(rng.uniform(-0.05, 0.05, (n, 1, 1, 1)).astype(np.float32))
    dy, dx = (int(v) for v in rng.integers(-4, 5, 2))
    return torch.roll(x * gain + bias, shifts=(dy, dx), dims=(2, 3)).clamp(0, 1)


def _merge(net: _Network, x_val: np.ndarray, cfg: TrainConfig):
    """Fold LoRA into the backbone and prove the merge changes nothing; returns (merged, its P, max difference)."""
    p_unmerged = predict(net.model, x_val, net.mcfg)
    merged = net.model.merge_and_unload() if cfg.strategy == "lora" else net.model
    merged.requires_grad_(True)  # Grad-CAM needs gradients through every layer
    p_val = predict(merged, x_val, net.mcfg)
    return merged, p_val, float(np.abs(p_val - p_unmerged).max()) if len(p_val) else 0.0


def _targets(cfg: TrainConfig) -> validate.Targets:
    return validate.Targets(cfg.target_sensitivity, cfg.very_high_specificity, cfg.very_high_probability,
                            cfg.calibration, cfg.seed)


def _card(cfg: TrainConfig, spec: BackboneSpec, net: _Network, pairs: Pairs, data: _Splits,
          val: validate.Validation, *, unpaired: dict[str, int], ceiling: float | None) -> dict[str, Any]:
    """The card up to its bands (the model ID is added when the weights are written, the rest by :func:`train`)."""
    labelled = sorted(f"{r['sop_instance_uid']}:{y}" for r, y in zip(pairs.rows, pairs.labels))
    manifest = hashlib.sha256("\n".join(labelled).encode()).hexdigest()
    held = data.held
    return {
        "model_id": None,
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "intended_use": "Screening aid that ranks women for DXA referral. Not a diagnosis; DXA confirms; "
                        "never use it to rule osteoporosis out.",
        "backbone": spec.name,
        "backbone_note": spec.note,
        "weights": net.weights_note,
        "weights_sha256": net.weights_sha256,
        "random_init": cfg.weights is None,
        "foundation": net.foundation,
        "for_patients": net.for_patients,
        "strategy": cfg.strategy,
        "trainable_parameters": int(net.trainable_parameters),
        "total_parameters": int(net.total_parameters),
        "train": asdict(cfg),
        "data": {
            "paired_images": len(pairs),
            "decoded_images": data.decoded,
            "unpaired_images": unpaired,
            "train_images": int(len(data.x_tr)),
            "val_images": int(len(held.x_val)),
            "val_patients": int(len(set(held.pid_val.tolist()))),
            "calibration_images": int(len(held.x_cal)),
            "calibration_patients": data.cal_patients,
            "reported_on": "test" if cfg.calibration else "validation",
            "val_osteoporosis": int(val.y_bin.sum()),
            "label_counts": data.label_counts,
            "manifest_sha256": manifest,
        },
        **val.card(method=cfg.calibration, ceiling=ceiling),
    }


def _publish(merged, mcfg: ModelConfig, out: Path, card: dict[str, Any]) -> TrainResult:
    """Write weights, config and card to a staging folder, then swap it in."""
    staging = staging_dir(out)
    model_id = save_model_dir(merged, mcfg, staging)
    card["model_id"] = model_id
    write_card(staging, card, mcfg)
    publish_model_dir(staging, out)
    return TrainResult(out, model_id, card)
