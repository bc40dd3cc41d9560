"""``osteo-batch worklist``: the latest run's pages again, from the model's config and card, never its network."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from osteo_batch import cli
from osteo_batch.run.nightly import run_nightly
from osteo_batch.settings import load_settings
from osteo_batch.store import Store


@pytest.fixture(scope="module")
def night(cohort_dir, tiny_model, tmp_path_factory):
    """A work folder holding one finished nightly run (in-process, no Prefect)."""
    work = tmp_path_factory.mktemp("worklist-again") / "work"
    s = load_settings(None, workdir=work, archive=cohort_dir.archive, model_dir=tiny_model.model_dir,
                      dxa_csv=cohort_dir.dxa_csv, workers=1)
    return work, run_nightly(s, "night-1")


def test_worklist_never_imports_torch(night, tmp_path):
    work, summary = night
    report = tmp_path / "report.json"
    script = textwrap.dedent("""
        import json, sys
        from osteo_batch import cli
        rc = cli.main(sys.argv[2:])
        open(sys.argv[1], "w").write(json.dumps({"rc": rc, "torch": sorted(m for m in sys.modules
                                                  if m == "torch" or m.startswith("torch."))[:3]}))
    """)
    p = subprocess.run([sys.executable, "-c", script, str(report), "worklist", "--workdir", str(work),
                        "--threshold", "0"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    got = json.loads(report.read_text())
    assert got == {"rc": 0, "torch": []}, got
    listed = next(ln for ln in p.stdout.splitlines() if ln.endswith("patients at or above 0.0000"))
    assert int(listed.split()[0]) >= summary["worklist"]["listed"]  # 0 lists every scored patient not excluded
    page = next(ln for ln in p.stdout.splitlines() if ln.startswith("worklist: ")).split("worklist: ")[1]
    assert page.endswith("-threshold-0.0000.html")


def test_worklist_without_a_threshold_keeps_the_runs_own(night, capsys):
    work, summary = night
    capsys.readouterr()
    assert cli.main(["worklist", "--workdir", str(work)]) == 0
    out = capsys.readouterr().out
    assert f"{summary['worklist']['listed']} patients at or above {summary['threshold']:.4f}" in out
    page = next(ln for ln in out.splitlines() if ln.startswith("worklist: ")).split("worklist: ")[1]
    assert "-threshold-" not in page


def test_another_model_is_refused_in_one_line(night, tiny_model, tmp_path, capsys):
    """A folder whose content hash is not the run's model: the pages would name the wrong model."""
    import shutil

    work, summary = night
    other = tmp_path / "other"
    shutil.copytree(tiny_model.model_dir, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["threshold"] = round(cfg["threshold"] / 2, 6)  # an inference field: another model ID
    (other / "config.json").write_text(json.dumps(cfg))
    (other / "card.json").unlink()  # no recorded ID to contradict: only the run's ID can
    capsys.readouterr()
    assert cli.main(["worklist", "--workdir", str(work), "--model", str(other)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("osteo-batch: error: model ")
    assert f"but the latest run used {summary['model_id']}; pass --model" in err[0]


def test_a_store_without_a_finished_run_says_what_to_do(tmp_path, capsys):
    work = tmp_path / "w"
    with Store(work / "osteo.duckdb") as st:  # a store with its schema and no run
        st.con.execute("SELECT 1").fetchall()
    capsys.readouterr()
    assert cli.main(["worklist", "--workdir", str(work)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"osteo-batch: error: no nightly run in {work / 'osteo.duckdb'}; run `osteo-batch run` first"
