"""``osteo-batch run`` through Prefect: the whole typed configuration goes to the flow as one parameter."""

from __future__ import annotations

import pytest

from osteo_batch import cli
from osteo_batch.store import Store


@pytest.mark.slow
def test_run_hands_the_flow_its_settings(tmp_path, cohort_dir, tiny_model, prefect_server, capsys):
    """A [run] value only the config file sets (commit_every) and a flag (--batch-size) reach the score stage."""
    cfg = tmp_path / "site.toml"
    cfg.write_text("[run]\ncommit_every = 1\n")
    work = tmp_path / "work"
    capsys.readouterr()
    rc = cli.main(["run", "--archive", str(cohort_dir.archive), "--workdir", str(work), "--model",
                   str(tiny_model.model_dir), "--dxa", str(cohort_dir.dxa_csv), "--config", str(cfg), "--workers", "1",
                   "--batch-size", "4"])
    out = capsys.readouterr().out
    assert rc == 0, out
    run_line = next(ln for ln in out.splitlines() if ln.startswith("run "))
    scored = int(run_line.split(" scored tonight")[0].rsplit(" ", 1)[1])
    parts = list((work / "scores").rglob("*.parquet"))
    assert scored > 4 and len(parts) >= scored // 4, "a part file per batch of 4: commit_every and batch_size arrived"
    with Store(work / "osteo.duckdb", read_only=True) as st:
        assert st.scalar("count_scores") == scored
    assert "worklist: " in out
