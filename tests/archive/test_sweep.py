"""Sweep: conservation, reasons, incremental re-reads, duplicates."""

import os
import shutil

from osteo_batch import pipeline
from osteo_batch.store import Store


def _settings(tmp_path, archive):
    return pipeline.load_settings(None, workdir=tmp_path / "work", archive=archive)


def _files(archive):
    return sum(1 for p in archive.rglob("*") if p.is_file() and not p.is_symlink())


def test_every_file_accounted_for_with_reasons(tmp_path, archive_copy):
    out = pipeline.sweep_stage(pipeline.RunContext.for_index(_settings(tmp_path, archive_copy), "r1"))
    assert out["files"] == _files(archive_copy)
    assert sum(out["by_status"].values()) == out["files"] and out["conserved"]
    assert out["by_status"]["pending"] > 0
    with Store(tmp_path / "work" / "osteo.duckdb", read_only=True) as st:
        bad = st.con.execute("SELECT count(*) FROM instances WHERE status <> 'scored' AND reason IS NULL").fetchall()[0][0]
        reasons = dict(st.con.execute("SELECT reason, count(*) FROM instances GROUP BY reason").fetchall())
    assert bad == 0
    for r in ("ineligible:sex", "ineligible:age", "ineligible:view", "empty_file", "truncated", "awaiting_score"):
        assert reasons.get(r, 0) > 0, r


def test_second_sweep_reads_nothing_and_changes_are_seen(tmp_path, archive_copy):
    s = _settings(tmp_path, archive_copy)
    first = pipeline.sweep_stage(pipeline.RunContext.for_index(s, "r1"))
    again = pipeline.sweep_stage(pipeline.RunContext.for_index(s, "r2"))
    assert again["headers_read"] == 0 and again["by_status"] == first["by_status"]

    dicoms = sorted(p for p in archive_copy.rglob("IM*") if p.parent.name != "misc")
    touched, removed = dicoms[0], dicoms[1]
    os.utime(touched, ns=(1, 1))  # changed mtime
    removed.unlink()
    (archive_copy / "new-note.txt").write_text("not an image")
    third = pipeline.sweep_stage(pipeline.RunContext.for_index(s, "r3"))
    assert third["headers_read"] == 2 and third["vanished"] == 1
    assert third["files"] == first["files"] and third["conserved"]
    assert third["by_reason"]["not_dicom"] == first["by_reason"].get("not_dicom", 0) + 1


def test_second_copy_of_an_image_is_a_duplicate(tmp_path, archive_copy):
    src = sorted(p for p in archive_copy.rglob("IM*") if p.parent.name != "misc")[0]
    shutil.copy(src, archive_copy / "zz-copy")
    out = pipeline.sweep_stage(pipeline.RunContext.for_index(_settings(tmp_path, archive_copy), "r1"))
    assert out["by_status"]["duplicate"] == 1
    assert out["by_reason"]["duplicate_sop_instance_uid"] == 1


def test_rule_change_takes_effect_without_rereading(tmp_path, archive_copy):
    s = _settings(tmp_path, archive_copy)
    before = pipeline.sweep_stage(pipeline.RunContext.for_index(s, "r1"))
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nname = "anyone"\n  [[rule.condition]]\n  name = "modality"\n  keyword = "Modality"\n  in = ["CR", "DX"]\n')
    after = pipeline.sweep_stage(pipeline.RunContext.for_index(pipeline.load_settings(rules, workdir=tmp_path / "work", archive=archive_copy), "r2"))
    assert after["headers_read"] == 0
    assert after["by_status"].get("ineligible", 0) == 0
    assert after["by_status"]["pending"] == before["by_status"]["pending"] + before["by_status"]["ineligible"]


def test_names_that_are_not_utf8_are_indexed_and_readable(tmp_path):
    from osteo_batch.archive.walk import fs_path
    from osteo_batch.dicom.pixels import load_image

    from dicom_factory import dataset

    archive = tmp_path / "archive"
    archive.mkdir()
    raw = os.path.join(os.fsencode(archive), b"caf\xe9 IM1")  # a Latin-1 name from an old export
    dataset().save_as(raw.decode("utf-8", "surrogateescape"), enforce_file_format=True)
    out = pipeline.sweep_stage(pipeline.RunContext.for_index(_settings(tmp_path, archive), "r1"))
    assert out["files"] == 1 and out["by_status"] == {"pending": 1}
    with Store(tmp_path / "work" / "osteo.duckdb", read_only=True) as st:
        stored = st.con.execute("SELECT path FROM instances").fetchall()[0][0]
    assert os.fsencode(fs_path(stored)) == raw
    assert load_image(stored, 16).shape == (16, 16)


def test_an_empty_or_unmounted_archive_never_wipes_the_index(tmp_path, archive_copy):
    import pytest

    from osteo_batch.archive.sweep import ArchiveEmptyError

    s = _settings(tmp_path, archive_copy)
    first = pipeline.sweep_stage(pipeline.RunContext.for_index(s, "r1"))
    moved = tmp_path / "unmounted"
    archive_copy.rename(moved)
    archive_copy.mkdir()  # the mount point is there, the files are not
    with pytest.raises(ArchiveEmptyError, match="is it mounted"):
        pipeline.sweep_stage(pipeline.RunContext.for_index(s, "r2"))
    with Store(tmp_path / "work" / "osteo.duckdb", read_only=True) as st:
        assert st.con.execute("SELECT count(*) FROM instances").fetchall()[0][0] == first["files"]


def test_the_copy_kept_is_the_one_that_can_be_scored(tmp_path):
    from dicom_factory import dataset, write

    archive = tmp_path / "archive"
    write(dataset(view="LL"), archive / "a-lateral-copy")  # first by path, but ineligible
    write(dataset(view="PA"), archive / "b-frontal")  # same SOP Instance UID
    out = pipeline.sweep_stage(pipeline.RunContext.for_index(_settings(tmp_path, archive), "r1"))
    assert out["by_status"] == {"duplicate": 1, "pending": 1}
    with Store(tmp_path / "work" / "osteo.duckdb", read_only=True) as st:
        pending = st.con.execute("SELECT path FROM instances WHERE status = 'pending'").fetchall()[0][0]
    assert pending.endswith("b-frontal")
