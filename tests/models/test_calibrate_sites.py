"""Site recalibration labels the site's pairs over the model's own label sites, as its training did.

The bug this pins: the calibrate command paired images with DXA on its own and
labelled them over all three T-score sites, so a model trained on the femoral
neck was recalibrated against labels from the lumbar spine.
"""

import datetime as dt
import json
import shutil

import numpy as np
import pytest

from osteo_batch.errors import UserError
from osteo_batch.models import calibrate
from osteo_batch.models.labels import min_t, who_class
from osteo_batch.store import Store

NECK_ONLY = {"train": {"label_sites": ["t_femoral_neck"]}}


def _store_with_pairs(path, dxa_rows):
    """A real store: DXA loaded from a CSV the way a site brings it, one eligible image per woman."""
    from osteo_batch.followup.dxa import load_dxa

    csv = path.parent / "dxa.csv"
    csv.write_text("patient_id,exam_date,t_lumbar_spine,t_femoral_neck,t_total_hip\n"
                   + "".join(f"{p},2024-03-01,{ls},{fn},{th}\n" for p, ls, fn, th in dxa_rows))
    st = Store(path)
    st.open()
    load_dxa(st, csv)
    for i, (p, *_) in enumerate(dxa_rows):
        st.con.execute(
            "INSERT INTO instances (path, size, mtime_ns, sop_instance_uid, patient_id, study_date, status, reason) "
            "VALUES (?, 1, 1, ?, ?, ?, 'pending', 'not_scored_yet')",
            [f"/archive/{i}.dcm", f"1.2.3.{i}", p, dt.date(2024, 2, 1)])
    return st


def test_pairs_are_labelled_over_the_model_sites_not_all_three(tmp_path):
    # ten women whose lumbar spine alone says osteoporosis, ten whose femoral neck does, ten normal
    rows = ([(f"LS{i:02d}", -3.0, -0.5, -0.4) for i in range(10)]
            + [(f"FN{i:02d}", -0.5, -2.8, -1.2) for i in range(10)]
            + [(f"NO{i:02d}", 0.2, 0.1, 0.3) for i in range(10)])
    st = _store_with_pairs(tmp_path / "osteo.duckdb", rows)
    try:
        pairs = calibrate.site_pairs(st, NECK_ONLY, window_days=180)
        every_site = [who_class(min_t(r)) for r in pairs.rows]  # what the calibrate command used to label
    finally:
        st.close()
    assert pairs.sites == ("t_femoral_neck",) and len(pairs) == 30
    label = {r["patient_id"]: y for r, y in zip(pairs.rows, pairs.labels)}
    assert all(label[f"LS{i:02d}"] == 0 for i in range(10)), "a lumbar-spine-only osteoporosis is not the model's label"
    assert all(label[f"FN{i:02d}"] == 2 for i in range(10))
    assert sum(y == 2 for y in pairs.labels) == 10
    assert sum(y == 2 for y in every_site) == 20  # the old labels: this data does tell the two apart


def test_a_card_without_label_sites_means_all_three_and_a_bad_one_is_refused(tmp_path):
    assert calibrate.label_sites({}) == ("t_lumbar_spine", "t_femoral_neck", "t_total_hip")
    with pytest.raises(calibrate.CalibrationError, match=r"label sites \['t_wrist'\]") as e:
        calibrate.label_sites({"train": {"label_sites": ["t_wrist"]}})
    assert e.value.code == "bad_label_sites" and isinstance(e.value, UserError)


def _random_model(folder):
    """A model folder with random tiny weights and a card that names its label sites."""
    from osteo_batch.models.model import ModelConfig, build_module, save_model_dir

    cfg = ModelConfig.for_backbone("dinov2_tiny_demo")
    model_id = save_model_dir(build_module(cfg), cfg, folder)
    (folder / "card.json").write_text(json.dumps({"model_id": model_id, **NECK_ONLY}))
    return folder


def test_too_few_pairs_is_a_user_error_with_a_code(tmp_path):
    st = _store_with_pairs(tmp_path / "osteo.duckdb", [(f"P{i}", -3.0, -3.0, -3.0) for i in range(5)])
    try:
        with pytest.raises(calibrate.CalibrationError, match="only 5 images pair") as e:
            calibrate.recalibrate_site(st, _random_model(tmp_path / "m"), None, method="platt", window_days=180,
                                       workers=0, cache_dir=tmp_path / "cache", roots=())
    finally:
        st.close()
    assert e.value.code == "too_few_pairs" and isinstance(e.value, UserError) and isinstance(e.value, ValueError)
    with pytest.raises(calibrate.CalibrationError, match="use one of platt, isotonic"):
        calibrate.fit("beta", np.array([0.1, 0.9]), np.array([0, 1]))


@pytest.fixture
def neck_model(tiny_model, tmp_path):
    """The session's tiny model, as if it had been trained on the femoral neck alone."""
    d = tmp_path / "neck-model"
    shutil.copytree(tiny_model.model_dir, d)
    card = json.loads((d / "card.json").read_text())
    card["train"]["label_sites"] = ["t_femoral_neck"]
    (d / "card.json").write_text(json.dumps(card))
    return d


def test_recalibrate_site_labels_decodes_inside_the_archive_and_writes_a_version(tiny_model, neck_model, cohort_dir,
                                                                                 tmp_path):
    from osteo_batch import pipeline
    from osteo_batch.archive.walk import real_roots

    work = tiny_model.model_dir.parent.parent  # the fixture's work folder: swept, DXA loaded
    store_path = pipeline.load_settings(None, workdir=work).store_path
    kw = dict(method="platt", window_days=180, workers=0, cache_dir=tmp_path / "cache")
    with Store(store_path, read_only=True) as st:
        rows = st.rows("training_pairs", {"window_days": 180})
        e = calibrate.recalibrate_site(st, neck_model, tmp_path / "v2", roots=real_roots(cohort_dir.archive), **kw)
        # bounded elsewhere, nothing may be opened, and the cache of the decode above is not reused either
        with pytest.raises(calibrate.CalibrationError, match="could be read inside the archive") as refused:
            calibrate.recalibrate_site(st, neck_model, tmp_path / "v3", roots=real_roots(tmp_path / "cache"), **kw)
    assert refused.value.code == "too_few_pairs" and not (tmp_path / "v3").exists()
    assert e["label_sites"] == ("t_femoral_neck",) and e["out"] == tmp_path / "v2"
    by_neck = sum(r["t_femoral_neck"] is not None and r["t_femoral_neck"] <= -2.5 for r in rows)
    by_all = sum(who_class(min_t(r)) == 2 for r in rows if min_t(r) is not None)
    assert by_neck < by_all, "the cohort must tell the two labellings apart"
    assert e["osteoporosis_pairs"] == by_neck  # every paired image of the cohort decodes
    card = json.loads((tmp_path / "v2" / "card.json").read_text())
    assert card["history"][-1]["event"] == "recalibrated" and card["model_id"] == e["model_id"]
