"""Fine-tune a screening model: pair images with DXA, split by patient, LoRA, evaluate, save.

Why this shape: the SNUH study's best model was DINOv2 with LoRA adapters and
a 3-class WHO head; we keep that recipe, and make every choice a field of
:class:`TrainConfig` so the card can say exactly what was done. Labels are the
WHO class of the minimum T-score over the label sites; the split is by
patient (never by image) and stratified by label; the operating threshold is
chosen on the validation split for a target sensitivity, because a screening
program cares first about how many osteoporotic women it finds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from osteo_batch.models import metrics
from osteo_batch.models.plots import roc_points
from osteo_batch.models.backbones import get_backbone, load_backbone_weights, lora_targets
from osteo_batch.models.model import (
    LABELS, ModelConfig, build_module, normalise, publish_model_dir, save_model_dir, staging_dir,
)
from osteo_batch.store import Store
from osteo_batch.scoring.tensors import DicomDataset, Item, make_loader
from osteo_batch.models.labels import SITES, min_t, who_class

log = logging.getLogger("osteo_batch.train")


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


class TrainingDataError(ValueError):
    pass


@dataclass
class TrainResult:
    model_dir: Path
    model_id: str
    card: dict[str, Any] = field(default_factory=dict)


def split_by_patient(patients: list[str], labels: list[int], val_fraction: float, seed: int) -> set[str]:
    """Validation patients: a stratified (by label) random share of patients."""
    rng = np.random.default_rng(seed)
    by_label: dict[int, list[str]] = {}
    for p, y in sorted(set(zip(patients, labels))):
        by_label.setdefault(y, []).append(p)
    val: set[str] = set()
    for y, ps in sorted(by_label.items()):
        ps = sorted(set(ps))
        rng.shuffle(ps)
        val.update(ps[: int(round(len(ps) * val_fraction))])
    return val


def _decode_all(items: list[Item], img_size: int, workers: int) -> tuple[np.ndarray, list[int]]:
    """Decode once into memory; returns images (N,1,H,W) and the indices that decoded."""
    import torch

    ds = DicomDataset(items, img_size)
    xs, keep = [], []
    for idx, x, failed in make_loader(ds, batch_size=16, workers=workers):
        if len(idx):
            xs.append(x)
            keep.extend(idx.tolist())
    if not xs:
        return np.empty((0, 1, img_size, img_size), np.float32), []
    return torch.cat(xs).numpy(), keep


def decode_cached(items: list[Item], img_size: int, workers: int, cache_dir: str | None):
    """:func:`_decode_all`, kept in ``cache_dir`` keyed by the files and the size (0600)."""
    if not cache_dir:
        return _decode_all(items, img_size, workers)
    import os

    from osteo_batch.outputs import private_dir

    key = hashlib.sha256("\n".join(f"{it.key}|{it.sop_instance_uid}" for it in items).encode() + str(img_size).encode())
    path = private_dir(cache_dir) / f"decoded-{key.hexdigest()[:16]}.npz"
    if path.is_file():
        with np.load(path) as z:
            return z["x"], z["ok"].tolist()
    x, ok = _decode_all(items, img_size, workers)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, x=x, ok=np.array(ok, dtype=np.int64))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return x, ok


def _augment(x, rng: np.random.Generator):
    """Small exposure and position jitter: what differs between two exposures of one woman."""
    import torch

    n = x.shape[0]
    gain = torch.from_numpy(rng.uniform(0.9, 1.1, (n, 1, 1, 1)).astype(np.float32))
    bias = torch.from_numpy(rng.uniform(-0.05, 0.05, (n, 1, 1, 1)).astype(np.float32))
    dy, dx = (int(v) for v in rng.integers(-4, 5, 2))
    return torch.roll(x * gain + bias, shifts=(dy, dx), dims=(2, 3)).clamp(0, 1)


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


def train(
    store: Store,
    out: str | Path,
    cfg: TrainConfig,
    *,
    truth_csv: str | Path | None = None,
    progress=None,
) -> TrainResult:
    """Train on the eligible, DXA-paired images in ``store``; write the model directory."""
    import torch
    from peft import LoraConfig, get_peft_model

    bad_sites = set(cfg.label_sites) - set(SITES)
    if bad_sites or not cfg.label_sites:
        raise TrainingDataError(f"label sites {sorted(bad_sites)}: use t_lumbar_spine, t_femoral_neck, t_total_hip")
    if cfg.strategy not in STRATEGIES:
        raise TrainingDataError(f"strategy {cfg.strategy!r}: use one of {', '.join(STRATEGIES)}")
    if cfg.weights:  # a damaged or swapped foundation is refused before any image is decoded
        from osteo_batch.models.pretrain import read_manifest

        read_manifest(cfg.weights)
    t0 = time.monotonic()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    spec = get_backbone(cfg.backbone)

    pairs = store.rows("training_pairs", {"window_days": cfg.pair_window_days})
    unpaired = {r["reason"]: r["n"] for r in store.rows("training_unpaired", {"window_days": cfg.pair_window_days})}
    for p in pairs:  # the label: the WHO class of the lowest T-score over the label sites
        p["t_min"] = min_t(p, tuple(cfg.label_sites))
    pairs = [p for p in pairs if p["t_min"] is not None]
    if len(pairs) < 20:
        raise TrainingDataError(
            f"only {len(pairs)} eligible images have a DXA within {cfg.pair_window_days} days; "
            "at least 20 are needed (check the DXA table's patient_id values and dates)"
        )
    labels = [who_class(p["t_min"]) for p in pairs]
    patients = [p["patient_id"] for p in pairs]
    val_patients = split_by_patient(patients, labels, cfg.val_fraction, cfg.seed)
    cal_patients: set[str] = set()
    if cfg.calibration:
        if cfg.calibration not in CALIBRATIONS:
            raise TrainingDataError(f"calibration {cfg.calibration!r}: use one of {', '.join(CALIBRATIONS)}")
        held = [(p, y) for p, y in zip(patients, labels) if p in val_patients]
        cal_patients = split_by_patient([p for p, _ in held], [y for _, y in held], cfg.calibration_share, cfg.seed + 1)
    items = [Item(p["path"], p["sop_instance_uid"], p["patient_id"]) for p in pairs]

    x_all, ok = decode_cached(items, spec.img_size, cfg.workers, cfg.cache_dir)
    y_all = np.array([labels[i] for i in ok])
    pid_all = np.array([patients[i] for i in ok])
    is_held = np.array([p in val_patients for p in pid_all])
    is_cal = np.array([p in cal_patients for p in pid_all])
    is_val = is_held & ~is_cal  # the split every reported figure comes from
    x_tr, y_tr = x_all[~is_held], y_all[~is_held]
    x_va, y_va, pid_va = x_all[is_val], y_all[is_val], pid_all[is_val]
    x_ca, y_ca = x_all[is_cal], y_all[is_cal]
    if len(set(y_va.tolist())) < 2 or (y_va == 2).sum() == 0:
        raise TrainingDataError("the validation split has no osteoporosis cases; add data or change --seed")
    if cfg.calibration and ((y_ca == 2).sum() < 5 or (y_ca != 2).sum() < 5):
        raise TrainingDataError("the calibration split needs 5 or more women with and without osteoporosis; "
                                "add pairs or raise calibration_share")

    mcfg = ModelConfig.for_backbone(spec.name, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, weights=cfg.weights)
    module = build_module(mcfg)
    targets = lora_targets(spec, module)
    mcfg.lora["target_modules"] = targets
    if cfg.weights:
        weights_info = load_backbone_weights(module, cfg.weights)
        foundation = weights_info.get("foundation")
        weights_note = (f"pretrained backbone from local file {weights_info['file']} "
                        f"(sha256 {weights_info['sha256'][:16]}...)")
        if foundation:
            weights_note = f"foundation {foundation['name']}: {weights_note}"
    else:
        weights_info = {"file": None, "sha256": None}
        foundation = None
        weights_note = "random initialisation: a demonstration model, not a clinical one"
    # a model is fit for patients only if it started from a foundation that says it is (a real checkpoint
    # with no manifest is a site's own responsibility); random weights and phantom foundations never are
    for_patients = bool(cfg.weights) and (foundation is None or foundation.get("clinical_use") is not False)

    if cfg.strategy == "lora":
        lora = LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
            # pretrained weights keep their patch embedding; random ones have no features to adapt
            target_modules=targets, modules_to_save=list(spec.lora_modules_to_save) if not cfg.weights else ["head"],
        )
        peft_model = get_peft_model(module, lora)
    else:  # linear probe: only the head learns; full: everything does
        peft_model = module
        mcfg.lora = {}
        for name, prm in module.named_parameters():
            prm.requires_grad_(cfg.strategy == "full" or name.startswith("head."))
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    n_total = sum(p.numel() for p in peft_model.parameters())
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    counts = np.bincount(y_tr, minlength=3).astype(np.float32)
    class_w = torch.tensor(counts.sum() / np.maximum(counts, 1) / 3.0)
    loss_fn = torch.nn.CrossEntropyLoss(weight=class_w)
    steps = cfg.epochs * int(np.ceil(len(x_tr) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(1, steps), pct_start=0.15)

    history: list[float] = []
    epochs_run = 0
    ckpt = _Checkpoint(Path(out), _run_key(cfg, pairs, labels))
    start = ckpt.restore(peft_model, opt, sched, rng, history)
    if start:
        log.info("resuming from the checkpoint after epoch %d", start)
    for epoch in range(start, cfg.epochs):
        peft_model.train()
        order = rng.permutation(len(x_tr))
        total = 0.0
        for i in range(0, len(order), cfg.batch_size):
            b = order[i : i + cfg.batch_size]
            xb = _augment(torch.from_numpy(x_tr[b]), rng)
            loss = loss_fn(peft_model(normalise(xb, mcfg)), torch.from_numpy(y_tr[b]).long())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(b)
        epochs_run += 1
        history.append(round(total / max(1, len(x_tr)), 4))
        ckpt.save(epoch + 1, peft_model, opt, sched, rng, history)
        if progress:
            progress(epoch + 1, cfg.epochs, history[-1])
        if cfg.time_budget_s and time.monotonic() - t0 > cfg.time_budget_s:
            log.info("time budget reached after %d epochs", epochs_run)
            break

    # evaluate the adapter model, then merge and prove the merge changes nothing
    p_unmerged = predict(peft_model, x_va, mcfg)
    merged = peft_model.merge_and_unload() if cfg.strategy == "lora" else peft_model
    merged.requires_grad_(True)  # Grad-CAM needs gradients through every layer
    p_va = predict(merged, x_va, mcfg)
    merge_diff = float(np.abs(p_va - p_unmerged).max()) if len(p_va) else 0.0

    y_bin = (y_va == 2).astype(int)
    calibration = None
    if cfg.calibration:
        from osteo_batch.models import bands as bandlib
        from osteo_batch.models import calibrate

        p_ca_raw = predict(merged, x_ca, mcfg)[:, 2]
        y_ca_bin = (y_ca == 2).astype(int)
        calibration = calibrate.fit(cfg.calibration, p_ca_raw, y_ca_bin)
        p_ca = calibrate.apply(calibration, p_ca_raw)
        p_va[:, 2] = calibrate.apply(calibration, p_va[:, 2])
        # edges on the displayed grid, chosen on the calibration split: sensitivity still meets its target there
        thr = bandlib.edge_below(metrics.threshold_for_sensitivity(y_ca_bin, np.array([bandlib.display(v) for v in p_ca]),
                                                                   cfg.target_sensitivity))
        very_high = max(thr, bandlib.edge_below(cfg.very_high_probability))
    score = p_va[:, 2]
    val_auc = metrics.auc(y_bin, score)
    ci = metrics.bootstrap_auc_ci(y_bin, score, pid_va, seed=cfg.seed)
    if not cfg.calibration:
        thr = metrics.threshold_for_sensitivity(y_bin, score, cfg.target_sensitivity)
        very_high = max(thr, metrics.threshold_for_specificity(y_bin, score, cfg.very_high_specificity))
    op = metrics.at_threshold(y_bin, score, thr)
    macro = metrics.macro_auc(y_va, p_va)
    macro_ci = metrics.bootstrap_ci(lambda i: metrics.macro_auc(y_va[i], p_va[i]), len(y_va), pid_va, seed=cfg.seed)
    accuracy = float((p_va.argmax(1) == y_va).mean())
    mcfg.threshold = float(thr)  # as chosen (on the display grid when calibrated): the image that set it stays flagged
    mcfg.bands = {"high": mcfg.threshold, "very_high": float(very_high)}
    mcfg.calibration = calibration

    ceiling_val = None
    if truth_csv:
        ceiling_val = _ceiling_on(pid_va, y_bin, truth_csv)

    from osteo_batch.models import evaluate

    meta_va = [pairs[i] for i, v in zip(ok, is_val) if v]
    calib = evaluate.calibration(y_bin, score)
    subgroups = evaluate.subgroup_auc(y_bin, score, {
        "age_band": [evaluate.age_band(m["age"]) for m in meta_va],
        "view": [m["view"] for m in meta_va],
        "modality": [m["modality"] for m in meta_va],
        "manufacturer": [m["manufacturer"] for m in meta_va],
    })
    bone = None
    if cfg.masks:
        have = [j for j, m in enumerate(meta_va) if (Path(cfg.masks) / f"{m['sop_instance_uid']}.png").is_file()]
        if have:
            masks = np.stack([evaluate.load_mask(Path(cfg.masks) / f"{meta_va[j]['sop_instance_uid']}.png", spec.img_size)
                              for j in have])
            markers = None
            if cfg.marker_masks:
                markers = np.stack([evaluate.load_mask(Path(cfg.marker_masks) / f"{meta_va[j]['sop_instance_uid']}.png",
                                                       spec.img_size, missing_ok=True) for j in have])
            bone = evaluate.bone_metrics(merged, mcfg, x_va[have], y_bin[have], masks, seed=cfg.seed, markers=markers)
            bone["images"] = len(have)

    out = Path(out)
    staging = staging_dir(out)
    model_id = save_model_dir(merged, mcfg, staging)
    manifest = hashlib.sha256("\n".join(sorted(f"{p['sop_instance_uid']}:{l}" for p, l in zip(pairs, labels))).encode()).hexdigest()
    card = {
        "model_id": model_id,
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "intended_use": "Screening aid that ranks women for DXA referral. Not a diagnosis; DXA confirms; never use it to rule osteoporosis out.",
        "backbone": spec.name,
        "backbone_note": spec.note,
        "weights": weights_note,
        "weights_sha256": weights_info["sha256"],
        "random_init": cfg.weights is None,
        "foundation": foundation,
        "for_patients": for_patients,
        "strategy": cfg.strategy,
        "trainable_parameters": int(n_trainable),
        "total_parameters": int(n_total),
        "train": asdict(cfg),
        "data": {
            "paired_images": len(pairs),
            "decoded_images": len(ok),
            "unpaired_images": unpaired,
            "train_images": int(len(x_tr)),
            "val_images": int(len(x_va)),
            "val_patients": int(len(set(pid_va.tolist()))),
            "calibration_images": int(len(x_ca)),
            "calibration_patients": int(len(cal_patients & set(pid_all.tolist()))),
            "reported_on": "test" if cfg.calibration else "validation",
            "val_osteoporosis": int(y_bin.sum()),
            "label_counts": {LABELS[k]: int((y_all == k).sum()) for k in range(3)},
            "manifest_sha256": manifest,
        },
        "validation": {
            "auc": round(val_auc, 4),
            "auc_ci95": [round(ci[0], 4), round(ci[1], 4)],
            "macro_auc": round(macro, 4),
            "macro_auc_ci95": [round(macro_ci[0], 4), round(macro_ci[1], 4)],
            "accuracy_3class": round(accuracy, 4),
            "accuracy_at_threshold": round(float(((score >= thr) == (y_bin == 1)).mean()), 4),
            "threshold": mcfg.threshold,
            "target_sensitivity": cfg.target_sensitivity,
            "sensitivity": round(op.sensitivity, 4),
            "specificity": round(op.specificity, 4),
            "ppv": round(op.ppv, 4),
            "very_high_from": mcfg.bands["very_high"],
            "roc": roc_points(y_bin, score),
        },
        "ceiling": {
            "auc_validation": None if ceiling_val is None else round(ceiling_val, 4),
            "note": "AUC of the true latent bone density on the same validation patients: no image model can beat it in expectation (synthetic cohorts only)",
        },
        "calibration": {"ece": round(calib.ece, 4), "bins": calib.bins, "method": cfg.calibration,
                        "fitted_on": "calibration split" if cfg.calibration else None},
        "bands": _band_legend(y_bin, score, mcfg.bands),
        "subgroups": subgroups,
        "bone": bone,
        "code_version": _code_version(),
        "merge_max_abs_diff": merge_diff,
        "epochs_run": epochs_run,
        "loss_history": history,
        "train_seconds": round(time.monotonic() - t0, 1),
    }
    write_card(staging, card, mcfg)
    publish_model_dir(staging, out)
    ckpt.clear()
    return TrainResult(out, model_id, card)


def _run_key(cfg: TrainConfig, pairs: list[dict], labels: list[int]) -> str:
    """What a checkpoint must match to be resumed: the settings and the exact data."""
    d = asdict(cfg)
    for k in ("workers", "time_budget_s", "cache_dir"):
        d.pop(k, None)
    data = "\n".join(f"{p['sop_instance_uid']}:{y}" for p, y in zip(pairs, labels))
    return hashlib.sha256((json.dumps(d, sort_keys=True) + data).encode()).hexdigest()[:16]


class _Checkpoint:
    """Model, optimiser, scheduler and RNG state after each epoch, in safetensors + JSON (no pickle).

    Written atomically beside the model folder; a run with the same settings and
    data resumes from it, anything else ignores it.
    """

    def __init__(self, out: Path, key: str):
        self.dir = out.with_name(f".{out.name}.checkpoint")
        self.key = key

    def save(self, epoch, model, opt, sched, rng, history) -> None:
        import os
        import shutil

        from safetensors.torch import save_file

        from osteo_batch.outputs import private_dir, write_private

        tmp = private_dir(self.dir.with_name(self.dir.name + ".tmp"))
        tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
        osd = opt.state_dict()
        for idx, st in osd["state"].items():
            for k, v in st.items():
                tensors[f"opt.{idx}.{k}"] = v.detach().contiguous() if hasattr(v, "detach") else _scalar_tensor(v)
        save_file(tensors, str(tmp / "state.safetensors"))
        os.chmod(tmp / "state.safetensors", 0o600)
        meta = {"key": self.key, "epoch": epoch, "history": history, "param_groups": osd["param_groups"],
                "opt_keys": {str(i): list(st) for i, st in osd["state"].items()},
                "sched": sched.state_dict(), "rng": rng.bit_generator.state}
        write_private(tmp / "meta.json", json.dumps(meta, default=str))
        shutil.rmtree(self.dir, ignore_errors=True)
        os.replace(tmp, self.dir)

    def restore(self, model, opt, sched, rng, history) -> int:
        """Load a matching checkpoint into the given objects; returns the epoch to start at."""
        from safetensors.torch import load_file

        meta_path = self.dir / "meta.json"
        if not meta_path.is_file():
            return 0
        meta = json.loads(meta_path.read_text())
        if meta.get("key") != self.key:
            return 0
        tensors = load_file(str(self.dir / "state.safetensors"))
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        state = {int(i): {k: tensors[f"opt.{i}.{k}"] for k in keys} for i, keys in meta["opt_keys"].items()}
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        sched.load_state_dict(meta["sched"])
        rng.bit_generator.state = meta["rng"]
        history[:] = meta["history"]
        return int(meta["epoch"])

    def clear(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


def _scalar_tensor(v):
    import torch

    return torch.tensor(v)


STRATEGIES = ("lora", "linear", "full")
CALIBRATIONS = ("platt", "isotonic")


def _band_legend(y_bin, score, bands):
    from osteo_batch.models import bands as bandlib

    return [{**e, "text": bandlib.describe(e)} for e in bandlib.legend(y_bin, score, bands)]


def _code_version() -> str:
    """Package version plus the git commit when run from a checkout."""
    import subprocess

    from osteo_batch import __version__

    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def _ceiling_on(pids: np.ndarray, y_bin: np.ndarray, truth_csv: str | Path) -> float | None:
    import csv

    with open(truth_csv, newline="") as f:
        z = {r["patient_id"]: float(r["latent_density"]) for r in csv.DictReader(f)}
    if not all(p in z for p in pids):
        return None
    return metrics.auc(y_bin, -np.array([z[p] for p in pids]))


def write_card(out: Path, card: dict, mcfg: ModelConfig) -> None:
    from osteo_batch.outputs import write_private
    from osteo_batch.render import render

    import base64

    from osteo_batch.models import plots

    card = _json_safe(card)
    write_private(out / "card.json", json.dumps(card, indent=2, default=str, allow_nan=False))
    figures = {}
    if card.get("validation", {}).get("roc"):
        figures["roc"] = plots.roc_png({card.get("strategy", "model"): card["validation"]["roc"]})
    if card.get("calibration"):
        figures["reliability"] = plots.reliability_png(card["calibration"]["bins"])
    uris = {k: "data:image/png;base64," + base64.b64encode(v).decode() for k, v in figures.items()}
    write_private(out / "card.html", render("card.html.j2", card=card, config=asdict(mcfg), figures=uris))


def _json_safe(x):
    """NaN (an AUC of a subgroup with one class) becomes null: card.json stays valid JSON."""
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x
