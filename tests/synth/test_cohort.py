import csv
from collections import Counter

import numpy as np
import pydicom

from osteo_batch.synth import cohort, density, phantom, plan
from osteo_batch.models.metrics import auc


def test_demo_cohort_plan_is_seeded_and_has_what_archives_hold():
    spec = plan.CohortSpec()
    a, dxa_a, _ = plan.plan_cohort(spec)
    b, dxa_b, _ = plan.plan_cohort(spec)
    assert a == b and dxa_a == dxa_b, "same seed, same cohort"
    assert 200 <= len(a) <= 400
    assert all(1500 <= p.rows <= 3000 and 1500 <= p.cols <= 3000 for p in a)
    assert set(Counter(p.modality for p in a)) == {"CR", "DX"}
    storages = Counter(p.storage for p in a)
    assert storages["j2k"] > 0 and storages["rle"] > 0 and storages["native"] > 0
    assert any(p.photometric == "MONOCHROME1" for p in a)
    assert any(p.view == "LL" for p in a)
    assert any(p.sex == "M" for p in a)
    ages = [(int(p.study_date[:4]) - int(p.birth_date[:4])) for p in a]
    assert min(ages) < 50 and max(ages) >= 50
    other = plan.plan_cohort(plan.CohortSpec(seed=spec.seed + 1))[0]
    assert [p.z for p in other] != [p.z for p in a]


def test_written_files_are_12_bit_dicom_with_masks_beside_the_archive(cohort_dir):
    files = [p for p in cohort_dir.archive.rglob("*") if p.is_file()]
    assert len(files) == cohort_dir.n_files
    syntaxes = set()
    for ip in cohort_dir.plans[:12]:
        ds = pydicom.dcmread(cohort_dir.archive / ip.filename)
        assert ds.BitsStored == 12 and ds.BitsAllocated == 16
        assert ds.SOPInstanceUID == ip.sop_instance_uid
        assert ds.PhotometricInterpretation == ip.photometric
        syntaxes.add(ds.file_meta.TransferSyntaxUID)
        arr = ds.pixel_array
        assert arr.shape == (ip.rows, ip.cols) and arr.max() < 4096
        mask = cohort_dir.masks / f"{ip.sop_instance_uid}.png"
        assert mask.is_file()
    assert len(syntaxes) >= 2
    assert not any(p.suffix == ".png" for p in files), "masks must not be inside the archive"


def test_dxa_table_has_the_user_format(cohort_dir):
    with open(cohort_dir.dxa_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0].keys()) == ["patient_id", "exam_date", "t_lumbar_spine", "t_femoral_neck", "t_total_hip"]
    assert any(r["t_total_hip"] == "" for r in rows) or len(rows) < 20
    for r in rows:
        assert len(r["exam_date"]) == 10 and r["exam_date"][4] == "-"


def test_bone_is_denser_in_the_image_when_latent_density_is_higher():
    base = plan.plan_cohort(plan.CohortSpec(min_side=256, max_side=300))[0][0]
    from dataclasses import replace

    lo_img, mask, lo_win = phantom.draw_phantom(replace(base, z=-2.0))
    hi_img, _, hi_win = phantom.draw_phantom(replace(base, z=2.0))
    assert lo_win == hi_win, "the display window must not depend on bone density"
    bone = np.isin(mask, (phantom.SPINE, phantom.RIBS))
    assert hi_img[bone].mean() > lo_img[bone].mean() + 0.01
    assert abs(hi_img[~bone].mean() - lo_img[~bone].mean()) < 0.01


def test_ceiling_is_the_auc_of_the_latent_density():
    c1, c2 = density.ceiling_auc(n=100_000, seed=1), density.ceiling_auc(n=100_000, seed=2)
    assert abs(c1 - c2) < 0.01
    assert 0.85 < c1 < 0.995
    # a noisier measurement would lower it: the ceiling is below 1 because DXA has noise
    rng = np.random.default_rng(0)
    z = rng.normal(size=5000)
    y = (z + rng.normal(0, 0.5, 5000)) < -1
    assert auc(y, -z) < 1.0


def test_no_study_is_dated_after_the_reference_date():
    """Follow-up studies 200-500 days after a first study must not land in the future."""
    import datetime as dt

    for spec in (plan.CohortSpec(), plan.CohortSpec(n_women=600, n_followups=200, seed=5)):
        ref = dt.date.fromisoformat(spec.reference_date)
        plans = plan.plan_cohort(spec)[0]
        dates = [dt.datetime.strptime(p.study_date, "%Y%m%d").date() for p in plans]
        assert max(dates) <= ref
        # follow-ups still exist, each after its woman's first study
        by_patient: dict[str, set] = {}
        for p, d in zip(plans, dates):
            by_patient.setdefault(p.patient_id, set()).add(d)
        assert sum(len(v) > 1 for v in by_patient.values()) >= min(spec.n_followups, 15)


def test_the_marker_has_a_mask_of_its_own(cohort_dir):
    from PIL import Image

    for ip in cohort_dir.plans[:6]:
        bone = np.asarray(Image.open(cohort_dir.masks / f"{ip.sop_instance_uid}.png"))
        marker = np.asarray(Image.open(cohort_dir.marker_masks / f"{ip.sop_instance_uid}.png")) > 0
        assert marker.any() and set(np.unique(bone)) <= {0, phantom.SPINE, phantom.RIBS}
        assert not (bone[marker] > 0).any(), "bone_masks/ hold bone only"
        assert marker.mean() < 0.01


def test_an_existing_cohort_is_reused_only_for_the_same_spec(cohort_dir):
    from dataclasses import replace

    from dicom_factory import small_spec

    root = cohort_dir.archive.parent
    again = cohort.existing_cohort(root, small_spec())
    assert again is not None and again.n_files == cohort_dir.n_files and again.n_images == cohort_dir.n_images
    assert [p.sop_instance_uid for p in again.plans] == [p.sop_instance_uid for p in cohort_dir.plans]
    # the same seed with another size or count draws other files: not the same cohort
    assert cohort.existing_cohort(root, replace(small_spec(), max_side=400)) is None
    assert cohort.existing_cohort(root, replace(small_spec(), n_women=49)) is None
    assert cohort.existing_cohort(root / "nowhere", small_spec()) is None
