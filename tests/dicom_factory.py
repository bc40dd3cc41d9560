"""Small DICOM files for tests, each built for one case, written with pydicom."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from osteo_batch.synth.cohort import ImagePlan, build_dataset


def plan(**kw) -> ImagePlan:
    base = ImagePlan(
        sop_instance_uid="2.25.1001", study_instance_uid="2.25.2001", series_instance_uid="2.25.3001",
        patient_id="TST001", patient_name="Test^Alice", sex="F", birth_date="19600101", study_date="20250601",
        accession="ACC1", modality="DX", view="PA", rows=64, cols=48, photometric="MONOCHROME2",
        storage="native", z=0.0, seed=1, institution="Test Hospital", filename="x",
    )
    return replace(base, **kw)


def ramp(rows: int = 64, cols: int = 48) -> np.ndarray:
    """A 12-bit test picture with structure in both directions."""
    y, x = np.mgrid[0:rows, 0:cols]
    return ((x * 37 + y * 53 + (x * y) % 97) % 4096).astype(np.uint16)


def dataset(pixels: np.ndarray | None = None, **kw):
    p = plan(**kw)
    px = ramp(p.rows, p.cols) if pixels is None else pixels
    return build_dataset(p, px)


def write(ds, path: Path, *, enforce_file_format: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=enforce_file_format)
    return path


def write_many(folder: Path, n: int, *, rows: int = 8, cols: int = 8) -> list[Path]:
    """``n`` tiny, distinct, eligible images (a different SOP Instance UID each)."""
    ds = dataset(ramp(rows, cols), rows=rows, cols=cols)
    out = []
    for i in range(n):
        uid = f"2.25.{10**12 + i}"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.PatientID = f"P{i:06d}"
        p = folder / f"d{i % 50:02d}" / f"IM{i:06d}"
        p.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(p, enforce_file_format=True)
        out.append(p)
    return out


def small_spec(**kw):
    from osteo_batch.synth.cohort import CohortSpec

    base = dict(n_women=48, n_men=3, n_young=3, n_lateral=3, n_followups=4, n_unreadable=3,
                min_side=256, max_side=384, seed=1234)
    base.update(kw)
    return CohortSpec(**base)
