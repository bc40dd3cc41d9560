import pytest

from osteo_batch.archive.eligibility import RuleError, load_rules, parse_rules

OK = {"Modality": "DX", "BodyPartExamined": "CHEST", "ViewPosition": "PA", "PatientSex": "F"}


def test_defaults_accept_a_woman_of_50_with_a_frontal_chest_film():
    rules = load_rules()
    assert rules.reason(OK, {"age": 50}) is None
    assert rules.reason({**OK, "ViewPosition": "AP"}, {"age": 80}) is None


@pytest.mark.parametrize(
    "change,age,reason",
    [
        ({"Modality": "MG"}, 60, "ineligible:modality"),
        ({"BodyPartExamined": "KNEE"}, 60, "ineligible:body_part"),
        ({"ViewPosition": "LL"}, 60, "ineligible:view"),
        ({"PatientSex": "M"}, 60, "ineligible:sex"),
        ({}, 49, "ineligible:age"),
        ({}, None, "ineligible:age"),
    ],
)
def test_each_default_rule_is_named_in_the_reason(change, age, reason):
    assert load_rules().reason({**OK, **change}, {"age": age}) == reason


def test_missing_tag_fails_its_condition():
    h = dict(OK)
    del h["ViewPosition"]
    assert load_rules().reason(h, {"age": 70}) == "ineligible:view"


def test_rules_from_a_config_file_or_across_rules(tmp_path):
    f = tmp_path / "site.toml"
    f.write_text(
        """
[[rule]]
name = "women_65"
  [[rule.condition]]
  name = "sex"
  keyword = "PatientSex"
  equals = "F"
  [[rule.condition]]
  name = "age65"
  field = "age"
  min = 65
[[rule]]
name = "men_70"
  [[rule.condition]]
  name = "male"
  keyword = "PatientSex"
  equals = "M"
  [[rule.condition]]
  name = "age70"
  field = "age"
  min = 70
"""
    )
    rules = load_rules(f)
    assert rules.reason({"PatientSex": "F"}, {"age": 66}) is None
    assert rules.reason({"PatientSex": "M"}, {"age": 72}) is None
    assert rules.reason({"PatientSex": "F"}, {"age": 60}) == "ineligible:age65|male"


@pytest.mark.parametrize(
    "cond,match",
    [
        ({"name": "x", "keyword": "PatientSx", "equals": "F"}, "not a DICOM keyword"),
        ({"name": "x", "keyword": "PatientSex"}, "needs one of"),
        ({"keyword": "PatientSex", "equals": "F"}, "needs a name"),
        ({"name": "x", "field": "bmi", "min": 1}, "unknown field"),
        ({"name": "x", "keyword": "PatientSex", "regex": "("}, "bad regex"),
        ({"name": "x", "keyword": "PatientSex", "equal": "F"}, "unknown key"),
    ],
)
def test_bad_rules_say_what_is_wrong(cond, match):
    with pytest.raises(RuleError, match=match):
        parse_rules({"rule": [{"name": "r", "condition": [cond]}]}, "test.toml")
