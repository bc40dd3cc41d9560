"""Header text holding terminal escapes, NULs, bells, C1 controls or bidi overrides reaches no output raw.

Whoever sends a study writes its headers. An InstitutionName of ``ESC [2J``
cleared the coordinator's terminal when ``worklist`` or ``outcomes`` printed
the site, a NUL or BEL went into the CSV for the scheduling system, and a
bidi override (Trojan Source) made a name read differently from its bytes.
Jinja's autoescape handles ``< > &``, not these. Text is cleaned where it is
made (:func:`osteo_batch.text.clean_cell`): the worklist rows, their CSV cells,
site names and so the outcomes' keys, the program report and the run page.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

import dicom_factory as df
from osteo_batch import pipeline
from osteo_batch.text import REMOVED, clean, clean_cell, csv_cell
from osteo_batch.worklist import display_name, site_of, to_csv

ESC_CLEAR = "\x1b[2J\x1b[H"
OSC_TITLE = "\x1b]0;owned\x07"
OSC_LINK = "\x1b]8;;http://evil.example/\x1b\\"
CSI_C1 = "\u009b31m"
RLO, LRI, PDI = "\u202e", "\u2066", "\u2069"

#: what no output byte stream may hold (as UTF-8), the line structure's own \n (and the CSV's \r\n) aside
FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f\u0080-\u009f\u202a-\u202e\u2066-\u2069]")


def _dirty(text: str) -> list[str]:
    return sorted({f"U+{ord(c):04X}" for c in FORBIDDEN.findall(text)})


# ---------------------------------------------------------------- the functions

def test_clean_removes_every_control_a_terminal_csv_reader_or_browser_acts_on():
    every = "".join(map(chr, range(0x00, 0xA0))) + "".join(map(chr, range(0x2000, 0x2070)))
    assert _dirty(clean(every)) == []
    assert "\n" in clean(every) and "\t" in clean(every)
    assert _dirty(clean_cell(every)) == [] and "\n" not in clean_cell(every) and "\t" not in clean_cell(every)
    assert {0x00, 0x07, 0x08, 0x0B, 0x0C, 0x0D, 0x1B, 0x7F, 0x9B, 0x202E, 0x2066, 0x2069} <= REMOVED
    assert not {0x09, 0x0A, 0x20, 0xA0} & REMOVED


@pytest.mark.parametrize("text", ["Müller^Anna", "김미영", "山田^花子=やまだ^はなこ", "O'Brien, Ann-Marie", "café\u00a0noir",
                                  "\u200d\U0001f469\u200d\U0001f52c", "<script>alert(1)</script>", ""])
def test_clean_keeps_ordinary_text_as_it_is(text):
    assert clean(text) == text and clean_cell(text) == text


def test_clean_cell_puts_one_line_in_a_cell():
    assert clean_cell("a\r\nb\tc\nd\u2028e") == "a b c d e"
    assert clean("a\r\nb\tc" + ESC_CLEAR + "d") == "a\nb\tc[2J[Hd"
    assert clean(clean_cell(OSC_TITLE)) == clean_cell(OSC_TITLE) == "]0;owned"


def test_clean_is_fast():
    s = ("Hospital " + ESC_CLEAR + RLO + "x" * 50 + "\n") * 20_000  # 1.3 MB
    t = time.perf_counter()
    clean_cell(s)
    assert time.perf_counter() - t < 0.5


def test_a_csv_cell_is_clean_and_still_guarded_against_formulas():
    assert csv_cell("\x00=HYPERLINK(\"http://x\")") == "'=HYPERLINK(\"http://x\")"
    assert csv_cell(ESC_CLEAR + "+1") == "[2J[H+1"
    assert csv_cell("\x07@SUM(A1)") == "'@SUM(A1)"
    assert csv_cell("-2" + RLO) == "'-2"
    assert csv_cell(None) == ""


def test_site_names_and_patient_names_are_clean():
    assert site_of(ESC_CLEAR + "St Mary" + RLO + "\n") == "[2J[HSt Mary"
    assert site_of("\x00\x07 \x1b") == "Unknown site"
    assert site_of("Mary\x07", {"Mary": "North\x1b[5m"}) == "North[5m"
    assert display_name("Ev\x00il^Ja\x07ne=" + RLO + "山田^花子") == "Evil, Jane (山田花子)"


def test_to_csv_rows_hold_no_control_characters():
    row = {"rank": 1, "patient_id": "P\x1b[2J", "name": "A\nB", "age": 60, "study_date": "2026-01-01",
           "accession": "\x00=1+1", "site": "S\u009b", "score_shown": "0.500", "band": "high", "last_dxa": None,
           "last_dxa_t": None, "status": "new", "status_date": ""}
    out = to_csv([row])
    assert _dirty(out.replace("\r\n", "\n")) == [] and out.count("\r\n") == 2 and "'=1+1" in out


# ---------------------------------------------------------------- real files through a real night

HOSTILE = [  # (patient_id, patient_name, accession (SH: 16 max), institution)
    ("P1" + OSC_LINK + "ID" + RLO, "Ev\x00il^Ja\x07ne", "A\x1b[31m\x00" + CSI_C1, ESC_CLEAR + "St Mary" + OSC_TITLE),
    ("P2\x07\x08\x7f", "Tro" + RLO + "jan^" + LRI + "Ann" + PDI, "B\r\nX\x0b\x0cY", "North\u009b\x00 Clinic"),
    ("P3" + ESC_CLEAR, "Plain^Rose", "C3", "\x1b[5mSt Mary" + OSC_TITLE),
]


@pytest.fixture(scope="module")
def night(cohort_dir, tiny_model, tmp_path_factory):
    import pydicom

    root = tmp_path_factory.mktemp("control-chars")
    archive = root / "archive"
    src = cohort_dir.plans[0]
    px = pydicom.dcmread(cohort_dir.archive / src.filename).pixel_array
    for i, (pid, name, acc, inst) in enumerate(HOSTILE):
        ds = df.dataset(px, sop_instance_uid=f"2.25.4242{i}", patient_id=pid, patient_name=name, accession=acc,
                        institution=inst, rows=src.rows, cols=src.cols, photometric=src.photometric,
                        study_date="20260101")
        df.write(ds, archive / f"IM{i}")
    # an untrusted study date goes, with its accession, to the study-dates CSV beside the run page
    ds = df.dataset(px, sop_instance_uid="2.25.42429", patient_id="P9", accession="D\x1b[2J\x07",
                    rows=src.rows, cols=src.cols, photometric=src.photometric, study_date="2026\x1b01")
    df.write(ds, archive / "IM9")
    s = pipeline.load_settings(None, workdir=root / "work", archive=archive, model_dir=tiny_model.model_dir,
                               threshold=0.0)  # list (and explain) everyone
    summary = pipeline.run_nightly(s, "hostile-text")
    return s, summary


def _text_of(path) -> str:
    return path.read_bytes().decode("utf-8")


def test_the_worklist_csv_and_pages_hold_no_control_characters(night):
    s, summary = night
    wl = summary["worklist"]
    assert wl["listed"] == len(HOSTILE)
    folder = s.workdir / "worklists"
    files = sorted(folder.iterdir())
    assert {f.suffix for f in files} == {".html", ".csv"} and len(files) >= 4
    for f in files:
        text = _text_of(f)
        if f.suffix == ".csv":
            assert "\r" not in text.replace("\r\n", "")
            text = text.replace("\r\n", "\n")
        assert _dirty(text) == [], (f.name, _dirty(text))
    csv = _text_of(folder / f"worklist-{summary['run_id']}.csv")
    assert csv.count("\r\n") == 1 + len(HOSTILE)  # no cell broke a line
    assert "[2J[HSt Mary]0;owned" in csv and "Evil, Jane" in csv and "Trojan, Ann" in csv
    page = _text_of(folder / f"worklist-{summary['run_id']}.html")
    assert "Evil, Jane" in page and "North Clinic" in page


def test_the_run_page_and_the_study_dates_csv_hold_no_control_characters(night):
    s, summary = night
    runs = sorted((s.workdir / "runs").iterdir())
    assert any(f.name.endswith("-study-dates.csv") for f in runs), [f.name for f in runs]
    for f in runs:
        text = _text_of(f).replace("\r\n", "\n")
        assert _dirty(text) == [], (f.name, _dirty(text))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "osteo_batch.cli", *map(str, args)], capture_output=True,
                          timeout=300)


def test_outcomes_worklist_and_report_print_no_control_characters(night):
    s, _ = night
    for args in (("outcomes",), ("worklist", "--threshold", "0"), ("report",)):
        p = _cli(*args, "--workdir", s.workdir)
        assert p.returncode == 0, (args, p.stderr.decode(errors="replace")[-2000:])
        out, err = p.stdout.decode("utf-8"), p.stderr.decode("utf-8")
        assert _dirty(out) == [] and _dirty(err) == [], (args, _dirty(out), _dirty(err))
        if args[0] == "outcomes":
            assert "[2J[HSt Mary]0;o" in out and "North Clinic" in out, out
    program = sorted((s.workdir / "program").glob("program-*.html"))
    assert program
    for f in program:
        assert _dirty(_text_of(f)) == [], f.name
    assert "North Clinic" in _text_of(program[-1])


def test_the_outcome_keys_by_site_are_clean(night):
    from osteo_batch.followup import outcomes

    s, _ = night
    with pipeline.open_store(s, read_only=True) as st:
        res = outcomes.compute(st)
    sites = [o.key for o in res.by_site]
    assert sites == sorted(["[2J[HSt Mary]0;owned", "North Clinic", "[5mSt Mary]0;owned"]), sites
