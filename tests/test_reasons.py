"""Every reason code has a file that triggers it, through the real sweep and the real scoring.

One small archive holds one file per code, each named for the code it must
get (pydicom-written, 64 x 48 or smaller, a few kB each). It is swept into a
real store (:func:`osteo_batch.archive.sweep.sweep`), the pending images are
planned and scored by a random-weight tiny model (:func:`osteo_batch.scoring.score.score_shard`,
no DataLoader workers), the parts loaded (:func:`~osteo_batch.scoring.score.load_scores`)
and the statuses resolved, and each file's ``instances.reason`` is compared
with its name. The sweep-stage reasons are read right after the sweep,
because scoring turns ``awaiting_score`` into a score.

Then a static check: every code of :class:`osteo_batch.reasons.Reason` is
triggered by this file or named here with the test files that trigger it, so
a new code without a test fails the suite.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import numpy as np
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEG2000Lossless

from dicom_factory import dataset, ramp, write
from osteo_batch.reasons import DESCRIPTIONS, Reason

ROOT = Path(__file__).resolve().parents[1]
RUN_DATE = dt.date(2025, 7, 1)  # every study below is dated 2025-06-01 unless it is the study-date case


# ------------------------------------------------------------------ one file per code


def _uid(n: int) -> str:
    return f"2.25.{7_000_000 + n}"


def _image(n: int, **kw):
    """An eligible 64 x 48 radiograph with its own SOP Instance UID (and patient)."""
    ds = dataset(sop_instance_uid=_uid(n), patient_id=f"RC{n:04d}", **kw)
    ds.file_meta.MediaStorageSOPInstanceUID = _uid(n)
    return ds


def _truncated(path: Path) -> None:
    write(_image(1), path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 1000])  # cut inside the 6 kB of Pixel Data


def _no_pixels(path: Path) -> None:
    ds = _image(2)
    del ds.PixelData
    write(ds, path)


def _structured_report(path: Path) -> None:
    ds = _image(3)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.Modality = "SR"
    write(ds, path)


def _no_uid(path: Path) -> None:
    ds = _image(4)
    del ds.SOPInstanceUID
    write(ds, path, enforce_file_format=False)


def _mpeg2(path: Path) -> None:
    """MPEG2 (a video syntax no installed decoder handles), its one frame encapsulated as the syntax requires."""
    ds = _image(5)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    ds.PixelData = encapsulate([ds.PixelData])
    ds["PixelData"].VR = "OB"
    write(ds, path)


def _short_pixels(path: Path) -> None:
    ds = _image(6)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]  # half of what 64 x 48 x 16 bits need
    write(ds, path)


def _too_large(path: Path) -> None:
    ds = _image(7)
    ds.Rows = 20000  # beyond the 16384 px side the sweep accepts
    write(ds, path)


def _deflate_bomb(path: Path) -> None:
    """A deflated data set whose private element inflates past the 16 MiB a header may take (a 20 kB file)."""
    ds = _image(8)
    ds.add_new(0x00090010, "LO", "BOMB")
    ds.add_new(0x00091000, "OB", bytes(20 * 1024 * 1024))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    write(ds, path)
    assert path.stat().st_size < 1024 * 1024


def _colour(path: Path) -> None:
    ds = _image(9)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = np.zeros((64, 48, 3), np.uint8).tobytes()
    write(ds, path)


def _slope_zero(path: Path) -> None:
    ds = _image(10)
    ds.RescaleSlope = 0  # every pixel becomes the intercept: nothing to see
    write(ds, path)


def _codestream_bomb(path: Path) -> None:
    """A JPEG 2000 frame whose SIZ claims 100000 x 100000 pixels under a 64 x 48 header."""
    ds = _image(11)
    ds.compress(JPEG2000Lossless, ramp(64, 48), encoding_plugin="pylibjpeg", generate_instance_uid=False)
    write(ds, path)
    raw = bytearray(path.read_bytes())
    siz = raw.index(b"\xff\x4f\xff\x51")  # SOC, SIZ: then Lsiz, Rsiz, Xsiz, Ysiz (ISO 15444-1 A.5.1)
    raw[siz + 8 : siz + 16] = (100000).to_bytes(4, "big") * 2
    path.write_bytes(bytes(raw))


def _future_study(path: Path) -> None:
    write(_image(12, study_date="20300101"), path)


#: File name (the code it must get) -> how it is written. "duplicate" and "awaiting_score" share one image.
SWEEP_FILES = {
    "not_dicom": lambda p: p.write_text("a note a clerk saved beside the images\n"),
    "empty_file": lambda p: p.write_bytes(b""),
    "truncated": _truncated,
    "no_pixel_data": _no_pixels,
    "not_an_image_sop_class": _structured_report,
    "missing_sop_instance_uid": _no_uid,
    "unsupported_transfer_syntax": _mpeg2,
    "pixels_inconsistent_with_header": _short_pixels,
    "image_too_large": _too_large,
    "decompression_bomb": _deflate_bomb,
    "ineligible_study_date": _future_study,
    "awaiting_score": lambda p: write(_image(13), p),
    "duplicate_sop_instance_uid": lambda p: write(_image(13), p),  # sorts after "awaiting_score": the copy
}
#: Accepted by the sweep; refused when the pixels are decoded.
SCORE_FILES = {
    "pixel_decode_failed": _colour,
    "blank_image": _slope_zero,
    "decompression_bomb-codestream": _codestream_bomb,
    "decode_timeout": lambda p: write(_image(14), p),
}


def _code(name: str) -> str:
    return "ineligible:study_date" if name == "ineligible_study_date" else name.split("-")[0]


def _rows(store) -> dict[str, tuple[str, str | None]]:
    got = store.con.execute("SELECT path, status, reason FROM instances").fetchall()
    return {Path(p).name: (status, reason) for p, status, reason in got}


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """(rows after the sweep, rows after scoring), each {file name: (status, reason)}."""
    import torch

    from osteo_batch.archive.sweep import resolve_status, sweep
    from osteo_batch.models.model import ModelConfig, build_module, load_model_dir, save_model_dir
    from osteo_batch.scoring.score import ScoreOptions, load_scores, plan, plan_items, score_shard
    from osteo_batch.store import Store

    root = tmp_path_factory.mktemp("reason-codes")
    archive, outside = root / "archive", root / "outside"
    archive.mkdir(), outside.mkdir()
    for name, make in {**SWEEP_FILES, **SCORE_FILES}.items():
        make(archive / name)
    os.mkfifo(archive / "not_regular_file")
    os.symlink(write(_image(15), outside / "IM1"), archive / "outside_archive")
    os.symlink(archive / "gone", archive / "unreadable")  # a dangling link: nothing there to read

    with Store(root / "osteo.duckdb") as st:
        sweep(st, archive, run_id="r1", workers=1, run_date=RUN_DATE)
        swept = _rows(st)

        torch.manual_seed(0)
        cfg = ModelConfig.for_backbone("dinov2_tiny_demo")
        save_model_dir(build_module(cfg), cfg, root / "model")
        model = load_model_dir(root / "model")
        scores = root / "scores"
        items = plan_items(plan(st, scores, "r1"), 0)
        late = [it for it in items if Path(it.path).name == "decode_timeout"]
        rest = [it for it in items if it not in late]
        score_shard(model, rest, out_dir=scores, run_id="r1", opts=ScoreOptions(workers=0))
        # one microsecond for the last image: its time limit expires before it can be read
        score_shard(model, late, out_dir=scores, run_id="r1", opts=ScoreOptions(workers=0, item_timeout_s=1e-6))
        load_scores(st, scores)
        resolve_status(st, model.model_id)
        scored = _rows(st)
    return swept, scored


SWEPT = [*SWEEP_FILES, "not_regular_file", "outside_archive", "unreadable"]


@pytest.mark.parametrize("name", SWEPT)
def test_the_sweep_records_the_reason(night, name):
    swept, _ = night
    status, reason = swept[name]
    assert reason == _code(name), f"{name}: {status} {reason}"
    assert status == {"awaiting_score": "pending", "duplicate_sop_instance_uid": "duplicate",
                      "ineligible_study_date": "ineligible"}.get(name, "rejected")


@pytest.mark.parametrize("name", SCORE_FILES)
def test_scoring_records_the_decode_rejection(night, name):
    swept, scored = night
    assert swept[name] == ("pending", "awaiting_score"), "the sweep accepts it: its pixels decide"
    assert scored[name] == ("rejected", _code(name))


def test_the_good_image_is_scored_and_its_copy_stays_a_duplicate(night):
    _, scored = night
    assert scored["awaiting_score"] == ("scored", None)
    assert scored["duplicate_sop_instance_uid"] == ("duplicate", "duplicate_sop_instance_uid")


# ------------------------------------------------------------------ every code has a test

HERE = "tests/test_reasons.py"
#: Code -> the test files that trigger it through the real sweep, the real pixel reader or the real scoring
#: (this file first where it does; the others checked by reading them).
COVERED_BY: dict[str, tuple[str, ...]] = {
    "not_dicom": (HERE, "tests/archive/test_sweep.py", "tests/dicom/test_headers_hostile.py"),
    "empty_file": (HERE, "tests/archive/test_sweep.py"),
    "truncated": (HERE, "tests/archive/test_sweep.py", "tests/dicom/test_headers_hostile.py"),
    "unreadable": (HERE, "tests/dicom/test_pixels_hostile.py"),
    "no_pixel_data": (HERE, "tests/dicom/test_headers.py"),
    "not_an_image_sop_class": (HERE, "tests/dicom/test_headers.py"),
    "missing_sop_instance_uid": (HERE, "tests/dicom/test_headers.py"),
    "unsupported_transfer_syntax": (HERE, "tests/hostile/cases_pixels.py"),
    "pixels_inconsistent_with_header": (HERE, "tests/dicom/test_headers.py", "tests/dicom/test_pixels.py"),
    "image_too_large": (HERE, "tests/dicom/test_headers.py", "tests/dicom/test_pixels_hostile.py"),
    "pixel_decode_failed": (HERE, "tests/dicom/test_pixels.py", "tests/dicom/test_pixels_hostile.py"),
    "blank_image": (HERE, "tests/dicom/test_pixels.py"),
    "duplicate_sop_instance_uid": (HERE, "tests/archive/test_sweep.py", "tests/dicom/test_headers_hostile.py"),
    "awaiting_score": (HERE, "tests/archive/test_sweep.py"),
    "outside_archive": (HERE, "tests/dicom/test_pixels_hostile.py"),
    "not_regular_file": (HERE, "tests/dicom/test_pixels_hostile.py"),
    "decompression_bomb": (HERE, "tests/dicom/test_headers_hostile.py", "tests/hostile/cases_pixels.py"),
    "decode_timeout": (HERE, "tests/dicom/test_pixels_hostile.py"),
    "read_timeout": ("tests/archive/test_sweep_timeouts.py",),
    "ineligible:study_date": (HERE, "tests/archive/test_eligibility_study_dates.py"),
    # a PACS source: real Orthanc (stopped, an instance deleted), a socket that never answers
    "retrieve_failed": ("tests/pacs/test_pacs_faults.py",),
    "retrieve_gone": ("tests/pacs/test_pacs_faults.py", "tests/pacs/test_dicomweb_client.py"),
    "retrieve_timeout": ("tests/pacs/test_pacs_faults.py", "tests/pacs/test_dicomweb_client.py"),
    "osteo_batch_result": ("tests/pacs/test_pacs_nightly.py", "tests/results/test_own_objects.py"),
}
#: Codes in the vocabulary that no code path produces yet, so no file can trigger them (say why).
NOT_PRODUCED: dict[str, str] = {}


def test_every_reason_code_is_triggered_by_a_test_or_said_not_produced():
    codes = {r.value for r in Reason}
    assert set(COVERED_BY) | set(NOT_PRODUCED) == codes
    assert not set(COVERED_BY) & set(NOT_PRODUCED)
    assert set(DESCRIPTIONS) == codes, "every code is described for the run summary and the README"
    here = {_code(n) for n in [*SWEPT, *SCORE_FILES]}
    assert here == {c for c, files in COVERED_BY.items() if HERE in files}, "this file triggers what it claims"
    for code, files in COVERED_BY.items():
        name = Reason(code).name
        for f in files:
            text = (ROOT / f).read_text()
            assert code in text or re.search(rf"Reason\.{name}\b", text), f"{f} never names {code}"


def test_a_code_said_not_produced_is_produced_nowhere():
    """When something starts writing one of them, this fails: move it to COVERED_BY with a test that triggers it."""
    for code in NOT_PRODUCED:
        name = Reason(code).name
        for p in (ROOT / "osteo_batch").rglob("*.py"):
            if p.name == "reasons.py":
                continue
            text = p.read_text()
            assert f"Reason.{name}" not in text and f'"{code}"' not in text, f"{p.relative_to(ROOT)} writes {code}"
