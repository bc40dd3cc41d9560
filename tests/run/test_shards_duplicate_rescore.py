"""Two files, one SOP Instance UID: when the kept copy fails to decode, the other is scored the same night."""

from __future__ import annotations

import numpy as np

from osteo_batch import pipeline
from osteo_batch.store import Store

from dicom_factory import dataset, ramp, write


def test_the_next_copy_is_scored_in_the_same_run_when_the_kept_one_fails_to_decode(tmp_path, tiny_model):
    archive = tmp_path / "archive"
    uid = "2.25.4242"
    # "a/" sorts first and its header is as valid as the other's: it is kept, and its pixels are blank
    write(dataset(np.full((96, 80), 1000, np.uint16), sop_instance_uid=uid, rows=96, cols=80), archive / "a" / "IM1")
    write(dataset(ramp(96, 80), sop_instance_uid=uid, rows=96, cols=80), archive / "b" / "IM1")
    write(dataset(ramp(96, 80), sop_instance_uid="2.25.4343", rows=96, cols=80), archive / "c" / "IM1")
    s = pipeline.load_settings(None, workdir=tmp_path / "work", archive=archive, model_dir=tiny_model.model_dir,
                               workers=0)
    summary = pipeline.run_nightly(s)
    with Store(s.store_path, read_only=True) as st:
        rows = dict(st.con.execute("SELECT split_part(path, '/', -2), status || ':' || coalesce(reason, '-') "
                                   "FROM instances").fetchall())
        n_scores = st.con.execute("SELECT count(*) FROM scores WHERE sop_instance_uid = ?", [uid]).fetchall()[0][0]
    # the blank copy is the second copy now: the kept one is the copy that scored
    assert rows == {"a": "duplicate:duplicate_sop_instance_uid", "b": "scored:-", "c": "scored:-"}, rows
    assert n_scores == 1
    assert summary["score"]["passes"] == 2 and summary["score"]["scored"] == 2
    assert summary["instances"]["by_status"] == {"duplicate": 1, "scored": 2}
