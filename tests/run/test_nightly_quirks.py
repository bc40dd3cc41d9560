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
from pydicom_twins import REFERENCE, TWINS

RULES = """
[[rule]]
name = "any_image"
  [[rule.condition]]
  name = "modality"
  keyword = "Modality"
  in = ["MR", "CR", "DX", "OT", "NM", "US"]
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
    twins_lossless = {}
    for i, name in enumerate([REFERENCE, *TWINS]):
        uid = f"2.25.7{i:03d}"
        _with_uid(get_testdata_file(name, download=False), a / "twins" / f"T{i}", uid)
        twins[uid] = name
    # twins made the other way round: a lossless file and its decompressed copy
    for j, name in enumerate(["JPEG-LL.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm"]):
        src = _with_uid(get_testdata_file(name, download=False), a / "lossless" / f"L{j}", f"2.25.71{j}0")
        ds = pydicom.dcmread(src)
        ds.decompress()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"2.25.71{j}1"
        ds.save_as(a / "lossless" / f"L{j}-native")
        twins_lossless[f"2.25.71{j}0"] = f"2.25.71{j}1"
    deflated = pydicom.dcmread(get_testdata_file(REFERENCE, download=False))
    deflated.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    deflated.SOPInstanceUID = deflated.file_meta.MediaStorageSOPInstanceUID = "2.25.7999"
    deflated.save_as(a / "twins" / "deflated")
    twins["2.25.7999"] = "deflated"
    multi = dataset(sop_instance_uid="2.25.807", pixels=np.concatenate([ramp(), ramp()]), rows=128, cols=48)
    multi.Rows, multi.NumberOfFrames = 64, 2  # two frames of 64x48: the first is scored
    write(multi, a / "other" / "two-frames")
    for k in range(2):  # no Patient ID: never merged into one worklist row
        nopid = dataset(sop_instance_uid=f"2.25.81{k}")
        del nopid.PatientID
        write(nopid, a / "other" / f"no-id-{k}")
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
    return s, summary, twins, n_files, twins_lossless


def test_conservation_over_a_quirky_archive(quirky):
    s, summary, _, n_files, _ = quirky
    inst = summary["instances"]
    assert inst["files"] == n_files
    assert set(inst["by_status"]) <= {"scored", "ineligible", "duplicate", "rejected"}
    assert "pending" not in inst["by_status"]


def test_every_rejection_has_a_reason_from_the_vocabulary(quirky):
    s, summary, *_ = quirky
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
    s, summary, twins, _, lossless = quirky
    with Store(s.store_path, read_only=True) as st:
        scores = dict(st.con.execute("SELECT sop_instance_uid, score FROM scores").fetchall())
    got = {twins[u]: scores[u] for u in twins}
    assert len(got) == 2 + len(TWINS)
    ref = got[REFERENCE]
    assert all(abs(v - ref) < 1e-6 for v in got.values()), got
    for compressed, native in lossless.items():
        assert abs(scores[compressed] - scores[native]) < 1e-6


def test_the_odd_name_was_scored(quirky):
    s, *_ = quirky
    with Store(s.store_path, read_only=True) as st:
        status = st.con.execute("SELECT status FROM instances WHERE sop_instance_uid = '2.25.805'").fetchall()
    assert status == [("scored",)]


def test_multi_frame_is_scored_and_images_without_patient_id_stay_apart(quirky, tiny_model):
    s, *_ = quirky
    with Store(s.store_path, read_only=True) as st:
        statuses = dict(st.con.execute(
            "SELECT sop_instance_uid, status FROM instances WHERE sop_instance_uid IN ('2.25.807', '2.25.810', '2.25.811')"
        ).fetchall())
        cands = st.rows("worklist", {"model_id": tiny_model.model_id, "as_of": __import__("datetime").date.today()})
    assert statuses == {"2.25.807": "scored", "2.25.810": "scored", "2.25.811": "scored"}
    assert {"2.25.810", "2.25.811"} <= {c["sop_instance_uid"] for c in cands if c["patient_id"] is None}
