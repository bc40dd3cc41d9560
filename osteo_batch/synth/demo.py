"""The demo's model: a site's historical CXR-DXA pairs, fine-tuned from the phantom foundation.

Why a history of its own: a site trains on the radiographs it already paired
with DXA, not on tonight's archive, and it needs enough of them to split three
ways by patient: training, calibration (probabilities, threshold and bands),
and a held-out test split of several hundred women that every reported figure
comes from. The history is written beside the archive at the model's
resolution (twice its input size), so it is cheap to draw and to decode.

The model starts from ``osteo_batch.foundations.PHANTOM`` with LoRA, loaded
through ``--weights`` exactly as a site's DINOv2 checkpoint would be.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

#: The history cohort's seed (distinct from the archive's, the study's, the tests' and pretraining's).
HISTORY_SEED = 20251127


def history_spec(seed: int = HISTORY_SEED):
    """Women 50+ with a DXA after their radiograph, at the model's resolution, dated before tonight."""
    from osteo_batch.models.backbones import get_backbone
    from osteo_batch.synth.plan import CohortSpec

    side = 2 * get_backbone("dinov2_tiny_demo").img_size
    return CohortSpec(n_women=1250, n_men=10, n_young=10, n_lateral=10, n_followups=0, n_unreadable=0, seed=seed,
                      min_side=side, max_side=int(side * 1.15), share_j2k=0.2, share_rle=0.2,
                      dxa_fraction=0.95, recent_dxa_fraction=0.0, reference_date="2026-05-01",
                      patient_prefix="HIS")


@dataclass(frozen=True)
class DemoTraining:
    epochs: int = 8
    workers: int = 2
    seed: int = 0
    lr: float = 3e-3
    val_fraction: float = 0.55  # held out: calibration + test
    calibration_share: float = 0.4


def ensure_history(root: Path, spec=None) -> Any:
    """Write the history cohort under ``root`` unless the same one is there; returns it."""
    from osteo_batch.synth import cohort as synth

    spec = spec or history_spec()
    return synth.existing_cohort(root, spec) or synth.write_cohort(root, spec)


def train_demo_model(history: Path, out: Path, opts: DemoTraining = DemoTraining(), *,
                     progress: Callable[[int, int, float], None] | None = None):
    """Sweep the history into its own store, then LoRA from the phantom foundation; returns the TrainResult."""
    from osteo_batch.foundations import PHANTOM
    from osteo_batch.models.train import TrainConfig, train
    from osteo_batch.run.nightly import index_archive
    from osteo_batch.settings import load_settings
    from osteo_batch.store import open_store

    s = load_settings(None, workdir=history / "work", archive=history / "archive",
                      dxa_csv=history / "dxa.csv", workers=opts.workers)
    index_archive(s, load_dxa=True)
    cfg = TrainConfig(
        backbone="dinov2_tiny_demo", weights=str(PHANTOM), strategy="lora", epochs=opts.epochs, lr=opts.lr,
        seed=opts.seed, workers=opts.workers, masks=str(history / "bone_masks"),
        marker_masks=str(history / "marker_masks"), cache_dir=str(history / "work" / "cache"),
        val_fraction=opts.val_fraction, calibration="platt", calibration_share=opts.calibration_share,
    )
    with open_store(s, read_only=True) as st:
        return train(st, out, cfg, truth_csv=history / "truth.csv", progress=progress, roots=s.archive_roots())


def tonight(store, model_id: str, truth_csv: Path) -> dict[str, Any]:
    """Tonight's scored women: the spread of scores and their rank correlation with the latent density.

    One score per woman (her latest eligible scored image), as the worklist
    counts women. Only a synthetic cohort knows the latent density.
    """
    from scipy.stats import spearmanr

    rows = store.rows("tonight_scores", {"model_id": model_id})
    with open(truth_csv, newline="") as f:
        z = {r["patient_id"]: float(r["latent_density"]) for r in csv.DictReader(f)}
    rows = [r for r in rows if r["patient_id"] in z]
    if len(rows) < 3:
        return {"women": len(rows)}
    s = np.array([r["score"] for r in rows])
    lat = np.array([z[r["patient_id"]] for r in rows])
    rho = spearmanr(s, -lat).statistic  # low density = high risk
    return {
        "women": len(rows),
        "score_p10": round(float(np.percentile(s, 10)), 4),
        "score_p50": round(float(np.percentile(s, 50)), 4),
        "score_p90": round(float(np.percentile(s, 90)), 4),
        "spearman_with_low_density": round(float(rho), 4),
    }
