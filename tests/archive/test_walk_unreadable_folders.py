"""A folder the run cannot list is said out loud: console, run page and Prefect artifact, as counts with a reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from cases import MARKER, planted
from dicom_factory import dataset, write
from test_walk_hostile import _without_root_file_powers


def test_a_folder_that_cannot_be_listed_is_reported_on_the_console_and_the_run_page(tmp_path, cohort_dir, tiny_model):
    archive, work = tmp_path / "archive", tmp_path / "work"
    shutil.copytree(cohort_dir.archive, archive)
    locked = archive / "Doe^Jane"
    write(planted(dataset(sop_instance_uid="2.25.77"), "FOLDER"), locked / "IM1")
    os.chmod(locked, 0)
    try:
        r = subprocess.run([sys.executable, "-m", "osteo_batch.cli", "run", "--archive", str(archive), "--workdir",
                            str(work), "--model", str(tiny_model.model_dir), "--no-prefect"],
                           capture_output=True, text=True, timeout=600, preexec_fn=_without_root_file_powers)
    finally:
        os.chmod(locked, 0o755)
    assert r.returncode == 0, r.stderr[-3000:]
    warning = [ln for ln in r.stdout.splitlines() if ln.startswith("warning:")]
    assert len(warning) == 1 and "1 archive folder(s) could not be listed" in warning[0], r.stdout
    assert "1 permission_denied" in warning[0]
    printed = r.stdout + r.stderr
    assert "Doe" not in printed and MARKER not in printed, "the folder's name is never printed"
    page = next((work / "runs").glob("run-*.html")).read_text()
    assert 'id="unreadable-folders"' in page and "permission_denied" in page and "Doe" not in page


def test_the_artifact_says_it_too():
    from osteo_batch.run.summary import summary_markdown

    md = summary_markdown({"run_id": "r", "sweep": {"files": 3, "unreadable_dirs": 2,
                                                    "unreadable_dir_reasons": {"permission_denied": 1, "io_error": 1}}})
    line = next(ln for ln in md.splitlines() if "could not be listed" in ln)
    assert "2 archive folder(s)" in line and "1 permission_denied" in line and "1 io_error" in line
    assert "could not be listed" not in summary_markdown({"run_id": "r", "sweep": {"files": 3, "unreadable_dirs": 0}})
