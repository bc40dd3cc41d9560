"""A rule's regex costs time linear in the header value, whatever the pattern.

Python's ``re`` backtracks: ``(x+x+)+y`` against 27 ``x`` took about 9 s, for
every file, every time the rules change. Rules are matched with RE2, which
never backtracks; a pattern RE2 cannot run in linear time (backreferences,
lookarounds) is refused when the rules are loaded, in one line that names the
rule and the condition.
"""

from __future__ import annotations

import time

import pytest

import dicom_factory as df
from osteo_batch import pipeline
from osteo_batch.archive.eligibility import RuleError, load_rules, parse_rules
from osteo_batch.store import Store

EVIL = r"(x+x+)+y"


def _rules(regex: str, keyword: str = "InstitutionName"):
    return parse_rules({"rule": [{"name": "r", "condition": [{"name": "inst", "keyword": keyword, "regex": regex}]}]},
                       "test.toml")


@pytest.mark.parametrize("n", [27, 64, 10_000, 1_000_000])
def test_a_catastrophic_pattern_is_answered_in_milliseconds(n):
    rules = _rules(EVIL)
    t = time.perf_counter()
    assert rules.reason({"InstitutionName": "x" * n}, {}) == "ineligible:inst"
    assert time.perf_counter() - t < 0.2  # Python's re: about 9 s at n = 27, doubling with each x
    assert rules.reason({"InstitutionName": "x" * n + "y"}, {}) is None


@pytest.mark.parametrize("regex,value,matches", [
    ("CR|DX", "CR", True), ("CR|DX", "DX", True), ("CR|DX", "CRX", False), ("CR|DX", "XCR", False),
    ("(?i)CHEST|THORAX", "chest", True), ("(?i)CHEST|THORAX", "THORAX", True), ("(?i)CHEST|THORAX", "CHESTX", False),
    (r"\d{4}", "2026", True), (r"\d{4}", "20261", False), ("A.*", "A\nB", False), ("(?s)A.*", "A\nB", True),
    ("é+", "éé", True), ("PA|AP", "", False),
])
def test_the_whole_value_must_match(regex, value, matches):
    assert (_rules(regex, "ViewPosition").reason({"ViewPosition": value}, {}) is None) is matches


@pytest.mark.parametrize("regex,why", [
    (r"(a)\1", "backreference"), (r"(?P<n>a)(?P=n)", "backreference"), (r"a(?=b)", "lookaround"),
    (r"a(?!b)", "lookaround"), (r"(?<=a)b", "lookaround"), (r"(?<!a)b", "lookaround"), ("(", "bad regex"),
    ("a{2000}", "bad regex"), (r"(?>a)", "bad regex"),
])
def test_a_pattern_that_needs_backtracking_is_refused_when_the_rules_load(regex, why, capfd):
    with pytest.raises(RuleError) as e:
        _rules(regex)
    msg = str(e.value)
    assert "\n" not in msg and "rule 'r', condition 'inst'" in msg and why in msg, msg
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # RE2 logs parse errors to stderr unless told not to


def test_a_non_text_regex_is_refused():
    with pytest.raises(RuleError, match="regex must be text"):
        _rules(5)  # type: ignore[arg-type]


def test_the_shipped_rules_still_load_and_judge():
    ok = {"Modality": "DX", "BodyPartExamined": "chest", "ViewPosition": "PA", "PatientSex": "F"}
    assert load_rules().reason(ok, {"age": 60}) is None
    assert load_rules().reason({**ok, "BodyPartExamined": "CHEST WALL"}, {"age": 60}) == "ineligible:body_part"


def test_a_sweep_with_a_catastrophic_rule_over_real_files_is_fast(tmp_path):
    archive = tmp_path / "archive"
    n = 6
    for i in range(n):
        ds = df.dataset(rows=8, cols=8, sop_instance_uid=f"2.25.{7000 + i}", patient_id=f"P{i}",
                        institution="x" * 26 + ("y" if i == 0 else ""))
        df.write(ds, archive / f"IM{i}")
    cfg = tmp_path / "rules.toml"
    cfg.write_text(f'[[rule]]\nname = "r"\n  [[rule.condition]]\n  name = "inst"\n  keyword = "InstitutionName"\n'
                   f"  regex = '{EVIL}'\n")
    s = pipeline.load_settings(cfg, workdir=tmp_path / "w", archive=archive, workers=1)
    t = time.perf_counter()
    pipeline.sweep_stage(pipeline.RunContext.for_index(s, "r1"))
    took = time.perf_counter() - t
    with Store(s.store_path, read_only=True) as st:
        got = dict(st.con.execute("SELECT reason, count(*) FROM instances GROUP BY reason").fetchall())
    assert got == {"awaiting_score": 1, "ineligible:inst": n - 1}, got
    assert took < 5, took  # Python's re: about 2.5 s a file here
