import datetime as dt

import pytest

from osteo_batch.followup.dxa import DxaFileError, load_dxa, parse_dxa_csv
from osteo_batch.store import Store


def test_bad_rows_are_recorded_with_reasons_not_dropped(tmp_path):
    f = tmp_path / "dxa.csv"
    f.write_text(
        "patient_id,exam_date,t_lumbar_spine,t_femoral_neck,t_total_hip\n"
        "P1,2025-01-02,-2.6,-2.0,\n"
        "P2,02/01/2025,-1.0,-1.0,-1.0\n"
        ",2025-01-02,-1.0,,\n"
        "P3,2025-01-02,abc,,\n"
        "P4,2025-01-02,,,\n"
        "P5,2025-01-03,-12,,\n"
    )
    parsed = parse_dxa_csv(f)
    assert [r["patient_id"] for r in parsed.rows] == ["P1"]
    assert parsed.rows[0]["exam_date"] == dt.date(2025, 1, 2) and parsed.rows[0]["t_total_hip"] is None
    assert parsed.rejected == [(3, "bad_date"), (4, "missing_patient_id"), (5, "bad_value"), (6, "no_t_score"), (7, "bad_value")]


def test_missing_column_is_a_clear_error(tmp_path):
    f = tmp_path / "dxa.csv"
    f.write_text("patient_id,date,t_lumbar_spine\nP1,2025-01-01,-1\n")
    with pytest.raises(DxaFileError, match="missing column.*exam_date"):
        parse_dxa_csv(f)


def test_loading_twice_keeps_one_row_per_exam(tmp_path):
    f = tmp_path / "dxa.csv"
    f.write_text("patient_id,exam_date,t_lumbar_spine,t_femoral_neck,t_total_hip\nP1,2025-01-02,-2.6,,\nP1,2025-06-02,-2.7,,\n")
    with Store(tmp_path / "s.duckdb") as st:
        load_dxa(st, f)
        load_dxa(st, f)
        n = st.con.execute("SELECT count(*) FROM dxa").fetchall()[0][0]
    assert n == 2
