"""``train`` and ``calibrate`` take ``--pacs`` as they take ``--archive``: the images come from a real Orthanc."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from cli_run import cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cohort_pacs(cohort_dir):
    from orthanc_server import Orthanc

    with Orthanc() as o:
        o.upload(sorted(p for p in Path(cohort_dir.archive).rglob("*") if p.is_file()))
        yield o


def _since(cohort) -> str:
    d = min(p.study_date for p in cohort.plans)
    return f"{d[:4]}-{d[4:6]}-{d[6:]}"


def test_train_from_the_pacs_makes_the_folders_model(cohort_dir, tiny_model, cohort_pacs, tmp_path):
    """The same pairs, decoded from retrieved files, give the same weights as from the folder (tiny_model)."""
    out = tmp_path / "model"
    p = cli("train", "--workdir", tmp_path / "work", "--pacs", cohort_pacs.dicomweb_url, "--since", _since(cohort_dir),
            "--dxa", cohort_dir.dxa_csv, "--out", out, "--epochs", 2, "--seed", 0, "--workers", 0,
            "--masks", cohort_dir.masks, "--truth", cohort_dir.truth_csv)
    assert p.returncode == 0, p.stderr
    card = json.loads((out / "card.json").read_text())
    folder = json.loads((Path(tiny_model.model_dir) / "card.json").read_text())
    assert card["data"] == folder["data"]  # the same women, pairs and split
    assert card["validation"]["auc"] == pytest.approx(folder["validation"]["auc"], abs=1e-6)
    spool = tmp_path / "work" / "spool"
    assert not [f for f in spool.iterdir() if f.suffix in (".dcm", ".err")]  # every retrieved file went


def test_calibrate_from_the_pacs(cohort_dir, tiny_model, cohort_pacs, tmp_path):
    url = f"dimse://{cohort_pacs.aet}@127.0.0.1:{cohort_pacs.dicom_port}"
    p = cli("calibrate", "--workdir", tmp_path / "work", "--pacs", url, "--since", _since(cohort_dir),
            "--model", tiny_model.model_dir, "--dxa", cohort_dir.dxa_csv, "--out", tmp_path / "recal",
            "--workers", 0)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "recal" / "card.json").is_file()
