"""One archive holding every syntax, quirk and kind of junk, through a whole nightly run.

Must hold: conservation (files = scored + ineligible + duplicate + rejected),
every rejection a reason from the vocabulary, and twins (one picture stored in
different transfer syntaxes) scored equally.
"""

import os
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless

from osteo_batch import pipeline
from osteo_batch.reasons import Reason
from osteo_batch.store import Store

from dicom_factory import dataset, ramp, write
from test_decoding_twins import REFERENCE, TWINS

RULES = """
[[rule]]
name = "any_image"
  [[rule.condition]]
  name = "modality"
  keyword = "Modality"
  in = ["MR", "CR", "DX", "OT"]
"""


def _with_uid(src, dst, uid):
    """Copy a reference file under a new SOP Instance UID, keeping its encoding."""
    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID = uid
    if "MediaStorageSOPInstanceUID" in ds.file_meta:
        ds.file_meta.MediaStorageSOPInstanceUID = uid
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst)
    return dst


@pytest.fixture(scope="module")
def quirky(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("quirks")
    a = root / "archive"
    twins = {}
    for i, name in enumerate([REFERENCE, *TWINS]):
        uid = f"2.25.7{i:03d}"
        _with_uid(get_testdata_file(name, download=False), a / "twins" / f"T{i}", uid)
        twins[uid] = name
    junk = a / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("export log\n")
    (junk / "empty").write_bytes(b"")
    (junk / "random.bin").write_bytes(os.urandom(4096))
    shutil.copy(get_testdata_file("MR_truncated.dcm", download=False), junk / "partial")
    shutil.copy(get_testdata_file("test-SR.dcm", download=False), junk / "report")
    shutil.copy(get_testdata_file("DICOMDIR", download=False), junk / "DICOMDIR")
    nopix = dataset(sop_instance_uid="2.25.801")
    del nopix.PixelData
    write(nopix, junk / "nopixels")
    liar = dataset(sop_instance_uid="2.25.802")
    liar.Rows = 640
    write(liar, junk / "liar")
    huge = dataset(sop_instance_uid="2.25.803")
    huge.Rows = huge.Columns = 60000
    write(huge, junk / "huge")
    bomb = dataset(ramp(256, 256), sop_instance_uid="2.25.804", rows=256, cols=256)
    bomb.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    bomb.Rows, bomb.Columns = 64, 48
    write(bomb, junk / "bomb")
    shutil.copy(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm", download=False), junk / "colour")
    shutil.copy(a / "twins" / "T0", junk / "copy-of-T0")  # a duplicate
    os.symlink(a, junk / "loop")  # a cycle
    odd = os.path.join(os.fsencode(junk), b"caf\xe9")
    dataset(sop_instance_uid="2.25.805", modality="CR").save_as(os.fsdecode(odd), enforce_file_format=True)
    write(dataset(sop_instance_uid="2.25.806", modality="MG"), a / "other" / "mammo")

    rules = root / "rules.toml"
    rules.write_text(RULES)
    s = pipeline.load_settings(rules, workdir=root / "work", archive=a, model_dir=tiny_model.model_dir, workers=1)
    summary = pipeline.run_nightly(s)
    n_files = sum(1 for dp, _, fs in os.walk(a) for f in fs)  # os.walk does not follow the loop
    return s, summary, twins, n_files


def test_conservation_over_a_quirky_archive(quirky):
    s, summary, _, n_files = quirky
    inst = summary["instances"]
    assert inst["files"] == n_files
    assert set(inst["by_status"]) <= {"scored", "ineligible", "duplicate", "rejected"}
    assert "pending" not in inst["by_status"]


def test_every_rejection_has_a_reason_from_the_vocabulary(quirky):
    s, summary, _, _ = quirky
    vocab = {r.value for r in Reason}
    with Store(s.store_path, read_only=True) as st:
        rows = st.con.execute("SELECT status, reason FROM instances WHERE status <> 'scored'").fetchall()
    for status, reason in rows:
        assert reason in vocab or reason.startswith("ineligible:"), (status, reason)
    reasons = {r for _, r in rows}
    for expected in ("not_dicom", "empty_file", "truncated", "not_an_image_sop_class", "no_pixel_data",
                     "pixels_inconsistent_with_header", "image_too_large", "pixel_decode_failed",
                     "duplicate_sop_instance_uid", "ineligible:modality"):
        assert expected in reasons, expected


def test_twins_get_equal_scores(quirky):
    s, summary, twins, _ = quirky
    with Store(s.store_path, read_only=True) as st:
        scores = dict(st.con.execute("SELECT sop_instance_uid, score FROM scores").fetchall())
    got = {twins[u]: scores[u] for u in twins}
    assert len(got) == 1 + len(TWINS)
    ref = got[REFERENCE]
    assert all(abs(v - ref) < 1e-6 for v in got.values()), got


def test_the_odd_name_was_scored(quirky):
    s, *_ = quirky
    with Store(s.store_path, read_only=True) as st:
        status = st.con.execute("SELECT status FROM instances WHERE sop_instance_uid = '2.25.805'").fetchall()
    assert status == [("scored",)]
