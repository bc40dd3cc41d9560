"""The synthetic cohort: phantom chest radiographs with a known bone density.

Why phantoms: a demo and a test suite need an archive that behaves like a
hospital's (12-bit CR and DX, 1500-3000 px a side, MONOCHROME1, JPEG 2000 and
RLE, lateral views, men, young patients, junk) without a single real patient.

Each woman has one latent bone density ``z`` (standard normal, falling with
age). It shows in her radiograph the way density does on film: bone is less
radio-opaque, rib and vertebral cortices are thinner and the trabecular pattern
is coarser when ``z`` is low. Her DXA T-scores are drawn from the same ``z`` plus
site offsets and measurement noise. The label (WHO class of the minimum
T-score) is therefore a noisy function of ``z``, and the best AUC any image
model can reach is the AUC of ``z`` itself: :func:`ceiling_auc` computes it by
construction, and ``truth.csv`` lets training report it on its own split.

Everything is drawn from one seeded generator per image, so a cohort is the
same from run to run, and images are generated in parallel processes.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from osteo_batch.models.metrics import auc
from osteo_batch.models.labels import who_class  # noqa: F401  (re-exported for cohort users)

#: T-score model: T_site = T_MEAN + T_SLOPE * z + site offset + noise.
T_MEAN = -0.9
T_SLOPE = 1.1
SITE_OFFSETS = {"t_lumbar_spine": 0.0, "t_femoral_neck": -0.15, "t_total_hip": 0.25}
SITE_NOISE_SD = 0.45
#: How age lowers the latent density (per year over 50), as in population data.
Z_PER_YEAR = -0.03

# A UID root reserved for this project's synthetic data (2.25 = UUID-derived).
_UID_ROOT = "2.25."


@dataclass(frozen=True)
class CohortSpec:
    """What to generate. The defaults give the demo archive (about 0.8 GB)."""

    n_women: int = 210
    n_men: int = 10
    n_young: int = 10
    n_lateral: int = 8
    n_followups: int = 20  # women with a second, later study
    n_unreadable: int = 3
    seed: int = 20251125
    min_side: int = 1500
    max_side: int = 3000
    dxa_fraction: float = 0.8  # women with a DXA paired to their study
    recent_dxa_fraction: float = 0.08  # women whose DXA came before the study
    #: shares of the archive per storage kind; the rest is uncompressed
    share_j2k: float = 0.5
    share_rle: float = 0.2
    share_monochrome1: float = 0.35
    reference_date: str = "2026-11-24"  # no study is dated after it
    patient_prefix: str = "SYN"  # keeps two cohorts' patient IDs apart (the demo's history uses "HIS")


@dataclass
class ImagePlan:
    """One file to write: everything needed to draw it, decided up front."""

    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    patient_name: str
    sex: str
    birth_date: str
    study_date: str
    accession: str
    modality: str
    view: str
    rows: int
    cols: int
    photometric: str
    storage: str  # "native", "rle", "j2k"
    z: float
    seed: int
    institution: str
    filename: str


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


# --------------------------------------------------------------------- truth


def t_scores(z: float, rng: np.random.Generator) -> dict[str, float]:
    """DXA T-scores at the three sites for latent density ``z``."""
    return {
        site: round(T_MEAN + T_SLOPE * z + off + rng.normal(0.0, SITE_NOISE_SD), 1)
        for site, off in SITE_OFFSETS.items()
    }


def latent_density(age: float, rng: np.random.Generator) -> float:
    return float(rng.normal(0.0, 1.0) + Z_PER_YEAR * max(0.0, age - 50.0))


def ceiling_auc(n: int = 200_000, seed: int = 7) -> float:
    """Best achievable osteoporosis-vs-rest AUC, by construction.

    A model that recovered ``z`` exactly from the image could do no better than
    ranking by ``z``; the labels' only other source of variation is DXA
    measurement noise, which no image holds. Monte Carlo over the generative
    model with ages drawn as in the cohort.
    """
    rng = np.random.default_rng(seed)
    age = rng.uniform(50, 88, n)
    z = rng.normal(0.0, 1.0, n) + Z_PER_YEAR * (age - 50.0)
    t = np.stack(
        [T_MEAN + T_SLOPE * z + off + rng.normal(0.0, SITE_NOISE_SD, n) for off in SITE_OFFSETS.values()]
    )
    y = (np.round(t, 1).min(axis=0) <= -2.5).astype(int)
    return float(auc(y, -z))


# ------------------------------------------------------------------ planning


def _uid(*parts: object) -> str:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return _UID_ROOT + str(int.from_bytes(digest[:15], "big"))


_GIVEN = ["Mi-young", "Anna", "Sun-hee", "Maria", "Jiwoo", "Eleanor", "Hana", "Rosa", "Young-ja", "Ines",
          "Soo-jin", "Margaret", "Eun-ji", "Clara", "Min-seo", "Agnes"]
_FAMILY = ["Kim", "Lee", "Park", "Choi", "Smith", "Garcia", "Jung", "Novak", "Kang", "Rossi", "Yoon", "Muller"]
_KOREAN = ["김미영", "이순희", "박영자", "최은지", "정수진"]


def _name(rng: np.random.Generator, i: int) -> str:
    if i % 9 == 4:  # a few names in Hangul, stored as UTF-8 (ISO_IR 192)
        return _KOREAN[int(rng.integers(len(_KOREAN)))]
    return f"{_FAMILY[int(rng.integers(len(_FAMILY)))]}^{_GIVEN[int(rng.integers(len(_GIVEN)))]}"


def plan_cohort(spec: CohortSpec) -> tuple[list[ImagePlan], list[dict], list[dict]]:
    """Decide every file, DXA row and truth row from the seed alone."""
    rng = np.random.default_rng(spec.seed)
    ref = dt.date.fromisoformat(spec.reference_date)
    plans: list[ImagePlan] = []
    dxa_rows: list[dict] = []
    truth: list[dict] = []

    people: list[tuple[str, float]] = (
        [("F", rng.uniform(50, 88)) for _ in range(spec.n_women)]
        + [("M", rng.uniform(50, 85)) for _ in range(spec.n_men)]
        + [("F", rng.uniform(25, 49)) for _ in range(spec.n_young)]
    )
    n_lateral_left = spec.n_lateral
    followups_left = spec.n_followups
    for i, (sex, age) in enumerate(people):
        pid = f"{spec.patient_prefix}{i:05d}"
        z = latent_density(age, rng)
        study_day = ref - dt.timedelta(days=int(rng.integers(0, 900)))
        name = _name(rng, i)
        truth.append({"patient_id": pid, "sex": sex, "latent_density": round(z, 4)})
        studies = [study_day]
        if sex == "F" and age >= 50 and followups_left > 0 and i % 7 == 3:
            followups_left -= 1
            gap = dt.timedelta(days=int(rng.integers(200, 500)))
            if study_day + gap > ref:  # the archive is as of the reference date: nothing after it
                study_day = ref - gap - dt.timedelta(days=int(rng.integers(0, 60)))
                studies = [study_day]
            studies.append(study_day + gap)
        birth = study_day - dt.timedelta(days=int(age * 365.25))  # age is her age at the first study
        for k, sday in enumerate(studies):
            views = ["PA"] if rng.random() < 0.8 else ["AP"]
            if n_lateral_left > 0 and k == 0 and i % 11 == 5:
                n_lateral_left -= 1
                views.append("LL")
            study_uid = _uid(spec.seed, pid, k, "study")
            for v in views:
                plans.append(_plan_image(spec, rng, pid, name, sex, birth, sday, study_uid, v, z, len(plans)))
        if sex == "F" and age >= 50:
            r = rng.random()
            if r < spec.dxa_fraction:
                # DXA ordered after the radiograph: pairs for training
                when = study_day + dt.timedelta(days=int(rng.integers(1, 150)))
                dxa_rows.append(_dxa_row(pid, when, z, rng))
            elif r < spec.dxa_fraction + spec.recent_dxa_fraction:
                # a DXA shortly before the study: the worklist must leave her out
                when = study_day - dt.timedelta(days=int(rng.integers(60, 600)))
                dxa_rows.append(_dxa_row(pid, when, z, rng))
    return plans, dxa_rows, truth


def _dxa_row(pid: str, when: dt.date, z: float, rng: np.random.Generator) -> dict:
    row: dict = {"patient_id": pid, "exam_date": when.isoformat()}
    row.update(t_scores(z, rng))
    if rng.random() < 0.1:  # some sites not measured (e.g. hip replacement)
        row["t_total_hip"] = None
    return row


def _plan_image(spec, rng, pid, name, sex, birth, sday, study_uid, view, z, idx) -> ImagePlan:
    modality = "DX" if rng.random() < 0.5 else "CR"
    rows = int(rng.integers(spec.min_side, spec.max_side + 1))
    aspect = rng.uniform(0.8, 1.05)
    cols = int(np.clip(round(rows * aspect), spec.min_side, spec.max_side))
    u = rng.random()
    storage = "j2k" if u < spec.share_j2k else "rle" if u < spec.share_j2k + spec.share_rle else "native"
    if storage == "native":
        # keep uncompressed files at the small end so the demo stays on disk budget
        rows, cols = min(rows, 1800), min(cols, 1800)
    photometric = "MONOCHROME1" if rng.random() < spec.share_monochrome1 else "MONOCHROME2"
    sop = _uid(spec.seed, pid, study_uid, view, "image")
    # file names carry no patient data; folders look like a PACS export
    filename = f"{hashlib.sha1(study_uid.encode()).hexdigest()[:8]}/IM{idx:06d}"
    if idx % 5 == 0:
        filename += ".dcm"
    return ImagePlan(
        sop_instance_uid=sop,
        study_instance_uid=study_uid,
        series_instance_uid=_uid(study_uid, view, "series"),
        patient_id=pid,
        patient_name=name,
        sex=sex,
        birth_date=birth.strftime("%Y%m%d"),
        study_date=sday.strftime("%Y%m%d"),
        accession=f"A{int(hashlib.sha1(sop.encode()).hexdigest()[:8], 16) % 10**8:08d}",
        modality=modality,
        view=view,
        rows=rows,
        cols=cols,
        photometric=photometric,
        storage=storage,
        z=z,
        seed=int(rng.integers(2**31)),
        institution=["Seoul Demo Hospital", "Riverside Clinic"][idx % 2],
        filename=filename,
    )


# ------------------------------------------------------------------- drawing


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Band-limited noise: white noise blurred in Fourier space (sigma in px)."""
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    kernel = np.exp(-2.0 * (math.pi * scale) ** 2 * (fx**2 + fy**2))
    out = np.fft.irfft2(np.fft.rfft2(white) * kernel, s=shape)
    return out / (out.std() + 1e-9)


#: Labels of the mask :func:`draw_phantom` returns.
SPINE, RIBS, MARKER = 1, 2, 3


def draw_phantom(plan: ImagePlan, work: int = 384) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Return (attenuation image at full size in [0, 1], label mask, display window (lo, hi) in [0, 1]).

    The anatomy is drawn on a ``work``-pixel grid and upsampled; quantum noise is
    added at full resolution. Mask labels: :data:`SPINE`, :data:`RIBS`, the lead
    side marker :data:`MARKER`, 0 elsewhere.
    """
    rng = np.random.default_rng(plan.seed)
    h = work
    w = max(8, int(round(work * plan.cols / plan.rows)))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    y = yy / h
    x = (xx - w / 2) / h  # aspect-correct coordinates, x centred

    density = 1.0 + 0.22 * float(np.clip(plan.z, -3, 3))  # bone opacity factor
    cortex = 0.010 * (1.0 + 0.25 * float(np.clip(plan.z, -3, 3)))  # cortical thickness
    size = rng.uniform(0.85, 1.15)  # patient size
    shift_x, shift_y = rng.normal(0, 0.02), rng.normal(0, 0.02)
    tilt = rng.normal(0, 0.03)
    xr = (x - shift_x) * math.cos(tilt) - (y - 0.5 - shift_y) * math.sin(tilt)
    yr = (x - shift_x) * math.sin(tilt) + (y - 0.5 - shift_y) * math.cos(tilt) + 0.5

    lateral = plan.view in ("LL", "RL", "LATERAL")
    # soft tissue: torso ellipse, thicker for larger patients
    torso = np.clip(1.0 - (xr / (0.42 * size)) ** 2 - ((yr - 0.55) / 0.62) ** 2, 0, 1) ** 0.5
    att = 0.35 * torso * size
    if lateral:
        lung = np.clip(1.0 - (xr / 0.22) ** 2 - ((yr - 0.45) / 0.3) ** 2, 0, 1) ** 0.5
        att -= 0.18 * lung
    else:
        for side in (-1, 1):
            lung = np.clip(1.0 - ((xr - side * 0.16) / 0.13) ** 2 - ((yr - 0.45) / 0.3) ** 2, 0, 1) ** 0.5
            att -= 0.2 * lung
        heart = np.clip(1.0 - ((xr + 0.05) / 0.13) ** 2 - ((yr - 0.62) / 0.12) ** 2, 0, 1) ** 0.5
        att += 0.12 * heart

    bone = np.zeros_like(att)
    mask = np.zeros(att.shape, dtype=np.uint8)
    # trabecular texture: coarser (larger blobs, more contrast) when density is low
    coarse = 1.2 + 1.5 * max(0.0, -plan.z)
    texture = 0.75 + 0.25 * (0.7 + 0.3 * max(0.0, -plan.z)) * _smooth_noise(rng, att.shape, coarse)

    spine_x = 0.0 if not lateral else 0.15
    half = 0.035
    for k in range(12):  # thoracic vertebral bodies
        top = 0.18 + k * 0.055
        inside = (np.abs(xr - spine_x) < half) & (yr > top) & (yr < top + 0.048)
        ring = inside & ~((np.abs(xr - spine_x) < half - cortex) & (yr > top + cortex) & (yr < top + 0.048 - cortex))
        bone += np.where(ring, 0.55, 0.0) + np.where(inside & ~ring, 0.28 * texture, 0.0)
        mask[inside] = 1
    if not lateral:
        for side in (-1, 1):
            for k in range(10):  # posterior ribs as arcs sweeping out and down
                y0 = 0.2 + k * 0.06
                centre = y0 + 0.9 * (np.abs(xr) - 0.04) ** 2 * 4.0
                reach = (np.abs(xr) > 0.045) & (np.abs(xr) < 0.36 * size) & (np.sign(xr) == side)
                dist = np.abs(yr - centre)
                width = 0.013
                shaft = reach & (dist < width)
                edge = shaft & (dist > width - cortex * 0.6)
                bone += np.where(edge, 0.45, 0.0) + np.where(shaft & ~edge, 0.16 * texture, 0.0)
                mask[shaft & (mask == 0)] = 2
        # clavicles
        for side in (-1, 1):
            clav = (np.abs(yr - 0.16 - 0.15 * np.abs(xr)) < 0.012) & (np.abs(xr) < 0.25) & (np.sign(xr) == side)
            bone += np.where(clav, 0.3, 0.0)
    att = att + density * bone
    # a lead side marker
    mx, my = (0.3, 0.08) if rng.random() < 0.5 else (-0.33, 0.08)
    marker = (np.abs(x - mx) < 0.025) & (np.abs(y - my) < 0.03)
    att = np.where(marker, 1.6, att)
    mask[marker] = MARKER

    # upsample to detector size and add quantum noise
    att_full = _resize(att.astype(np.float32), plan.rows, plan.cols)
    mask_full = _resize_nearest(mask, plan.rows, plan.cols)
    exposure = rng.uniform(0.85, 1.15)
    noise = rng.normal(0, 0.012 / exposure, att_full.shape).astype(np.float32)
    img = np.clip(att_full * exposure / 1.6 + 0.05 + noise, 0.0, 1.0)
    # the detector's auto-ranging window follows exposure only: a window taken from
    # the image's own percentiles would move with bone density and leak the label
    # into soft tissue, teaching models to look away from bone
    window = (0.02, min(1.0, 0.05 + exposure * 1.1))
    return img, mask_full, window


def _resize(a: np.ndarray, rows: int, cols: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(a, mode="F").resize((cols, rows), Image.BILINEAR))


def _resize_nearest(a: np.ndarray, rows: int, cols: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(a).resize((cols, rows), Image.NEAREST))


# ------------------------------------------------------------------- writing


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


def _write_one(args: tuple[ImagePlan, str, str]) -> str:
    plan, archive, masks, markers = args
    from PIL import Image
    from pydicom.uid import JPEG2000, RLELossless

    img, mask, (wlo, whi) = draw_phantom(plan)
    p = np.round(img * 4095).astype(np.uint16)
    window = (wlo * 4095, whi * 4095)
    if plan.photometric == "MONOCHROME1":
        p = (4095 - p).astype(np.uint16)
        window = (4095 - window[1], 4095 - window[0])
    ds = build_dataset(plan, p, window)
    if plan.storage == "rle":
        ds.compress(RLELossless, p, encoding_plugin="pylibjpeg", generate_instance_uid=False)
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
    jobs = [(p, str(archive), str(masks), str(markers)) for p in plans]
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
    if recorded.get("spec") != asdict(spec):
        return None
    return Cohort(root / "archive", root / "dxa.csv", root / "truth.csv", root / "bone_masks", recorded["n_files"],
                  recorded["n_images"], recorded["ceiling_auc"], plan_cohort(spec)[0], root / "marker_masks")
