"""The command-line contract: names, help, one-line errors, exit codes."""

import re
import shutil
import subprocess
import sys
from pathlib import Path


from osteo_batch.store import Store

from cli_run import EXE, cli, one_line_error  # noqa: F401


def test_help_reads_well():
    p = cli("--help")
    assert p.returncode == 0
    cmds = ("demo", "sweep", "run", "worklist", "train", "serve", "refer", "outcomes", "report", "deploy-shards")
    for cmd in cmds:
        assert cmd in p.stdout
    assert "DXA confirms" in p.stdout
    for cmd in cmds:
        assert cli(cmd, "--help").returncode == 0


def test_wrong_flag_and_missing_paths_are_one_line_errors(tmp_path):
    assert "unrecognized arguments: --bogus" in one_line_error(cli("sweep", "--archive", tmp_path, "--bogus"))
    assert "no such directory" in one_line_error(cli("sweep", "--archive", tmp_path / "nope"))
    assert "required" in one_line_error(cli("run"))
    assert "between 0 and 1" in one_line_error(cli("worklist", "--threshold", "2"))
    msg = one_line_error(cli("run", "--archive", tmp_path, "--workdir", tmp_path / "w"))
    assert "--model" in msg
    assert "no store" in one_line_error(cli("worklist", "--workdir", tmp_path / "w2"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[run]\nbatchsize = 3\n")
    assert "unknown [run] key 'batchsize'" in one_line_error(cli("sweep", "--archive", tmp_path, "--config", bad, "--workdir", tmp_path / "w3"))


def test_sweep_run_and_worklist_threshold_zero(tmp_path, cohort_dir, tiny_model):
    archive = tmp_path / "archive"
    shutil.copytree(cohort_dir.archive, archive)
    work = tmp_path / "work"
    p = cli("sweep", "--archive", archive, "--workdir", work)
    assert p.returncode == 0, p.stderr
    assert "awaiting_score" in p.stdout
    with Store(work / "osteo.duckdb", read_only=True) as st:
        assert st.con.execute("SELECT count(*) FROM instances WHERE status='pending'").fetchall()[0][0] > 0

    p = cli("run", "--archive", archive, "--workdir", work, "--model", tiny_model.model_dir, "--dxa", cohort_dir.dxa_csv,
            "--no-prefect")
    assert p.returncode == 0, p.stderr
    assert "worklist:" in p.stdout

    p = cli("worklist", "--workdir", work, "--threshold", "0")
    assert p.returncode == 0, p.stderr
    with Store(work / "osteo.duckdb", read_only=True) as st:
        expected = st.con.execute("""
            WITH latest AS (
              SELECT patient_id, study_date FROM instances WHERE status = 'scored'
              QUALIFY row_number() OVER (PARTITION BY patient_id ORDER BY study_date DESC) = 1)
            SELECT count(*) FROM latest l
            WHERE NOT EXISTS (  -- the last DXA: 2 years, or 1 if its lowest T-score was -2.49 to -2.0
              SELECT 1 FROM (SELECT max_by(least(t_lumbar_spine, t_femoral_neck, t_total_hip), exam_date) AS t,
                                    max(exam_date) AS d
                             FROM dxa WHERE patient_id = l.patient_id AND exam_date <= current_date) x
              WHERE x.d >= current_date - CASE WHEN x.t BETWEEN -2.49 AND -2.0 THEN 365 ELSE 730 END)
        """).fetchall()[0][0]
    assert f"{expected} patients at or above 0.0000" in p.stdout
    path = Path(next(ln for ln in p.stdout.splitlines() if ln.startswith("worklist: ")).split("worklist: ")[1])
    assert path.name.endswith("-threshold-0.0000.html") and path.is_file()
    assert path.read_text().count('data-score="') == expected


def test_worklist_waits_for_a_held_store_then_says_so(tmp_path):
    work = tmp_path / "w"
    with Store(work / "osteo.duckdb") as st:
        st.con.execute("SELECT 1").fetchall()
        # a nightly run holds the store for writing
        p = cli("worklist", "--workdir", work, "--wait", "1")
    assert "in use by another process" in one_line_error(p)


def test_bad_values_in_config_and_workdir_are_one_line_errors(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[run]\nworkers = "four"\n')
    assert "must be a whole number >= 0" in one_line_error(cli("sweep", "--archive", tmp_path, "--config", cfg, "--workdir", tmp_path / "w"))
    cfg.write_text('[[rule]]\nname = "r"\n  [[rule.condition]]\n  name = "age"\n  field = "age"\n  min = "fifty"\n')
    assert "must be a number" in one_line_error(cli("sweep", "--archive", tmp_path, "--config", cfg, "--workdir", tmp_path / "w"))
    afile = tmp_path / "a-file"
    afile.write_text("x")
    assert "not a folder" in one_line_error(cli("sweep", "--archive", tmp_path, "--workdir", afile))


def test_a_dxa_table_with_wrong_columns_stops_before_the_flow(tmp_path, tiny_model):
    bad = tmp_path / "dxa.csv"
    bad.write_text("id,date\n1,2020-01-01\n")
    msg = one_line_error(cli("run", "--archive", tmp_path, "--workdir", tmp_path / "w", "--model", tiny_model.model_dir,
                             "--dxa", bad))
    assert "missing column" in msg


def test_calibrate_writes_a_new_model_version(tmp_path, cohort_dir, tiny_model):
    out = tmp_path / "v2"
    p = cli("calibrate", "--model", tiny_model.model_dir, "--archive", cohort_dir.archive, "--dxa", cohort_dir.dxa_csv,
            "--workdir", tmp_path / "w", "--method", "platt", "--out", out)
    assert p.returncode == 0, p.stderr
    assert f"-> {out.resolve()}" in p.stdout and "ECE" in p.stdout
    import json

    card = json.loads((out / "card.json").read_text())
    assert card["history"][-1]["event"] == "recalibrated"
    assert card["history"][-1]["from_model_id"] == tiny_model.model_id


def test_train_label_sites_are_checked(tmp_path, cohort_dir):
    p = cli("train", "--archive", cohort_dir.archive, "--dxa", cohort_dir.dxa_csv, "--out", tmp_path / "m",
            "--workdir", tmp_path / "w", "--label-sites", "t_wrist", "--epochs", "1")
    assert "label sites ['t_wrist']" in one_line_error(p)
