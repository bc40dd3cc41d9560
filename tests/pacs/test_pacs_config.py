"""``--pacs URL`` and the ``[pacs]`` / ``[results]`` tables: parsed, checked, one source only, one-line errors."""

from __future__ import annotations

import datetime as dt

import pytest

from cli_run import cli, one_line_error
from osteo_batch.pacs.config import PacsConfigError, PacsSettings, parse_pacs_url
from osteo_batch.pacs.query import Filters, date_windows, filters_from_rules, tonight_range
from osteo_batch.archive.eligibility import load_rules, parse_rules
from osteo_batch.errors import UserError
from osteo_batch.settings import Settings, load_settings


@pytest.mark.parametrize("url, protocol, display", [
    ("http://pacs:8042/dicom-web", "dicomweb", "http://pacs:8042/dicom-web"),
    ("https://pacs.example.org/dicom-web/", "dicomweb", "https://pacs.example.org/dicom-web"),
    ("dimse://PACS_AE@10.0.0.5:104", "dimse", "dimse://PACS_AE@10.0.0.5:104"),
])
def test_urls(url, protocol, display):
    u = parse_pacs_url(url)
    assert u.protocol == protocol and u.display == display


@pytest.mark.parametrize("url", [
    "", "ftp://pacs/x", "http://user:secret@pacs:8042/dicom-web", "dimse://pacs:104", "dimse://AE@pacs",
    "dimse://AE@pacs:104/path", "http://:8042/x", "http://pacs:99999/x", "dimse://" + "A" * 17 + "@h:104",
    "http://pacs/dicom-web?x=1",
])
def test_bad_urls_say_how_to_write_one(url):
    with pytest.raises(PacsConfigError) as e:
        parse_pacs_url(url)
    assert "secret" not in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("kw", [{"window_days": 0}, {"query_limit": 1}, {"parallel": 0}, {"spool_max": True},
                                {"timeout_s": 0}, {"hours": "25:00-06:00"}, {"hours": "06:00-06:00"},
                                {"calling_aet": ""}, {"calling_aet": "A\\B"}, {"result_limit": 0},
                                {"credentials_env": "1BAD"}, {"since": "2024-01-01"}])
def test_bad_values_are_refused(kw):
    with pytest.raises(PacsConfigError):
        PacsSettings("http://pacs/dicom-web", **kw)


def test_hours_may_wrap_midnight():
    p = PacsSettings("http://pacs/dicom-web", hours="20:00-06:00")
    assert p.may_query(dt.datetime(2026, 1, 1, 23, 0)) and p.may_query(dt.datetime(2026, 1, 1, 5, 59))
    assert not p.may_query(dt.datetime(2026, 1, 1, 12, 0))


def test_config_file_source_and_flags(tmp_path):
    cfg = tmp_path / "osteo.toml"
    cfg.write_text('[pacs]\nurl = "dimse://PACS@127.0.0.1:104"\nsince = 2024-01-01\nparallel = 2\n'
                   'credentials_file = "pacs.cred"\n[results]\nsend = true\nfhir_system = "urn:oid:1.2.3"\n')
    s = load_settings(cfg, workdir=tmp_path / "w")
    assert s.pacs.since == dt.date(2024, 1, 1) and s.pacs.parallel == 2 and s.archive is None
    assert s.pacs.credentials_file == str(tmp_path / "pacs.cred")  # relative to the config file
    assert s.send_results and s.fhir_system == "urn:oid:1.2.3"
    assert Settings.from_json(s.to_json()) == s  # travels to shard processes and Prefect intact
    # a flag wins over the file: --archive drops the file's PACS, --pacs keeps its other keys
    s2 = load_settings(cfg, workdir=tmp_path / "w", archive=tmp_path)
    assert s2.pacs is None and s2.archive == tmp_path
    s3 = load_settings(cfg, workdir=tmp_path / "w", pacs_url="http://other/dicom-web")
    assert s3.pacs.url == "http://other/dicom-web" and s3.pacs.parallel == 2
    with pytest.raises(UserError, match="not both"):
        load_settings(None, workdir=tmp_path / "w", archive=tmp_path, pacs_url="http://other/dicom-web")
    cfg.write_text('[archive]\npath = "."\n[pacs]\nurl = "http://p/dicom-web"\n')
    with pytest.raises(UserError, match="keep one"):
        load_settings(cfg, workdir=tmp_path / "w")
    cfg.write_text('[pacs]\nurl = "http://p/dicom-web"\nbogus = 1\n')
    with pytest.raises(PacsConfigError, match="bogus"):
        load_settings(cfg, workdir=tmp_path / "w")


def test_cli_one_source_and_one_line_errors(tmp_path):
    assert "not allowed with argument" in one_line_error(
        cli("sweep", "--archive", tmp_path, "--pacs", "http://p/dicom-web", "--workdir", tmp_path / "w"))
    line = one_line_error(cli("sweep", "--pacs", "http://u:hunter2@p/dicom-web", "--workdir", tmp_path / "w"))
    assert "hunter2" not in line and "credentials" in line
    assert "YYYY-MM-DD" in one_line_error(cli("sweep", "--pacs", "http://p/x", "--since", "2024-13-01",
                                              "--workdir", tmp_path / "w"))
    assert "--pacs" in one_line_error(cli("sweep", "--archive", tmp_path, "--since", "2024-01-01",
                                          "--workdir", tmp_path / "w"))


def test_filters_come_from_the_rules():
    assert filters_from_rules(load_rules()) == Filters(("CR", "DX"), "F")
    rules = parse_rules({"rule": [
        {"name": "a", "condition": [{"name": "m", "keyword": "Modality", "in": ["CR"]},
                                    {"name": "s", "keyword": "PatientSex", "equals": "F"}]},
        {"name": "b", "condition": [{"name": "m", "keyword": "Modality", "equals": "DX"}]},
    ]}, "test")
    assert filters_from_rules(rules) == Filters(("CR", "DX"), None)  # rule b takes any sex: no sex filter
    rules = parse_rules({"rule": [{"name": "a", "condition": [{"name": "age", "field": "age", "min": 50}]}]}, "t")
    assert filters_from_rules(rules) == Filters(None, None)  # any modality: ask for everything


def test_tonight_range_and_windows():
    today = dt.date(2026, 12, 1)
    assert tonight_range(today, None, None, 2, 30) is None
    assert tonight_range(today, None, dt.date(2024, 1, 1), 2, 30) == (dt.date(2024, 1, 1), today)
    assert tonight_range(today, today, None, 2, 30) == (dt.date(2026, 11, 1), today)
    assert tonight_range(today, dt.date(2026, 1, 1), None, 2, 30) == (dt.date(2025, 12, 30), today)
    # a --since left in the nightly command: no re-asking of the backlog; an earlier one reaches back
    assert tonight_range(today, today, dt.date(2024, 1, 1), 2, 30, dt.date(2024, 1, 1))[0] == dt.date(2026, 11, 1)
    assert tonight_range(today, today, dt.date(2023, 1, 1), 2, 30, dt.date(2024, 1, 1))[0] == dt.date(2023, 1, 1)
    w = date_windows(dt.date(2026, 1, 1), dt.date(2026, 1, 20), 7)
    assert w[0] == (dt.date(2026, 1, 1), dt.date(2026, 1, 7)) and w[-1] == (dt.date(2026, 1, 15), dt.date(2026, 1, 20))
    assert sum((b - a).days + 1 for a, b in w) == 20
