"""Credentials from a variable or a 0600 file, in one format; every refusal one line, never the secret."""

from __future__ import annotations

import base64
import os

import pytest

from osteo_batch.pacs.credentials import Credentials, CredentialsError, load_credentials, parse_credentials

VAR = "OSTEO_TEST_PACS_CREDENTIALS"


@pytest.fixture(autouse=True)
def _no_var(monkeypatch):
    monkeypatch.delenv(VAR, raising=False)


def secret_file(tmp_path, text: str | bytes, mode: int = 0o600):
    p = tmp_path / "pacs.creds"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    os.chmod(p, mode)
    return p


def refused(code: str, env_var, file, *, secret: str = ""):
    with pytest.raises(CredentialsError) as e:
        load_credentials(env_var, file)
    line = e.value.line()
    assert e.value.code == code and "\n" not in line
    if secret:
        assert secret not in line
    return line


def test_basic_from_the_variable(monkeypatch):
    monkeypatch.setenv(VAR, "  Basic alice:pa ss:word \n")
    c = load_credentials(VAR, None)
    assert (c.username, c.password, c.token, c.kind) == ("alice", "pa ss:word", None, "basic")
    assert c.authorization() == "Basic " + base64.b64encode(b"alice:pa ss:word").decode()


def test_bearer_from_a_0600_file(tmp_path):
    c = load_credentials(None, secret_file(tmp_path, "BEARER eyJ.abc-123_\n"))
    assert (c.token, c.kind, c.authorization()) == ("eyJ.abc-123_", "bearer", "Bearer eyJ.abc-123_")
    assert load_credentials(None, secret_file(tmp_path, "bearer t0k", 0o400)).token == "t0k"


def test_repr_and_str_show_no_secret():
    for c in (Credentials(username="alice", password="hunter2"), Credentials(token="tok-SECRET")):
        for shown in (repr(c), str(c), f"{c}", repr([c])):
            assert "hunter2" not in shown and "SECRET" not in shown and "alice" not in shown


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o700])
def test_a_file_others_may_read_or_write_is_refused(tmp_path, mode):
    line = refused("credentials_file_mode", None, secret_file(tmp_path, "basic alice:hunter2", mode),
                   secret="hunter2")
    assert "pacs.creds" in line and str(tmp_path) not in line and "chmod 600 pacs.creds" in line
    assert f"{mode:04o}" in line


def test_missing_folder_and_fifo_are_unreadable(tmp_path):
    assert str(tmp_path) not in refused("credentials_unreadable", None, tmp_path / "nope")
    folder = tmp_path / "folder"
    folder.mkdir(mode=0o700)
    refused("credentials_unreadable", None, folder)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    refused("credentials_unreadable", None, fifo)  # refused at once, never blocks on the open or the read


def test_a_link_to_a_private_file_is_followed(tmp_path):
    link = tmp_path / "link"
    link.symlink_to(secret_file(tmp_path, "bearer abc"))
    assert load_credentials(None, link).token == "abc"


@pytest.mark.parametrize("text", ["", "   \n\t\n"])
def test_empty_is_refused(tmp_path, monkeypatch, text):
    refused("credentials_empty", None, secret_file(tmp_path, text))
    monkeypatch.setenv(VAR, text)
    assert VAR in refused("credentials_empty", VAR, None)


@pytest.mark.parametrize("text, secret", [
    ("alice:hunter2", "hunter2"),  # no scheme: the first word could be the secret itself
    ("hunter2", "hunter2"),
    ("token: hunter2", "hunter2"),
    ("basic hunter2", "hunter2"),
    ("basic :hunter2", "hunter2"),
    ("basic alice:", "alice"),
    ("bearer", ""),
    ("bearer hun ter2", "hun ter2"),
    ("basic alice:hunter2\nbasic bob:x", "hunter2"),
])
def test_malformed_is_refused_without_the_secret(tmp_path, monkeypatch, text, secret):
    line = refused("credentials_malformed", None, secret_file(tmp_path, text), secret=secret)
    assert "basic" in line and "bearer" in line  # the fix states the format
    monkeypatch.setenv(VAR, text)
    refused("credentials_malformed", VAR, None, secret=secret)


def test_not_utf8_is_malformed(tmp_path):
    refused("credentials_malformed", None, secret_file(tmp_path, b"basic alice:\xff\xfe"))


def test_variable_and_file_together_are_refused(tmp_path, monkeypatch):
    f = secret_file(tmp_path, "bearer from-file")
    monkeypatch.setenv(VAR, "bearer from-var")
    line = refused("credentials_conflict", VAR, f, secret="from-")
    assert VAR in line


def test_an_unset_variable_holds_none(tmp_path):
    assert load_credentials(VAR, None) is None
    assert load_credentials(None, None) is None
    assert load_credentials(VAR, secret_file(tmp_path, "bearer from-file")).token == "from-file"


def test_credentials_hold_one_kind():
    for bad in (dict(), dict(username="a", password="b", token="c"), dict(username="a"), dict(password="b"),
                dict(username="a:b", password="c")):
        with pytest.raises(ValueError):
            Credentials(**bad)
    assert parse_credentials("basic a:b", source="test").kind == "basic"
