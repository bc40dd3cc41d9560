"""The exclusion windows are written once: the rules' defaults, the settings' defaults and the page agree."""

import datetime as dt

import pytest

from osteo_batch import pipeline
from osteo_batch.followup import exclusions as ex
from osteo_batch.followup.exclusions import Exclusions, exclusion_for
from osteo_batch.followup.referrals import REFERRAL_STATUSES

TODAY = dt.date(2026, 11, 25)


def test_the_defaults_are_the_module_constants():
    r = Exclusions()
    assert (r.dxa_days, r.dxa_days_near, r.near_t) == (ex.DEFAULT_DXA_DAYS, ex.DEFAULT_DXA_DAYS_NEAR, ex.DEFAULT_NEAR_T)
    assert dict(r.referral_days) == dict(ex.DEFAULT_REFERRAL_DAYS) == {
        "referred": 180, "declined": 365, "unreachable": 90, "dxa-done": 730}
    assert set(ex.DEFAULT_REFERRAL_DAYS) <= set(REFERRAL_STATUSES), "every window is for a status one can record"


def test_each_rules_object_has_its_own_windows():
    a, b = Exclusions(), Exclusions()
    a.referral_days["referred"] = 1
    assert b.referral_days["referred"] == ex.DEFAULT_REFERRED_DAYS == 180


def test_the_settings_defaults_give_the_same_rules(tmp_path):
    assert pipeline.load_settings(None, workdir=tmp_path).exclusions() == Exclusions()


def test_a_window_ends_on_its_last_day():
    at = dt.datetime.combine(TODAY - dt.timedelta(days=ex.DEFAULT_UNREACHABLE_DAYS), dt.time(9))
    assert exclusion_for({"referral_status": "unreachable", "referral_at": at}, Exclusions(), TODAY) == \
        "already_unreachable"
    assert exclusion_for({"referral_status": "unreachable", "referral_at": at - dt.timedelta(days=1)}, Exclusions(),
                         TODAY) is None
    assert Exclusions().describe()["already_unreachable"] == "unreachable within the last 90 days"


@pytest.mark.parametrize("candidate,expected", [
    ({"last_dxa_date": TODAY - dt.timedelta(days=700), "last_dxa_t_min": -1.5}, "recent_dxa"),
    ({"last_dxa_date": TODAY - dt.timedelta(days=800), "last_dxa_t_min": -1.5}, None),
    ({"last_dxa_date": TODAY - dt.timedelta(days=400), "last_dxa_t_min": -2.2}, None),  # near the line: 1 year
    ({"last_dxa_date": TODAY - dt.timedelta(days=300), "last_dxa_t_min": -2.2}, "recent_dxa"),
    ({"last_dxa_date": TODAY - dt.timedelta(days=400), "last_dxa_t_min": -2.5}, "recent_dxa"),  # osteoporosis: 2 years
    ({"known_condition": "denosumab"}, "known_osteoporosis_or_treatment"),
    ({"referral_status": "referred", "referral_at": dt.datetime(2026, 8, 1, 9)}, "already_referred"),
    ({"referral_status": "referred", "referral_at": dt.datetime(2026, 4, 1, 9)}, None),  # 238 days > 180
    ({"referral_status": "declined", "referral_at": dt.datetime(2026, 1, 5, 9)}, "already_declined"),
    ({"referral_status": "unreachable", "referral_at": dt.datetime(2026, 8, 1, 9)}, None),  # 116 days > 90
    ({"referral_status": "unreachable", "referral_at": dt.datetime(2026, 10, 1, 9)}, "already_unreachable"),
    ({"referral_status": "dxa-done", "referral_at": dt.datetime(2026, 3, 1, 9)}, "dxa_done"),
    ({"referral_status": "contacted", "referral_at": dt.datetime(2026, 11, 20, 9)}, None),  # in progress: listed
    ({}, None),
])
def test_exclusion_rules(candidate, expected):
    assert exclusion_for(candidate, Exclusions(), TODAY) == expected


def test_exclusion_windows_are_configurable(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[worklist]\ndxa_lookback_days = 365\nunreachable_days = 200\nknown_conditions = "known.csv"\n'
                   '[sites]\n"Seoul Demo Hospital" = "Seoul"\n')
    s = pipeline.load_settings(cfg, workdir=tmp_path)
    rules = s.exclusions()
    assert rules.dxa_days == 365 and rules.referral_days["unreachable"] == 200
    assert s.known_conditions_csv == tmp_path / "known.csv" and s.sites == {"Seoul Demo Hospital": "Seoul"}
    assert exclusion_for({"last_dxa_date": TODAY - dt.timedelta(days=500), "last_dxa_t_min": -1.5}, rules, TODAY) is None
    cfg.write_text("[worklist]\nreferal_days = 3\n")
    with pytest.raises(pipeline.SettingsError, match="unknown \\[worklist\\] key 'referal_days'"):
        pipeline.load_settings(cfg, workdir=tmp_path)
