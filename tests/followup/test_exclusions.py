"""The exclusion windows are written once: the rules' defaults, the settings' defaults and the page agree."""

import datetime as dt

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
    from osteo_batch import pipeline

    assert pipeline.load_settings(None, workdir=tmp_path).exclusions() == Exclusions()


def test_a_window_ends_on_its_last_day():
    at = dt.datetime.combine(TODAY - dt.timedelta(days=ex.DEFAULT_UNREACHABLE_DAYS), dt.time(9))
    assert exclusion_for({"referral_status": "unreachable", "referral_at": at}, Exclusions(), TODAY) == \
        "already_unreachable"
    assert exclusion_for({"referral_status": "unreachable", "referral_at": at - dt.timedelta(days=1)}, Exclusions(),
                         TODAY) is None
    assert Exclusions().describe()["already_unreachable"] == "unreachable within the last 90 days"
