"""The model lab: train a grid of backbone x strategy models on one split, compare them like the paper.

Why one module: a program that owns CXR-DXA pairs should be able to rerun the
SNUH comparison on its own data and pick a model it can trust. Every model in a
grid sees the same patients in the same split (same seed), decoded once and
cached, so the rows of the report differ only by backbone and strategy.

The grid is a TOML file::

    [[model]]
    backbone = "dinov2_small"
    strategy = "lora"          # lora | linear | full
    weights = "/models/dinov2-small"   # local, never downloaded
    epochs = 10

``flows/study.py`` runs one Prefect task per model over these functions.
"""

from __future__ import annotations

import json
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from osteo_batch.errors import UserError
from osteo_batch.models.train import STRATEGIES, TrainConfig, TrainingDataError

#: Learning rates that worked on the synthetic cohort from random weights.
DEFAULT_LR = {"lora": 2e-3, "linear": 5e-3, "full": 3e-4}


@dataclass(frozen=True)
class GridEntry:
    backbone: str
    strategy: str
    weights: str | None = None
    epochs: int = 10
    lr: float | None = None

    @property
    def init(self) -> str:
        """"foundation" (pretrained weights given) or "random"."""
        return "foundation" if self.weights else "random"

    @property
    def name(self) -> str:
        """The model folder (and its checkpoint): the two inits of one backbone never share one."""
        return f"{self.backbone}-{self.strategy}-{self.init}"


class GridError(UserError, ValueError):
    """A study grid file that cannot be used; the message names the entry and the fix."""

    code = "bad_grid"


def load_grid(path: str | Path) -> list[GridEntry]:
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise GridError(f"grid {p.name}: {e}") from None
    entries = []
    for i, m in enumerate(doc.get("model", [])):
        unknown = set(m) - {"backbone", "strategy", "weights", "epochs", "lr"}
        if unknown or "backbone" not in m or m.get("strategy") not in STRATEGIES:
            raise GridError(f"grid {p.name}, model {i + 1}: needs backbone and strategy ({'|'.join(STRATEGIES)}); "
                            f"unknown keys: {sorted(unknown) or 'none'}")
        entries.append(GridEntry(**m))
    if not entries:
        raise GridError(f"grid {p.name}: no [[model]] entries")
    return entries


def demo_grid(epochs: int = 6) -> list[GridEntry]:
    """The paper's grid on phantoms: each strategy from the phantom foundation and from random weights.

    Both inits get the same epochs and learning rates, so a row differs from
    its pair only by where the backbone started.
    """
    from osteo_batch.foundations import PHANTOM

    return [GridEntry("dinov2_tiny_demo", s, weights=w, epochs=epochs)
            for s in STRATEGIES for w in (str(PHANTOM), None)]


def train_entry(settings, entry: GridEntry, *, out: Path, truth_csv: Path | None, masks: Path | None,
                seed: int = 0) -> dict[str, Any]:
    """Train one grid model into ``out/models/<name>`` and return its report row."""
    from osteo_batch.models.train import train
    from osteo_batch.store import open_store

    cfg = TrainConfig(
        backbone=entry.backbone, weights=entry.weights, strategy=entry.strategy, epochs=entry.epochs,
        lr=entry.lr or DEFAULT_LR[entry.strategy], seed=seed, workers=settings.workers,
        masks=str(masks) if masks else None, cache_dir=str(out / "cache"),
        marker_masks=str(Path(masks).parent / "marker_masks") if masks else None,
    )
    t0 = time.monotonic()
    with open_store(settings, read_only=True) as st:
        res = train(st, out / "models" / entry.name, cfg, truth_csv=truth_csv, roots=settings.archive_roots(),
                    retrieval=settings.retrieval())
    c = res.card
    v, bone = c["validation"], c.get("bone") or {}
    return {
        "backbone": entry.backbone,
        "strategy": entry.strategy,
        "init": entry.init,
        "name": entry.name,
        "foundation": (c.get("foundation") or {}).get("name"),
        "model_id": res.model_id,
        "auc": v["auc"],
        "auc_ci": v["auc_ci95"],
        "macro_auc": v["macro_auc"],
        "sensitivity": v["sensitivity"],
        "specificity": v["specificity"],
        "ppv": v["ppv"],
        "threshold": v["threshold"],
        "ece": c["calibration"]["ece"],
        "delta_bone": bone.get("delta_bone"),
        "delta_nonbone": bone.get("delta_nonbone"),
        "iou_bone": bone.get("iou_bone"),
        "iou_bone_random": bone.get("iou_bone_random"),
        "marker_heat_share": bone.get("marker_heat_share"),
        "ceiling_auc": c["ceiling"]["auc_validation"],
        "trainable_parameters": c["trainable_parameters"],
        "seconds": round(time.monotonic() - t0, 1),
    }


def write_report(out: Path, rows: list[dict[str, Any]], *, grid: list[GridEntry], source: str) -> Path:
    """``out/report.json`` and ``out/report.html``: the paper's table, plus the baselines."""
    from osteo_batch.models import plots
    from osteo_batch.outputs import write_private
    from osteo_batch.render import png_data_uri, render

    def mean(key):
        vals = [r[key] for r in rows if r.get(key) is not None]
        return sum(vals) / len(vals) if vals else None

    ceilings = {r["ceiling_auc"] for r in rows if r.get("ceiling_auc") is not None}
    best = max(rows, key=lambda r: r["auc"]) if rows else None
    report = {
        "finding": finding(rows),
        "source": source,
        "ceiling_auc": ceilings.pop() if len(ceilings) == 1 else None,
        "rows": rows,
        "iou_bone_random": mean("iou_bone_random"),
        "delta_nonbone": mean("delta_nonbone"),
        "best": {"backbone": best["backbone"], "strategy": best["strategy"], "auc": best["auc"],
                 "init": best.get("init")} if best else None,
        "grid": [asdict(g) for g in grid],
    }
    write_private(out / "report.json", json.dumps(report, indent=2))
    curves = {}
    for r in rows:
        card = json.loads((out / "models" / r.get("name", f"{r['backbone']}-{r['strategy']}") / "card.json").read_text())
        curves[f"{r['strategy']} {r.get('init', '')} ({r['auc']:.3f})"] = card["validation"]["roc"]
    roc = png_data_uri(plots.roc_png(curves)) if curves else None
    write_private(out / "report.html", render("study.html.j2", report=report, roc=roc))
    return out / "report.json"


def finding(rows: list[dict[str, Any]]) -> str | None:
    """One sentence on LoRA from a foundation, from the rows themselves (None without a pair to compare)."""
    by = {(r["backbone"], r["strategy"], r.get("init")): r for r in rows}
    pairs = [(k[0], k[1], by[k], by.get((k[0], k[1], "random"))) for k in by if k[2] == "foundation"]
    pairs = [p for p in pairs if p[3] is not None]
    if not pairs:
        return None
    wins = sum(f["auc"] > r["auc"] for _, _, f, r in pairs)
    head = ("Every strategy from the foundation beat its random-weight twin" if wins == len(pairs)
            else f"The foundation beat random weights in {wins} of {len(pairs)} strategies")
    text = head + " on the same held-out women"
    lora = [p for p in pairs if p[1] == "lora"]
    if lora:
        _, _, f, r = lora[0]
        text += (f"; LoRA from the foundation reached AUC {f['auc']:.3f} against {r['auc']:.3f} from random weights, "
                 f"training {f['trainable_parameters']:,} parameters")
        full = by.get((f["backbone"], "full", "foundation"))
        if full:
            text += f" where a full fine-tune trains {full['trainable_parameters']:,} and reached {full['auc']:.3f}"
    best = max(rows, key=lambda r: r["auc"])
    return text + f". Best: {best['strategy']} from {best.get('init', 'random')} weights, AUC {best['auc']:.3f}."


def demo_spec():
    """The study's synthetic cohort: a few thousand small images, seeded."""
    from osteo_batch.synth.cohort import CohortSpec

    return CohortSpec(n_women=1500, n_men=15, n_young=15, n_lateral=10, n_followups=120, min_side=256,
                      max_side=320, share_j2k=0.2, share_rle=0.2, seed=20251126)


__all__ = ["GridEntry", "GridError", "TrainingDataError", "demo_grid", "load_grid", "train_entry", "write_report"]
