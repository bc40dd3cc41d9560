"""Shared fixtures: a small synthetic archive, a tiny trained model, a Prefect test server.

Everything is real: DICOM files written with pydicom, DuckDB files on disk,
Prefect flow runs against ``prefect_test_harness``, Chromium for the worklist.
Only sizes are small (images 256-384 px, 2 training epochs) to keep the suite
fast on 2 CPU cores.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

# The hostile case generators (tests/hostile/cases*.py) serve tests across the tree, by name.
_HOSTILE = str(Path(__file__).resolve().parent / "hostile")
if _HOSTILE not in sys.path:
    sys.path.append(_HOSTILE)

# Prefect must be configured before it is imported anywhere (see flows/env.py).
_PREFECT_HOME = tempfile.mkdtemp(prefix="osteo-prefect-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
from osteo_batch.flows import env as _flows_env  # noqa: E402

_flows_env.configure(None)

import pytest  # noqa: E402

from dicom_factory import small_spec  # noqa: E402,F401  (fixtures below use it)



@pytest.fixture(scope="session")
def cohort_dir(tmp_path_factory):
    """A written synthetic cohort (read-only for tests: copy before changing)."""
    from osteo_batch.synth.cohort import write_cohort

    root = tmp_path_factory.mktemp("cohort")
    c = write_cohort(root, small_spec(), workers=2)
    return c


@pytest.fixture
def archive_copy(cohort_dir, tmp_path):
    """A private, writable copy of the small archive."""
    dst = tmp_path / "archive"
    shutil.copytree(cohort_dir.archive, dst)
    return dst


@pytest.fixture(scope="session")
def tiny_model(cohort_dir, tmp_path_factory):
    """A model trained for 2 epochs on the small cohort (enough to exercise every path)."""
    from osteo_batch import pipeline
    from osteo_batch.models.train import TrainConfig, train

    work = tmp_path_factory.mktemp("train-work")
    s = pipeline.load_settings(None, workdir=work, archive=cohort_dir.archive, dxa_csv=cohort_dir.dxa_csv)
    pipeline.load_dxa_stage(pipeline.RunContext.for_index(s, "train"))
    pipeline.sweep_stage(pipeline.RunContext.for_index(s, "train"))
    out = work / "models" / "tiny"
    with pipeline.open_store(s) as st:
        res = train(st, out, TrainConfig(epochs=2, workers=0, seed=0, masks=str(cohort_dir.masks)),
                    truth_csv=cohort_dir.truth_csv)
    return res


@pytest.fixture(scope="session")
def followup_night(cohort_dir, tiny_model, tmp_path_factory):
    """The run ``night1`` that follow-up, worklist-site and run-page tests share (read-only: see followup_store)."""
    from followup_store import build_night

    return build_night(cohort_dir, tiny_model, tmp_path_factory.mktemp("followup"))


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def chromium_path():
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail("Debian's chromium is not installed; run scripts/setup.sh (it installs it)")
    return path
