"""A finished nightly run to follow up: built once per session, copied before a test changes it.

Known conditions, referrals, outcomes, the program report, the worklist's
site pages and the run page are all tested against the same real run (a
real store, real pages) over the small cohort. Building it takes most of a
minute on 2 cores, so ``tests/conftest.py`` builds it once (``followup_night``);
tests that only read it share it, and tests that record actions or write
runs work on their own copy (``private_copy``) so that no test depends on
which other files ran before it.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osteo_batch import pipeline
from osteo_batch.settings import Settings
from osteo_batch.store import Store


@dataclass(frozen=True)
class FollowupNight:
    """The run ``night1`` (threshold 0: everyone scored is listed), with known conditions and a site mapping."""

    settings: Settings
    summary: dict[str, Any]
    without: list[str]  # eligible women with no DXA on file; the first three are in the known-conditions file


def without_dxa(cohort_dir) -> list[str]:
    """Eligible women of the cohort with no DXA on file (so only a known condition can leave them out)."""
    with open(cohort_dir.dxa_csv, newline="") as f:
        with_dxa = {r["patient_id"] for r in csv.DictReader(f)}
    pids = []
    for p in cohort_dir.plans:
        age = (dt.date.fromisoformat(p.study_date[:4] + "-" + p.study_date[4:6] + "-" + p.study_date[6:])
               - dt.date.fromisoformat(p.birth_date[:4] + "-" + p.birth_date[4:6] + "-" + p.birth_date[6:])).days / 365.25
        if p.sex == "F" and p.view in ("PA", "AP") and age >= 51 and p.patient_id not in with_dxa \
                and p.patient_id not in pids:
            pids.append(p.patient_id)
    assert len(pids) >= 3, "the cohort has women without a DXA"
    return pids


def build_night(cohort_dir, tiny_model, root: Path) -> FollowupNight:
    """A nightly run over the small cohort, listing everyone scored (threshold 0), with known conditions."""
    known = root / "known.csv"
    without = without_dxa(cohort_dir)
    a, b, c = without[:3]
    known.write_text(f"patient_id,condition,since\n{a},alendronate,2025-01-02\n{b},osteoporosis,\n"
                     f",osteoporosis,\n{c},denosumab,yesterday\n")
    cfg = root / "run.toml"
    cfg.write_text(f'[worklist]\nknown_conditions = "{known}"\n[sites]\n"Riverside Clinic" = "Riverside"\n')
    s = pipeline.load_settings(cfg, workdir=root / "work", archive=cohort_dir.archive, model_dir=tiny_model.model_dir,
                               dxa_csv=cohort_dir.dxa_csv, threshold=0.0, workers=1)
    summary = pipeline.run_nightly(s, "night1")
    return FollowupNight(s, summary, without)


def private_copy(night: FollowupNight, dst: Path) -> Settings:
    """The same settings over a copy of the run's work folder, for a test that records actions or writes runs."""
    work = dst / "work"
    shutil.copytree(night.settings.workdir, work, symlinks=True)
    return dataclasses.replace(night.settings, workdir=work)


def q(s: Settings, sql: str, params=None) -> list[tuple]:
    with Store(s.store_path, read_only=True) as st:
        return st.con.execute(sql, params or []).fetchall()
