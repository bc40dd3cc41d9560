"""The synthetic cohort on disk: a PACS-like archive of phantom radiographs, their masks, DXA and truth tables.

Why: a demo and a test suite need an archive that behaves like a hospital's
(12-bit CR and DX, 1500-3000 px a side, MONOCHROME1, JPEG 2000 and RLE,
lateral views, men, young patients, junk) without a single real patient.
:func:`write_cohort` plans it (:mod:`osteo_batch.synth.plan`), draws each image
(:mod:`osteo_batch.synth.phantom`) in parallel processes, and writes the DICOM
files, the bone and marker masks, ``dxa.csv``, ``truth.csv`` (each woman's
latent density) and ``cohort.json`` (the spec, to find it again).
"""

from __future__ import annotations

import csv
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from osteo_batch.synth.density import SITE_OFFSETS, ceiling_auc
from osteo_batch.synth.phantom import MARKER, draw_phantom
from osteo_batch.synth.plan import CohortSpec, ImagePlan, plan_cohort

#: What callers need to write a cohort and read it back (the spec and plans are :mod:`~osteo_batch.synth.plan`'s).
__all__ = ["Cohort", "CohortSpec", "ImagePlan", "build_dataset", "existing_cohort", "write_cohort"]


@dataclass
class Cohort:
    """The generated cohort, as written to disk."""

    archive: Path
    dxa_csv: Path
    truth_csv: Path
    masks: Path
    n_files: int
    n_images: int
    ceiling_auc: float
    plans: list[ImagePlan] = field(default_factory=list)
    marker_masks: Path | None = None  # <SOP UID>.png: where the lead side marker lies


def build_dataset(plan: ImagePlan, pixels: np.ndarray, window: tuple[float, float] | None = None):
    """A pydicom Dataset for ``plan`` holding 12-bit ``pixels`` (uint16).

    ``window`` is the VOI window (lower, upper) in stored pixel values; without
    one it is taken from the pixels' 1st and 99th percentiles.
    """
    from pydicom.dataset import FileMetaDataset, Dataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        PYDICOM_IMPLEMENTATION_UID,
        ComputedRadiographyImageStorage,
        DigitalXRayImageStorageForPresentation,
    )

    sop_class = ComputedRadiographyImageStorage if plan.modality == "CR" else DigitalXRayImageStorageForPresentation
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = plan.sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = plan.sop_instance_uid
    ds.StudyInstanceUID = plan.study_instance_uid
    ds.SeriesInstanceUID = plan.series_instance_uid
    ds.PatientID = plan.patient_id
    ds.PatientName = plan.patient_name
    ds.PatientSex = plan.sex
    ds.PatientBirthDate = plan.birth_date
    ds.StudyDate = plan.study_date
    ds.SeriesDate = plan.study_date
    ds.StudyTime = "093000"
    ds.AccessionNumber = plan.accession
    ds.Modality = plan.modality
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = plan.view
    ds.InstitutionName = plan.institution
    ds.Manufacturer = "osteo-batch phantom"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION" if plan.modality == "DX" else None
    if ds.PresentationIntentType is None:
        del ds.PresentationIntentType
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = plan.photometric
    ds.Rows, ds.Columns = plan.rows, plan.cols
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [0.15, 0.15] if plan.modality == "DX" else [0.2, 0.2]
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    lo, hi = window if window is not None else np.percentile(pixels[::8, ::8], [1, 99])
    ds.WindowCenter = int((lo + hi) / 2)
    ds.WindowWidth = max(1, int(hi - lo))
    ds.PixelData = pixels.astype("<u2").tobytes()
    return ds


def _write_one(args: tuple[ImagePlan, str, str, str, str]) -> str:
    plan, archive, masks, markers, j2k = args
    from PIL import Image
    from pydicom.uid import JPEG2000, JPEG2000Lossless, RLELossless

    img, mask, (wlo, whi) = draw_phantom(plan)
    p = np.round(img * 4095).astype(np.uint16)
    window = (wlo * 4095, whi * 4095)
    if plan.photometric == "MONOCHROME1":
        p = (4095 - p).astype(np.uint16)
        window = (4095 - window[1], 4095 - window[0])
    ds = build_dataset(plan, p, window)
    if plan.storage == "rle":
        ds.compress(RLELossless, p, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    elif plan.storage == "j2k" and j2k == "lossless":
        ds.compress(JPEG2000Lossless, p, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    elif plan.storage == "j2k":
        ds.compress(JPEG2000, p, j2k_cr=[15], encoding_plugin="pylibjpeg", generate_instance_uid=False)
    out = Path(archive) / plan.filename
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    bone = np.where(mask == MARKER, 0, mask).astype(np.uint8)  # bone_masks/ hold bone only
    Image.fromarray(bone).save(Path(masks) / f"{plan.sop_instance_uid}.png", optimize=True)
    marker = ((mask == MARKER) * 255).astype(np.uint8)
    Image.fromarray(marker).save(Path(markers) / f"{plan.sop_instance_uid}.png", optimize=True)
    return plan.sop_instance_uid


def _write_junk(archive: Path, plans: list[ImagePlan], n: int) -> int:
    """Files a real archive holds that are not scoreable images."""
    junk = archive / "misc"
    junk.mkdir(parents=True, exist_ok=True)
    written = 0
    (junk / "README.txt").write_text("Export from PACS. Do not edit.\n")
    written += 1
    if n >= 2 and plans:
        # a truncated copy of a real file: transfer cut off mid-pixel-data
        src = Path(archive) / plans[-1].filename
        data = src.read_bytes()
        (junk / "IM_partial").write_bytes(data[: max(1024, len(data) // 3)])
        written += 1
    if n >= 3:
        (junk / "IM_zero").write_bytes(b"")
        written += 1
    return written


def write_cohort(root: str | os.PathLike, spec: CohortSpec | None = None, *, workers: int | None = None) -> Cohort:
    """Write the archive, masks, DXA table and truth table under ``root``.

    Layout: ``root/archive`` (the DICOM files), ``root/bone_masks/<SOP UID>.png``
    and ``root/marker_masks/<SOP UID>.png`` (beside, never inside, the archive),
    ``root/dxa.csv`` and ``root/truth.csv``.
    """
    spec = spec or CohortSpec()
    root = Path(root)
    archive, masks, markers = root / "archive", root / "bone_masks", root / "marker_masks"
    for d in (archive, masks, markers):
        d.mkdir(parents=True, exist_ok=True)
    plans, dxa_rows, truth = plan_cohort(spec)
    jobs = [(p, str(archive), str(masks), str(markers), spec.j2k) for p in plans]
    workers = workers or min(4, os.cpu_count() or 1)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_write_one, jobs, chunksize=2))
    else:
        for j in jobs:
            _write_one(j)
    n_junk = _write_junk(archive, plans, spec.n_unreadable)

    dxa_csv = root / "dxa.csv"
    cols = ["patient_id", "exam_date", *SITE_OFFSETS]
    with dxa_csv.open("w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=cols)
        wr.writeheader()
        for r in dxa_rows:
            wr.writerow({k: ("" if r.get(k) is None else r[k]) for k in cols})
    truth_csv = root / "truth.csv"
    with truth_csv.open("w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=["patient_id", "sex", "latent_density"])
        wr.writeheader()
        wr.writerows(truth)
    ceiling = ceiling_auc()
    (root / "cohort.json").write_text(
        json.dumps({"spec": asdict(spec), "ceiling_auc": ceiling, "n_images": len(plans), "n_files": len(plans) + n_junk}, indent=2)
    )
    return Cohort(archive, dxa_csv, truth_csv, masks, len(plans) + n_junk, len(plans), ceiling, plans, markers)


def existing_cohort(root: str | os.PathLike, spec: CohortSpec) -> Cohort | None:
    """The cohort :func:`write_cohort` left under ``root`` for exactly ``spec``, or None.

    The whole spec must match, not only the seed: the same seed with other
    counts, sizes or dates draws other files. Plans are re-derived from the
    spec (the same seed draws the same plans), counts come from ``cohort.json``.
    """
    root = Path(root)
    try:
        recorded = json.loads((root / "cohort.json").read_text())
    except (OSError, ValueError):
        return None
    if recorded.get("spec") != json.loads(json.dumps(asdict(spec))):  # as written: tuples read back as lists
        return None
    return Cohort(root / "archive", root / "dxa.csv", root / "truth.csv", root / "bone_masks", recorded["n_files"],
                  recorded["n_images"], recorded["ceiling_auc"], plan_cohort(spec)[0], root / "marker_masks")
