"""Planning the synthetic cohort: every woman, visit, image and DXA row, decided from the seed alone.

Why plan first: drawing is slow and runs in parallel processes, so every
choice (who, when, which view, which size and storage, each image's own seed)
is made here, up front and in one order, and a cohort is the same from run to
run whatever the number of workers. Plans hold synthetic names and IDs only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import numpy as np

from osteo_batch.synth.density import latent_density, t_scores

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
    #: JPEG 2000 as the demo writes it ("lossy": 1.2.840.10008.1.2.4.91 at 15:1) or as archives keep
    #: originals ("lossless": 1.2.840.10008.1.2.4.90, the reversible 5/3 wavelet)
    j2k: str = "lossy"
    native_max_side: int = 1800  # uncompressed files stay at the small end (the demo's disk budget)
    aspect: tuple[float, float] = (0.8, 1.05)  # columns / rows
    min_cols: int | None = None  # None: min_side (rows are drawn between min_side and max_side)
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
    aspect = rng.uniform(*spec.aspect)
    cols = int(np.clip(round(rows * aspect), spec.min_side if spec.min_cols is None else spec.min_cols, spec.max_side))
    u = rng.random()
    storage = "j2k" if u < spec.share_j2k else "rle" if u < spec.share_j2k + spec.share_rle else "native"
    if storage == "native":
        # keep uncompressed files at the small end so the demo stays on disk budget
        rows, cols = min(rows, spec.native_max_side), min(cols, spec.native_max_side)
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
