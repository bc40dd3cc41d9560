"""``osteo-batch estimate`` as a user runs it: the table, the store's row, and no scores or heat maps left behind."""

from __future__ import annotations

import json

import pytest
from cli_run import cli

from osteo_batch.store import Store

pytestmark = pytest.mark.slow  # two CLI runs, each loading torch and the model: about 40 s on 2 cores


def _phi(cohort_dir) -> set[str]:
    return {v for p in cohort_dir.plans for v in (p.patient_id, p.patient_name, p.accession, p.birth_date) if v}


def test_estimate_prints_its_table_records_it_and_writes_no_scores(tmp_path, cohort_dir, tiny_model):
    work = tmp_path / "work"
    args = ["estimate", "--archive", cohort_dir.archive, "--workdir", work, "--model", tiny_model.model_dir,
            "--workers", "0", "--batch-size", "4", "--sample", "12", "--heatmaps", "4", "--window-hours", "6",
            "--cores", "8", "--shards", "3"]
    p = cli(*args)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout
    assert "\nwhat if\n" in out
    for label in ("backlog", "sample", "scoring", "heat maps", "per core", "wall time", "disk", "spool", "nights",
                  "8 cores", "3 Ray shards", "one GPU"):
        assert f"\n  {label}" in out, f"no {label!r} line in:\n{out}"
    assert "12 images (seed 0)" in out and "at a window of 6 h a night" in out
    assert "one NVIDIA H100 80GB" in out and "1,486" in out, "the GPU figure is quoted with its machine"
    assert "none (a folder is read in place)" in out
    # no patient data, no archive path, anywhere the command wrote
    text = out + p.stderr
    assert not [v for v in _phi(cohort_dir) if v in text] and str(cohort_dir.archive) not in text

    with Store(work / "osteo.duckdb", read_only=True) as st:
        cols = [d[0] for d in st.con.execute("SELECT * FROM estimates").description]
        rows = [dict(zip(cols, r)) for r in st.con.execute("SELECT * FROM estimates").fetchall()]
        pending = st.con.execute("SELECT count(*) FROM instances WHERE status = 'pending'").fetchall()[0][0]
        runs = st.con.execute("SELECT run_id, kind, status FROM runs").fetchall()
        assert st.scalar("count_scores") == 0, "an estimate writes no scores"
        assert st.con.execute("SELECT count(*) FROM explanations").fetchall()[0][0] == 0
    assert len(rows) == 1
    r = rows[0]
    assert r["backlog"] == pending > 12 and r["sample_size"] == 12 and r["source_kind"] == "folder"
    assert r["model_id"] == tiny_model.model_id and r["cores"] >= 1 and r["cpu_capability"]
    assert r["steady_ips"] > 0 and r["heatmap_s"] > 0 and 0 <= r["flagged_fraction"] <= 1
    assert r["decode_core_ips"] > 0 and r["model_core_ips"] > 0
    assert r["predicted_s"] == pytest.approx(r["score_s"] + r["explain_s"]) and r["predicted_s"] > 0
    assert r["window_hours"] == 6 and r["nights"] == 1 and r["spool_bytes"] is None
    assert r["store_bytes"] > 0 and r["parts_bytes"] > 0
    assert [w["kind"] for w in json.loads(r["what_if"])] == ["cores", "shards", "gpu"]
    assert runs == [(r["run_id"], "sweep", "finished")], "the estimate's sweep is a sweep run of its own"
    assert f"run {r['run_id']}" in out
    # the sample's parts, heat maps and temporary folder are gone
    assert not (work / "scores").exists() and not (work / "heatmaps").exists()
    assert not list(work.glob("estimate-tmp-*"))

    j = cli(*args, "--json", "--seed", "3")
    assert j.returncode == 0, j.stderr[-3000:]
    d = json.loads(j.stdout)
    assert d["backlog"] == pending and d["sample"]["images"] == 12 and d["seed"] == 3
    assert d["predicted"]["predicted_s"] > 0 and d["disk"]["parts_bytes"] > 0
    assert [w["kind"] for w in d["what_if"]] == ["cores", "shards", "gpu"] and d["window_hours"] == 6
    with Store(work / "osteo.duckdb", read_only=True) as st:
        assert st.con.execute("SELECT count(*) FROM estimates").fetchall()[0][0] == 2
        assert st.scalar("count_scores") == 0


def test_estimate_refuses_a_missing_model_in_one_line(tmp_path, cohort_dir):
    from cli_run import one_line_error

    line = one_line_error(cli("estimate", "--archive", cohort_dir.archive, "--workdir", tmp_path / "w"))
    assert "no model given" in line
    assert not (tmp_path / "w" / "osteo.duckdb").exists(), "nothing swept before the model is checked"
