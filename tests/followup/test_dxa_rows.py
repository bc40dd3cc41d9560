"""A DXA row's rejection reason comes from the kind of problem, never from the wording of a message."""

import datetime as dt

import pytest

from osteo_batch.errors import UserError
from osteo_batch.followup import conditions, dxa
from osteo_batch.followup.dxa import (BadExamDate, BadTScore, DxaFileError, MissingPatientId, NoTScore,
                                      ROW_REJECTIONS, parse_dxa_csv, parse_dxa_row)

HEADER = "patient_id,exam_date,t_lumbar_spine,t_femoral_neck,t_total_hip\n"


def _row(**kw):
    r = {"patient_id": "P1", "exam_date": "2025-01-02", "t_lumbar_spine": "-2.6", "t_femoral_neck": "",
         "t_total_hip": ""}
    r.update(kw)
    return r


@pytest.mark.parametrize("row, error", [
    (_row(patient_id="  "), MissingPatientId),
    (_row(exam_date="02/01/2025"), BadExamDate),
    (_row(exam_date=""), BadExamDate),
    (_row(t_lumbar_spine="abc"), BadTScore),
    (_row(t_lumbar_spine="-12"), BadTScore),
    (_row(t_lumbar_spine="nan"), BadTScore),
    (_row(t_lumbar_spine="inf"), BadTScore),
    (_row(t_lumbar_spine=""), NoTScore),
    # words that a message-matching parser read as another problem: a T-score is a T-score
    (_row(t_lumbar_spine="date"), BadTScore),
    (_row(t_lumbar_spine="update"), BadTScore),
    (_row(t_femoral_neck="patient_id"), BadTScore),
])
def test_each_problem_is_its_own_type(row, error):
    with pytest.raises(error) as e:
        parse_dxa_row(row)
    assert type(e.value) is error
    cells = {v for v in row.values() if v.strip() and v not in ("P1", "2025-01-02", "-2.6")}
    assert not any(v in e.value.message for v in cells), "a message holds no cell content"


def test_the_stored_codes_are_the_ones_stored_before():
    assert (MissingPatientId.code, BadExamDate.code, BadTScore.code, NoTScore.code) == (
        "missing_patient_id", "bad_date", "bad_value", "no_t_score")
    assert set(ROW_REJECTIONS) == {"missing_patient_id", "bad_date", "bad_value", "no_t_score"}
    assert all(issubclass(c, (UserError, ValueError)) for c in (MissingPatientId, BadExamDate, BadTScore, NoTScore))


def test_a_t_score_typed_as_a_word_is_a_bad_value_in_the_file(tmp_path):
    f = tmp_path / "dxa.csv"
    f.write_text(HEADER + "P1,2025-01-02,date,,\nP2,2025-01-02,,patient_id,\nP3,2025-01-02,-1.0,,\n")
    parsed = parse_dxa_csv(f)
    assert parsed.rejected == [(2, "bad_value"), (3, "bad_value")]
    assert [r["patient_id"] for r in parsed.rows] == ["P3"]


def test_a_good_row_is_parsed_as_before():
    assert parse_dxa_row(_row(t_total_hip=" 0.5 ")) == {
        "patient_id": "P1", "exam_date": dt.date(2025, 1, 2), "t_lumbar_spine": -2.6,
        "t_femoral_neck": None, "t_total_hip": 0.5}


@pytest.mark.parametrize("content, code, match", [
    (None, "table_not_found", "DXA table .* not found"),
    ("patient_id,date\nP1,2025-01-01\n", "table_columns_missing", "missing column.*exam_date"),
    (b"\xff\xfe" + HEADER.encode("utf-16-le"), "table_not_utf8", "not UTF-8 text; save it as UTF-8 CSV"),
    (HEADER + '"' + "x" * 200_000 + '",2025-01-02,-1,,\n', "table_not_csv", "not a readable CSV"),  # past csv's field limit
])
def test_a_file_that_cannot_be_used_is_a_user_error_with_its_code(tmp_path, content, code, match):
    f = tmp_path / "dxa.csv"
    if isinstance(content, bytes):
        f.write_bytes(content)
    elif content is not None:
        f.write_text(content)
    with pytest.raises(DxaFileError, match=match) as e:
        parse_dxa_csv(f)
    assert isinstance(e.value, UserError) and isinstance(e.value, ValueError)
    assert e.value.code == code


def test_the_known_conditions_table_uses_the_same_file_errors(tmp_path):
    f = tmp_path / "kc.csv"
    f.write_text("patient_id\nP1\n")
    with pytest.raises(DxaFileError, match="known-conditions table kc.csv: missing column.*condition") as e:
        conditions.parse_conditions_csv(f)
    assert e.value.code == "table_columns_missing"
    assert dxa.DxaFileError.code == "table_unusable"
