"""A coordinator's action: refused with a code when it cannot be one, and queued whole or not at all."""

import json
import os

import pytest

from osteo_batch.errors import UserError
from osteo_batch.followup import referrals
from osteo_batch.followup.referrals import REFERRAL_STATUSES, ReferralError, flush_queue, new_referral, queue, queued
from osteo_batch.store import Store


@pytest.fixture(autouse=True)
def _own_state_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


@pytest.mark.parametrize("pid, status, code, match", [
    ("  ", "referred", "empty_patient_id", "patient ID is empty"),
    ("P1", "phoned", "unknown_referral_status", "status 'phoned' is not one of contacted, referred"),
])
def test_an_action_that_cannot_be_one_is_a_user_error_with_its_code(pid, status, code, match):
    with pytest.raises(ReferralError, match=match) as e:
        new_referral(pid, status, by_user="c")
    assert isinstance(e.value, UserError) and isinstance(e.value, ValueError) and e.value.code == code


def test_no_store_is_a_user_error(tmp_path):
    with pytest.raises(ReferralError, match="pass the --workdir of the nightly runs") as e:
        referrals.refer(tmp_path / "osteo.duckdb", new_referral("P1", "referred", by_user="c"), wait_s=0)
    assert e.value.code == "no_store"


def test_the_statuses_are_the_ones_the_store_has_always_held():
    assert REFERRAL_STATUSES == ("contacted", "referred", "declined", "unreachable", "dxa-done")


def test_a_queued_action_is_one_private_file_and_nothing_else(tmp_path):
    ev = new_referral("P1", "contacted", "left a message", by_user="c")
    f = queue(tmp_path / "work", ev)
    assert f.parent == tmp_path / "work" / "referral-queue" and f.name.endswith(f"-{ev.event_id}.json")
    assert oct(f.stat().st_mode & 0o777) == "0o600" and oct(f.parent.stat().st_mode & 0o777) == "0o700"
    assert os.listdir(f.parent) == [f.name], "no temporary file left beside it"
    assert json.loads(f.read_text()) == ev.__dict__


def test_a_file_still_being_written_is_neither_read_nor_set_aside(tmp_path):
    work = tmp_path / "work"
    with Store(work / "osteo.duckdb"):
        pass
    done = queue(work, new_referral("P1", "referred", by_user="c"))
    writing = done.parent / ".tmp-k3j2h1.json"  # how outputs.write_private names a file before its rename
    writing.write_text('{"event_id": "e", "patient_id": "P2", ')
    assert queued(work) == [done]
    with Store(work / "osteo.duckdb") as st:
        out = flush_queue(st, work)
        assert out.recorded == 1 and out.set_aside == 0
        assert st.con.execute("SELECT patient_id FROM referrals").fetchall() == [("P1",)]
    assert writing.exists() and not done.exists() and not (done.parent / "quarantine").exists()
