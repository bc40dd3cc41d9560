"""How a command ends: the error's class decides the line and the exit status, never a list in the CLI."""

from __future__ import annotations

import argparse
import errno

import pytest

from osteo_batch import cli
from osteo_batch.cli.common import CliError
from osteo_batch.cli.main import _main
from osteo_batch.errors import InternalError, UserError, is_user_error


def _ends(capsys, exc: BaseException, *, debug: bool = False, workdir=None):
    def fn(args):
        raise exc

    capsys.readouterr()
    rc = _main(argparse.Namespace(fn=fn, debug=debug, workdir=workdir))
    return rc, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def test_cli_error_is_a_user_error_with_a_code():
    e = CliError("use --ray or --shard-deployment, not both")
    assert isinstance(e, UserError) and is_user_error(e) and e.code == "bad_usage"
    assert CliError("x", code="conflicting_flags").code == "conflicting_flags"


def test_a_user_error_is_one_line_with_its_fix_and_exit_2(capsys):
    class NoGrid(UserError):
        code = "no_grid"
        fix = "pass --grid FILE"

    rc, err = _ends(capsys, NoGrid("the study has no grid\nof models"))
    assert rc == 2 and err == ["osteo-batch: error: the study has no grid of models; pass --grid FILE"]
    rc, err = _ends(capsys, FileNotFoundError(errno.ENOENT, "No such file or directory", "/w/x.csv"))
    assert rc == 2 and err == ["osteo-batch: error: [Errno 2] No such file or directory: '/w/x.csv'"]


def test_a_full_disk_keeps_its_message(capsys, tmp_path):
    rc, err = _ends(capsys, OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "scores" / "p.parquet")),
                    workdir=tmp_path)
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"osteo-batch: error: no space left on device writing to {tmp_path / 'scores'} (ENOSPC); ")


def test_a_foreign_internal_error_shows_its_type_only(capsys):
    """Its message may quote a header value (a name here): the line must not carry it."""
    rc, err = _ends(capsys, KeyError("DOE^JANE"))
    assert rc == 1 and err == ["osteo-batch: internal error: KeyError (rerun with --debug for the traceback)"]


def test_our_internal_error_shows_its_code_and_message(capsys):
    class Broken(InternalError):
        code = "broken_promise"

    rc, err = _ends(capsys, Broken("plan and shards disagree: 3 != 4"))
    assert rc == 1 and err == ["osteo-batch: internal error: Broken (broken_promise): plan and shards disagree: "
                               "3 != 4 (rerun with --debug for the traceback)"]


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(KeyError):
        _ends(capsys, KeyError("x"), debug=True)


def test_conflicting_flags_stop_before_anything_runs(tmp_path, tiny_model, capsys):
    archive = tmp_path / "archive"
    archive.mkdir()
    capsys.readouterr()
    rc = cli.main(["run", "--archive", str(archive), "--workdir", str(tmp_path / "w"), "--model",
                   str(tiny_model.model_dir), "--ray", "--shard-deployment", "score_shard/gpu"])
    assert rc == 2
    assert capsys.readouterr().err.strip() == "osteo-batch: error: use --ray or --shard-deployment, not both"
    assert not (tmp_path / "w").exists()
