"""The wheel is the product: built, installed into a fresh environment, run far from the checkout.

Why: an editable install finds ``sql/`` and ``reports/`` in the checkout, so
a wheel that lacks them (or that installs a bare ``flows`` package beside
other tools' ``flows``) passes every other test and fails on the first
server it is installed on. This test builds the wheel the way a release does
(``pip wheel --no-deps .``), installs it into a new virtual environment,
and runs a night and a worklist from a folder outside the checkout, with a
``git`` on the PATH that records any call.

The new environment reuses this one's installed dependencies (a ``.pth``
file naming its site-packages, whose own ``.pth`` files, among them the
editable install's finder, are not read), so the test runs in seconds and
offline. ``scripts/check_wheel.sh`` does the same with every dependency
installed from the registries into a bare environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("src") / "osteo-batch"
    # from a clean copy of the tracked files, as a release builds from a clean clone
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for f in filter(None, files):
        rel = Path(os.fsdecode(f))
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    for untracked in ("osteo_batch", "flows", "sql", "reports", "tests"):  # files of this change not yet committed
        for p in (ROOT / untracked).rglob("*"):
            if p.is_file() and "__pycache__" not in p.parts and not (src / p.relative_to(ROOT)).exists():
                (src / p.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, src / p.relative_to(ROOT))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = out.glob("osteo_batch-*.whl")
    return whl


def test_the_wheel_holds_the_sql_the_templates_and_the_flows_under_one_name(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"osteo_batch"}, f"installed top-level names: {sorted(tops)} (a bare 'flows' would clash)"
    sql = {Path(n).name for n in names if n.startswith("osteo_batch/sql/") and n.endswith(".sql")}
    assert sql == {p.name for p in (ROOT / "sql").glob("*.sql")}
    templates = {Path(n).name for n in names if n.startswith("osteo_batch/reports/") and n.endswith(".j2")}
    assert templates == {p.name for p in (ROOT / "reports").glob("*.j2")}
    flows = {Path(n).name for n in names if n.startswith("osteo_batch/flows/")}
    assert {p.name for p in (ROOT / "flows").glob("*.py")} <= flows
    for data in ("osteo_batch/defaults/eligibility.toml", "osteo_batch/foundations/phantom_dinov2_tiny/model.safetensors"):
        assert data in names
    # every package folder of the checkout is in the wheel: pyproject lists them by hand
    for init in (ROOT / "osteo_batch").rglob("__init__.py"):
        assert init.relative_to(ROOT).as_posix() in names, f"{init.parent.name} is missing from pyproject's packages"


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "osteo-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return venv


def _run(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    spy = cwd / "spy-bin"
    spy.mkdir(exist_ok=True)
    (spy / "git").write_text(f"#!/bin/sh\necho \"$@\" >> {cwd / 'git-calls'}\nexit 1\n")
    (spy / "git").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OSTEO_BATCH_SQL_DIR",
                                                            "OSTEO_BATCH_REPORTS_DIR")}
    env["PATH"] = f"{spy}:{venv / 'bin'}:/usr/bin:/bin"
    return subprocess.run([str(venv / "bin" / "osteo-batch"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_an_installed_wheel_runs_a_night_and_a_worklist_outside_the_checkout(installed, cohort_dir, tiny_model,
                                                                             tmp_path):
    where = tmp_path / "elsewhere"
    where.mkdir()
    py = installed / "bin" / "python"
    probe = subprocess.run([py, "-c", "import osteo_batch, osteo_batch.resources as r, osteo_batch.flows.nightly as n;"
                            "print(osteo_batch.__file__); print(r.SQL_DIR); print(r.REPORTS_DIR); print(n.__file__)"],
                           cwd=where, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": ""})
    assert probe.returncode == 0, probe.stderr[-2000:]
    for line in probe.stdout.split():
        assert str(installed) in line and str(ROOT) not in line, probe.stdout
    work = where / "work"
    r = _run(installed, where, "run", "--no-prefect", "--archive", str(cohort_dir.archive), "--workdir", str(work),
             "--model", str(tiny_model.model_dir), "--dxa", str(cohort_dir.dxa_csv), "--workers", "0")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert (work / "osteo.duckdb").is_file()
    pages = list((work / "worklists").glob("*.html"))
    assert pages, r.stdout
    r = _run(installed, where, "worklist", "--workdir", str(work))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "worklist" in r.stdout.lower()
    assert not (where / "git-calls").exists(), "git was called at run time: " + (where / "git-calls").read_text()
