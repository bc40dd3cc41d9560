"""The worklist: women to refer for DXA, highest risk first, one self-contained page per run.

Why per patient, not per image: a coordinator phones a woman once. Each woman
appears once, from her latest eligible scored study. Women with a DXA in the
``dxa_lookback_days`` before that study are left out (they are already known)
and counted in the summary, as is everything else the run decided, so the
page accounts for the whole archive without naming anyone it does not list.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osteo_batch.models.model import risk_band
from osteo_batch.outputs import write_private
from osteo_batch.reasons import DESCRIPTIONS
from osteo_batch.report import data_uri_png, render
from osteo_batch.sweep import STATUSES, by_status


@dataclass
class WorklistResult:
    path: Path
    listed: int
    excluded: dict[str, int] = field(default_factory=dict)
    below_threshold: int = 0


def display_name(dicom_name: str | None) -> str:
    """``Family^Given=漢字^名=한글^이름`` as ``Family, Given (漢字名, 한글이름)``.

    The first (alphabetic) group is shown as family, given; the ideographic and
    phonetic groups, when present, follow in brackets so a coordinator sees the
    name as the patient writes it.
    """
    if not dicom_name:
        return ""
    groups = dicom_name.split("=")
    parts = [p for p in groups[0].split("^") if p]
    first = parts[0] if len(parts) == 1 else (f"{parts[0]}, {' '.join(parts[1:])}" if parts else "")
    others = ["".join(p for p in g.split("^") if p) for g in groups[1:]]
    others = [o for o in others if o]
    if not first:
        return ", ".join(others)
    return f"{first} ({', '.join(others)})" if others else first


def build_rows(candidates: list[dict], threshold: float, bands: dict[str, float], heatmap_dir: Path):
    rows, excluded, below = [], {}, 0
    for c in candidates:
        if c["exclusion"]:
            if c["score"] >= threshold:
                excluded[c["exclusion"]] = excluded.get(c["exclusion"], 0) + 1
            continue
        if c["score"] < threshold:
            below += 1
            continue
        hm = heatmap_dir / c["heatmap"] if c.get("heatmap") else None
        rows.append(
            {
                "patient_id": c["patient_id"],
                "name": display_name(c["patient_name"]),
                "age": None if c["age"] is None else int(c["age"]),
                "study_date": c["study_date"].isoformat() if c["study_date"] else "",
                "accession": c["accession_number"] or "",
                "site": c["institution_name"] or "",
                "view": c["view"] or "",
                "modality": c["modality"] or "",
                "score": c["score"],
                "band": risk_band(c["score"], bands),
                "heatmap": data_uri_png(hm) if hm and hm.is_file() else None,
                "last_dxa": c["last_dxa_date"].isoformat() if c.get("last_dxa_date") else None,
                "last_dxa_t": c.get("last_dxa_t_min"),
            }
        )
    return rows, excluded, below


def write_worklist(
    store,
    *,
    workdir: str | os.PathLike,
    run: dict[str, Any],
    model_id: str,
    threshold: float,
    bands: dict[str, float],
    dxa_lookback_days: int = 730,
    model_card: dict | None = None,
    name_suffix: str = "",
    record: bool = True,
) -> WorklistResult:
    """Render ``worklists/worklist-<run_id><suffix>.html`` (0600); record it in a writable store."""
    workdir = Path(workdir)
    candidates = store.rows("worklist", {"model_id": model_id, "dxa_lookback_days": dxa_lookback_days})
    rows, excluded, below = build_rows(candidates, threshold, bands, workdir / "heatmaps")
    counts = store.rows("status_counts")
    html = render(
        "worklist.html.j2",
        rows=rows,
        run=run,
        model_id=model_id,
        threshold=threshold,
        bands=bands,
        excluded=excluded,
        below=below,
        counts=counts,
        total_files=sum(c["n"] for c in counts),
        by_status={**dict.fromkeys(STATUSES, 0), **by_status(counts)},
        reasons=DESCRIPTIONS,
        dxa_lookback_days=dxa_lookback_days,
        card=model_card or {},
        generated=dt.datetime.now().isoformat(timespec="seconds"),
    )
    path = write_private(workdir / "worklists" / f"worklist-{run['run_id']}{name_suffix}.html", html)
    if record:
        store.run(
            "worklists_insert",
            {"run_id": run["run_id"], "file": path.name, "model_id": model_id, "threshold": threshold, "n": len(rows)},
        )
    return WorklistResult(path, len(rows), excluded, below)

