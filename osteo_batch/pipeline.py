"""The nightly run's stages as plain functions: what a Prefect task (or a script) calls.

Each stage takes :class:`Settings` and the run ID, opens the store itself,
does one job, and returns a small JSON-able summary with counts only (no
patient data), so the same functions serve the Prefect flow (one task per
stage), a distributed runner, or a plain Python loop (:func:`run_nightly`).

archive -> sweep (instances) -> score (pixel tensors -> scores) -> explain -> worklist
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import secrets
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from osteo_batch.store import Store

log = logging.getLogger("osteo_batch")

STORE_FILE = "osteo.duckdb"


class SettingsError(ValueError):
    """A setting that cannot work; the message names it and the fix."""


def is_user_error(e: BaseException) -> bool:
    """Errors a user fixes (a setting, a file, a held store), shown as one line, never retried."""
    from osteo_batch.followup.dxa import DxaFileError
    from osteo_batch.archive.eligibility import RuleError
    from osteo_batch.models.backbones import UnknownBackboneError
    from osteo_batch.models.model import ModelDirError
    from osteo_batch.models.pretrain import FoundationError
    from osteo_batch.models.train import TrainingDataError
    from osteo_batch.outputs import os_error_message
    from osteo_batch.followup.referrals import ReferralError
    from osteo_batch.store import StoreError
    from osteo_batch.study import GridError
    from osteo_batch.archive.sweep import ArchiveEmptyError

    return isinstance(e, (SettingsError, GridError, StoreError, ReferralError, ModelDirError, DxaFileError, RuleError, UnknownBackboneError,
                          TrainingDataError, ArchiveEmptyError, FoundationError, FileNotFoundError, NotADirectoryError,
                          PermissionError)) or os_error_message(e) is not None  # a full disk, a read-only folder


@dataclass(frozen=True)
class Settings:
    """Everything one run needs, built once and passed explicitly."""

    workdir: Path
    archive: Path | None = None
    model_dir: Path | None = None
    dxa_csv: Path | None = None
    rules_file: Path | None = None
    config_file: Path | None = None
    batch_size: int | None = None  # None: tuned to the device (scoring.DEFAULT_BATCH)
    workers: int = 2
    device: str = "cpu"
    precision: str = "auto"
    shards: int = 1  # shards of the pending images; 0: one per visible GPU
    compile: bool = False  # torch.compile the model for scoring
    commit_every: int = 1024  # images per score part file
    threshold: float | None = None  # overrides the model's threshold when set
    dxa_lookback_days: int = 730  # no referral within this many days of a DXA ...
    dxa_lookback_days_near: int = 365  # ... or this many if its lowest T-score was -2.49 to -2.0
    referred_days: int = 180  # no referral again within this many days of "referred"
    declined_days: int = 365
    unreachable_days: int = 90
    dxa_done_days: int = 730
    known_conditions_csv: Path | None = None  # patients with known osteoporosis or treatment
    sites: dict[str, str] | None = None  # InstitutionName -> site shown on the worklists
    store_wait_s: float = 60.0
    timezone: str | None = None  # the archive's IANA time zone ([archive] timezone); None: this machine's
    allowed_roots: tuple[str, ...] = ()  # [archive] allowed_roots: folders outside the archive links may lead into

    def __post_init__(self) -> None:
        # Every number, flag and word is checked here, against _SPECS, however the
        # Settings were made (load_settings, from_json, a caller): a bad value stops
        # the run before it starts instead of listing everyone (NaN) or no one.
        for key, spec in _SPECS.items():
            v = getattr(self, key)
            if not spec.ok(v):
                flag = f" ({_FLAGS[key]} {_show(v)})" if key in _FLAGS else ""
                raise SettingsError(f"{key} = {_show(v)}{flag} must be {spec.wants()}")

    def zone(self) -> dt.tzinfo | None:
        """The archive's time zone (None: this machine's local time zone)."""
        return _zone(self.timezone) if self.timezone else None

    def run_date(self, now: dt.datetime | None = None) -> dt.date:
        """Today in the archive's time zone: study dates after it are not trusted.

        ``now`` (an aware datetime) stands for the present moment when given.
        """
        zone = self.zone()
        if now is None:
            now = dt.datetime.now(dt.timezone.utc)
        elif now.tzinfo is None:
            raise ValueError("run_date(now=...) needs an aware datetime")
        return now.astimezone(zone).date()  # astimezone(None): this machine's local time zone

    @property
    def store_path(self) -> Path:
        return self.workdir / STORE_FILE

    def resolved_model_dir(self) -> Path:
        if self.model_dir:
            return self.model_dir
        demo = self.workdir / "models" / "demo"
        if (demo / "config.json").is_file():
            return demo
        raise SettingsError(
            f"no model given and none at {demo}; pass --model MODEL_DIR or train one with `osteo-batch train`"
        )

    def check_device(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise SettingsError(f"device {self.device!r}: no CUDA GPU is visible here; use --device cpu")
        elif self.device != "cpu":
            raise SettingsError(f"device {self.device!r}: use cpu, cuda or cuda:N")

    def exclusions(self):
        from osteo_batch.worklist import Exclusions

        return Exclusions(dxa_days=self.dxa_lookback_days, dxa_days_near=self.dxa_lookback_days_near,
                          known_conditions=True,
                          referral_days={"referred": self.referred_days, "declined": self.declined_days,
                                         "unreachable": self.unreachable_days, "dxa-done": self.dxa_done_days})

    def n_shards(self) -> int:
        """Shards to split the pending images into (0 means one per visible GPU)."""
        if self.shards:
            return self.shards
        if self.device.startswith("cuda"):
            import torch

            return max(1, torch.cuda.device_count())
        return 1

    def shard_device(self, shard: int) -> str:
        """The device shard ``shard`` runs on when the shards share this machine."""
        if self.device == "cuda":
            import torch

            n = torch.cuda.device_count()
            return f"cuda:{shard % n}" if n > 1 else "cuda"
        return self.device

    def score_options(self, device: str | None = None):
        from osteo_batch.scoring.score import ScoreOptions

        return ScoreOptions(batch_size=self.batch_size, workers=self.workers, device=device or self.device,
                            precision=self.precision, compile=self.compile, commit_every=self.commit_every,
                            roots=self.archive_roots())

    def archive_roots(self) -> tuple[str, ...]:
        """The resolved archive root and ``[archive] allowed_roots``: the only places a file is opened
        (a pending file turned into a link out of the archive after the sweep is refused at decode too)."""
        from osteo_batch.archive.walk import real_roots

        return real_roots(self.archive, self.allowed_roots) if self.archive else ()

    def to_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Settings":
        return cls(**{k: (Path(v) if k in _PATH_KEYS and v is not None else v) for k, v in d.items()})


def _zone(name: str) -> dt.tzinfo:
    """The IANA time zone ``name``, or a SettingsError that says how to write one."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise SettingsError(f"[archive] timezone = {name!r} is not an IANA time zone name; "
                            "write it like \"Europe/Berlin\", \"America/New_York\" or \"UTC\"") from None


_PATH_KEYS = {"workdir", "archive", "model_dir", "dxa_csv", "rules_file", "config_file", "known_conditions_csv"}


@dataclass(frozen=True)
class _Spec:
    """A setting's type and allowed values: the one table every setting is checked against.

    Types are strict, as TOML writes them: an ``int`` is a TOML integer (not
    ``2.7``, ``2.0``, ``"4"`` or ``true``), a ``float`` a finite number (an
    integer will do; not a bool, NaN or inf), a ``bool`` a TOML boolean (not
    ``"no"``, which ``bool()`` would read as true), a ``str`` a TOML string.
    """

    kind: type  # int, float, bool or str
    ge: float | None = None  # value >= ge
    gt: float | None = None  # value > gt
    lt: float | None = None  # value < lt
    choices: tuple[str, ...] = ()
    optional: bool = False  # None (unset) is allowed
    note: str = ""  # what a boundary value means, for the message

    def ok(self, v: Any) -> bool:
        if v is None:
            return self.optional
        if self.kind is bool:
            return isinstance(v, bool)
        if self.kind is str:
            return isinstance(v, str) and (not self.choices or v in self.choices)
        if isinstance(v, bool) or not isinstance(v, (int, float) if self.kind is float else int):
            return False
        if not math.isfinite(v):
            return False
        return ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                and (self.lt is None or v < self.lt))

    def wants(self) -> str:
        if self.kind is bool:
            return "true or false"
        if self.kind is str:
            return ("one of " + ", ".join(f'"{c}"' for c in self.choices)) if self.choices else "text"
        bounds = [f">= {self.ge:g}" if self.ge is not None else "", f"> {self.gt:g}" if self.gt is not None else "",
                  f"< {self.lt:g}" if self.lt is not None else ""]
        what = "a whole number" if self.kind is int else "a number"
        return " ".join([what, " and ".join(b for b in bounds if b)]) + (f" ({self.note})" if self.note else "")


_COUNT1, _COUNT0, _DAYS = _Spec(int, ge=1), _Spec(int, ge=0), _Spec(int, ge=0, note="days")
#: Every setting that is a number, a flag or a word, with its range, for Settings.__post_init__.
_SPECS: dict[str, _Spec] = {
    "batch_size": _Spec(int, ge=1, optional=True), "commit_every": _COUNT1, "workers": _COUNT0,
    "shards": _Spec(int, ge=0, note="0: one per visible GPU"),
    # 0 only from the command line: ``worklist --threshold 0`` lists every scored patient.
    # A config file's threshold is held to (0, 1): _RUN_KEYS below.
    "threshold": _Spec(float, ge=0, lt=1, optional=True, note="0 lists every scored patient"),
    "store_wait_s": _Spec(float, ge=0, note="seconds"),
    "compile": _Spec(bool), "device": _Spec(str), "precision": _Spec(str, choices=("auto", "fp32", "bf16")),
    **{k: _DAYS for k in ("dxa_lookback_days", "dxa_lookback_days_near", "referred_days", "declined_days",
                          "unreachable_days", "dxa_done_days")},
}
#: The command-line flag that sets a key, named in its message.
_FLAGS = {"batch_size": "--batch-size", "workers": "--workers", "shards": "--shards", "threshold": "--threshold",
          "device": "--device"}
#: What a config file's tables may hold: the same specs, but a file's threshold must be in (0, 1):
#: 0 (list everyone, explain everyone) is for a one-off ``worklist --threshold 0``, not for every night.
_RUN_KEYS: dict[str, _Spec] = {
    **{k: _SPECS[k] for k in ("batch_size", "workers", "device", "precision", "dxa_lookback_days", "store_wait_s",
                              "shards", "compile", "commit_every")},
    "threshold": _Spec(float, gt=0, lt=1),
}
_WORKLIST_KEYS: dict[str, _Spec] = {
    **{k: _SPECS[k] for k in ("dxa_lookback_days", "dxa_lookback_days_near", "referred_days", "declined_days",
                              "unreachable_days", "dxa_done_days")},
    "known_conditions": _Spec(str),
}


def _show(v: Any) -> str:
    """A setting's value as TOML writes it, short and free of control characters, for a message."""
    from osteo_batch.text import clean_cell

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        t = json.dumps(clean_cell(v), ensure_ascii=False)
    elif isinstance(v, float):
        t = repr(v) if math.isfinite(v) else ("nan" if v != v else ("inf" if v > 0 else "-inf"))
    else:
        t = clean_cell(repr(v))
    return t if len(t) <= 40 else t[:37] + "..."


def _folder_list(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise ValueError(v)
    return tuple(v)


_folder_list.__name__ = 'list of folder paths, like ["/mnt/pacs2"]'
_ARCHIVE_KEYS = {"timezone": str, "allowed_roots": _folder_list}


def _allowed_roots(roots: Any, base: Path | None) -> tuple[str, ...]:
    """``[archive] allowed_roots``, checked: folders outside the archive that its links may lead into
    (archives mounted through links); a link to anywhere else is refused (``outside_archive``).
    Each must be an existing folder, absolute or relative to ``base`` (the config file's folder)."""
    out = []
    for r in (roots if isinstance(roots, (list, tuple)) else [roots]):
        p = Path(r) if Path(r).is_absolute() or base is None else base / r
        if not p.is_absolute():
            raise SettingsError(f"[archive] allowed_roots: {str(r)!r} is not an absolute path; write it like \"/mnt/pacs2\"")
        if not p.is_dir():
            raise SettingsError(f"[archive] allowed_roots: {str(p)!r} is not an existing folder; "
                                "mount it or remove it from the list")
        real = os.path.realpath(p)
        if real == os.sep:
            raise SettingsError(f"[archive] allowed_roots: {str(p)!r} is the whole file system; "
                                "name the folders archives are mounted on")
        if any(real == q or real.startswith(q + os.sep) for q in ("/proc", "/sys", "/dev")):
            raise SettingsError(f"[archive] allowed_roots: {str(p)!r} is under /proc, /sys or /dev, "
                                "which hold no archive; remove it")
        out.append(str(p))
    return tuple(out)


def _typed_table(doc: dict[str, Any], name: str, keys: dict[str, Any], fname: str) -> dict[str, Any]:
    """The ``[name]`` table of a config file, each key known and its value checked.

    ``keys`` maps each key to a :class:`_Spec` (checked strictly: ``int(2.7)``
    and ``bool("no")`` are what let bad values through before), or to a type
    or converter that raises ValueError/TypeError.
    """
    table = doc.get(name, {})
    if not isinstance(table, dict):
        raise SettingsError(f"config file {fname}: '{name}' must be a table ([{name}])")
    out = {}
    for k, v in table.items():
        if k not in keys:
            raise SettingsError(f"config file {fname}: unknown [{name}] key {k!r}; known: {', '.join(sorted(keys))}")
        want = keys[k]
        if isinstance(want, _Spec):
            if not want.ok(v):
                raise SettingsError(f"config file {fname}: [{name}] {k} = {_show(v)} must be {want.wants()}")
            out[k] = v
        else:  # a type or converter ([archive]): its own checks follow in load_settings
            try:
                out[k] = want(v)
            except (TypeError, ValueError):
                raise SettingsError(f"config file {fname}: [{name}] {k} = {_show(v)} is not a "
                                    f"{getattr(want, '__name__', 'valid value')}") from None
    return out


def load_settings(config: str | os.PathLike | None, **overrides: Any) -> Settings:
    """Settings from an optional TOML file (``[run]``, ``[worklist]``, ``[archive]`` tables, ``[sites]``,
    ``[[rule]]`` entries), then overrides."""
    values: dict[str, Any] = {}
    rules_file = None
    if config:
        p = Path(config)
        if not p.is_file():
            raise SettingsError(f"config file {p} not found")
        try:
            doc = tomllib.loads(p.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise SettingsError(f"config file {p.name}: {e}") from None
        values.update(_typed_table(doc, "run", _RUN_KEYS, p.name))
        archive_table = _typed_table(doc, "archive", _ARCHIVE_KEYS, p.name)
        if "timezone" in archive_table:
            try:
                _zone(archive_table["timezone"])
            except SettingsError as e:
                raise SettingsError(f"config file {p.name}: {e}") from None
            values["timezone"] = archive_table["timezone"]
        if "allowed_roots" in archive_table:  # relative paths: from the config file's folder
            try:
                values["allowed_roots"] = _allowed_roots(archive_table["allowed_roots"], p.parent)
            except SettingsError as e:
                raise SettingsError(f"config file {p.name}: {e}") from None
        for k, val in _typed_table(doc, "worklist", _WORKLIST_KEYS, p.name).items():
            if k == "known_conditions":
                values["known_conditions_csv"] = (p.parent / val) if not Path(val).is_absolute() else Path(val)
            else:
                values[k] = val
        sites = doc.get("sites", {})
        if not isinstance(sites, dict) or not all(isinstance(v, str) for v in sites.values()):
            raise SettingsError(f"config file {p.name}: [sites] maps InstitutionName = \"site\" (text to text)")
        if sites:
            values["sites"] = dict(sites)
        if "rule" in doc:
            rules_file = p
        values["config_file"] = p
    values.update({k: v for k, v in overrides.items() if v is not None})
    for k in _PATH_KEYS & values.keys():
        values[k] = Path(values[k])
    if rules_file and "rules_file" not in values:
        values["rules_file"] = rules_file
    if overrides.get("allowed_roots") is not None:  # given by a caller: checked as a file's are
        values["allowed_roots"] = _allowed_roots(overrides["allowed_roots"], None)
    s = Settings(**values)  # checks every value against _SPECS (__post_init__)
    s.zone()  # a bad time zone given as an override is a one-line error too
    return s


def new_run_id() -> str:
    """Sortable and free of patient data: UTC time plus randomness."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def open_store(settings: Settings, *, read_only: bool = False) -> Store:
    from osteo_batch.outputs import private_dir

    if not read_only:
        private_dir(settings.workdir)
    return Store(settings.store_path, read_only=read_only, wait_s=settings.store_wait_s)


def _timed(fn):
    def wrapper(*a, **kw):
        t0 = time.monotonic()
        out = fn(*a, **kw)
        out["seconds"] = round(time.monotonic() - t0, 2)
        return out

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


# ------------------------------------------------------------------ stages


def start_run(settings: Settings, run_id: str, *, kind: str = "nightly") -> dict[str, Any]:
    """Open the run's record; call it holding the work folder's run lock (:mod:`osteo_batch.run.lock`).

    A nightly run checks its model folder first (a damaged file fails here, in
    one line, before anything is swept), and any run marks runs that a kill
    left ``running`` as ``ended_abnormally``: under the lock, none can be alive.
    """
    model_id = threshold = model_dir = None
    if kind == "nightly":
        from osteo_batch.models.model import check_model_dir, read_config

        mdir = settings.resolved_model_dir()
        cfg = read_config(mdir)
        model_id = check_model_dir(mdir)
        model_dir = str(mdir.resolve())
        threshold = settings.threshold if settings.threshold is not None else cfg.threshold
    with open_store(settings) as st:
        abandoned = st.rows("runs_end_abandoned", {"run_id": run_id})
        st.run("runs_start", {"run_id": run_id, "kind": kind, "archive": str(settings.archive) if settings.archive else None,
                              "model_id": model_id, "threshold": threshold})
    if abandoned:
        log.warning("%d earlier run(s) had been killed before they finished; marked ended_abnormally", len(abandoned))
    return {"run_id": run_id, "model_id": model_id, "threshold": threshold, "model_dir": model_dir,
            "earlier_runs_ended_abnormally": len(abandoned)}


@_timed
def load_dxa_stage(settings: Settings, run_id: str) -> dict[str, Any]:
    """Load the DXA table if one was given; later runs keep what was loaded."""
    from osteo_batch.followup.dxa import load_dxa

    if not settings.dxa_csv:
        return {"loaded": 0, "rejected": {}}
    with open_store(settings) as st:
        parsed = load_dxa(st, settings.dxa_csv)
    rejected: dict[str, int] = {}
    for _, reason in parsed.rejected:
        rejected[reason] = rejected.get(reason, 0) + 1
    return {"loaded": len(parsed.rows), "rejected": rejected}


@_timed
def sweep_stage(settings: Settings, run_id: str, model_id: str | None = None) -> dict[str, Any]:
    """Index the archive; statuses reflect scores from ``model_id`` (any model when None).

    Study dates are judged against today in the archive's time zone; files left
    out for one (``ineligible:study_date``) are counted by what is wrong and, when
    there are any, listed in ``runs/run-<run_id>-study-dates.csv`` for the PACS
    administrator (accession, study date, SOP Instance UID; no names).
    """
    from osteo_batch.archive.eligibility import STUDY_DATE_PROBLEMS, load_rules
    from osteo_batch.run.summary import write_study_dates_csv
    from osteo_batch.archive.sweep import by_reason, study_date_files, sweep

    if not settings.archive or not Path(settings.archive).is_dir():
        raise SettingsError(f"archive {settings.archive} is not a directory; pass --archive DIR")
    rules = load_rules(settings.rules_file)
    run_date = settings.run_date()
    with open_store(settings) as st:
        from osteo_batch.progress import ProgressLog

        res = sweep(st, settings.archive, run_id=run_id, rules=rules, model_id=model_id, workers=settings.workers or None,
                    progress=ProgressLog("sweeping: headers read", 0, unit="files"), run_date=run_date,
                    allowed_roots=tuple(settings.allowed_roots))
        reasons = st.rows("status_counts")
        bad_dates = study_date_files(st, run_date)
    problems = {k: 0 for k in STUDY_DATE_PROBLEMS}
    for r in bad_dates:
        problems[r["problem"]] += 1
    csv_path = write_study_dates_csv(settings.workdir, run_id, bad_dates) if bad_dates else None
    return {
        "files": res.files,
        "headers_read": res.read,
        "vanished": res.vanished,
        "unreadable_dirs": res.unreadable_dirs,
        "unreadable_dir_reasons": res.unreadable_dir_reasons,  # counts by why (permission_denied, io_error, vanished)
        "by_status": res.counts,
        "by_reason": by_reason(reasons),
        "conserved": res.conserved(),
        "run_date": run_date.isoformat(),
        "timezone": settings.timezone or f"local ({dt.datetime.now().astimezone().tzname()})",
        "study_dates": problems,  # untrusted study dates by what is wrong (all are ineligible:study_date)
        "study_dates_csv": str(csv_path) if csv_path else None,
    }


def current_model_id(settings: Settings) -> str:
    """The content hash of the model folder this run uses (what its scores are keyed by)."""
    from osteo_batch.models.model import compute_model_id, read_config

    mdir = settings.resolved_model_dir()
    return compute_model_id(mdir / "model.safetensors", read_config(mdir))


def plan_stage(settings: Settings, run_id: str) -> dict[str, Any]:
    """Load score files left by earlier runs, then write this run's shard plan.

    Returns the plan as JSON-able data (a file path in the work folder and
    shard sizes, no patient data), for the shard stages wherever they run.
    """
    from osteo_batch.scoring.score import load_scores, plan, remove_stale_temporaries
    from osteo_batch.archive.sweep import resolve_status

    model_id = current_model_id(settings)
    scores_dir = settings.workdir / "scores"
    with open_store(settings) as st:
        remove_stale_temporaries(scores_dir)
        earlier = load_scores(st, scores_dir)  # parts a killed or held run wrote but never loaded
        if earlier.files:
            resolve_status(st, model_id)
        p = plan(st, scores_dir, run_id, settings.n_shards())
    return {"plan": asdict(p), "recovered_from_earlier_parts": earlier.scored}


def shard_stage(settings: Settings, run_id: str, plan: dict[str, Any], shard: int, *,
                device: str | None = None) -> dict[str, Any]:
    """Score one shard of the plan on one device; writes Parquet parts only, never the store.

    This is what one process, one GPU or one Ray task runs.
    """
    from osteo_batch.models.model import load_model_dir
    from osteo_batch.progress import ProgressLog
    from osteo_batch.scoring.score import ScorePlan, plan_items, score_shard

    p = ScorePlan(**{**plan, "sizes": tuple(plan["sizes"])})
    device = device or settings.device
    if device.startswith("cuda") or settings.device.startswith("cuda"):
        settings.check_device()
    model = load_model_dir(settings.resolved_model_dir(), device=device)
    items = plan_items(p, shard)
    label = f"scoring shard {shard + 1}/{p.n_shards}" if p.n_shards > 1 else "scoring"
    res = score_shard(model, items, out_dir=settings.workdir / "scores", run_id=run_id, shard=shard,
                      n_shards=p.n_shards, opts=settings.score_options(device),
                      progress=ProgressLog(label, len(items), unit="images"))
    return {**res.counts(), "device": device}


def _shard_process(settings_json: dict[str, Any], run_id: str, plan: dict[str, Any], shard: int, device: str):
    return shard_stage(Settings.from_json(settings_json), run_id, plan, shard, device=device)


def run_shards_here(settings: Settings, run_id: str, plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the plan's shards on this machine: in this process when there is one, else one process each.

    Several shards here means several GPUs (``--shards 0`` or ``--shards N``
    with ``--device cuda``): each shard gets its own process and device, so
    no two share a CUDA context or a Python interpreter. A shard that fails
    keeps the parts it finished; the next run scores only the rest.
    """
    n = plan["n_shards"]
    if n == 1:
        return [shard_stage(settings, run_id, plan, 0)]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from osteo_batch.workers import watch_parent

    with ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                             initializer=watch_parent, initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(_shard_process, settings.to_json(), run_id, plan, i, settings.shard_device(i))
                   for i in range(n)]
        return [f.result() for f in futures]


def load_stage(settings: Settings, run_id: str, shards: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The single writer: load every score part not yet in the store, then update statuses."""
    from osteo_batch.scoring.score import load_scores
    from osteo_batch.archive.sweep import resolve_status

    model_id = current_model_id(settings)
    with open_store(settings) as st:
        res = load_scores(st, settings.workdir / "scores")
        counts = resolve_status(st, model_id)
    return {"files_loaded": res.files, "scored": res.scored, "decode_rejected": res.rejected,
            "by_status": counts, "model_id": model_id, "shards": shards or []}


@_timed
def score_stage(settings: Settings, run_id: str) -> dict[str, Any]:
    """Score pending images: plan the shards, run them on this machine, load the results.

    When an image's kept copy fails to decode and another file holds the same
    SOP Instance UID, that copy becomes pending at the load; it is scored in
    another pass of the same night (at most :data:`SCORE_PASSES` passes), not
    left for tomorrow.
    """
    planned = plan_stage(settings, run_id)
    summary = score_summary(planned, load_stage(settings, run_id, run_shards_here(settings, run_id, planned["plan"])))
    for _ in range(SCORE_PASSES - 1):
        if not summary["decode_rejected"]:
            break
        again = plan_stage(settings, run_id)
        if not sum(again["plan"]["sizes"]):
            break
        more = load_stage(settings, run_id, run_shards_here(settings, run_id, again["plan"]))
        summary["pending"] += sum(again["plan"]["sizes"])
        summary["passes"] = summary.get("passes", 1) + 1
        for k in ("files_loaded", "scored", "decode_rejected"):
            summary[k] += more[k]
        summary["by_status"], summary["shards"] = more["by_status"], summary["shards"] + more["shards"]
    return summary


#: Score passes in one night: the first, then one per round of duplicate copies
#: standing in for a copy that failed to decode.
SCORE_PASSES = 3


def score_summary(planned: dict[str, Any], loaded: dict[str, Any]) -> dict[str, Any]:
    """The score stage's summary from its plan and its load, however the shards ran."""
    return {"pending": sum(planned["plan"]["sizes"]), "n_shards": planned["plan"]["n_shards"],
            "recovered_from_earlier_parts": planned["recovered_from_earlier_parts"], **loaded}


@_timed
def explain_stage(settings: Settings, run_id: str) -> dict[str, Any]:
    """Grad-CAM heat maps for flagged images that have none from this model."""
    from osteo_batch.explain import explain, record
    from osteo_batch.models.bands import raw_floor
    from osteo_batch.models.model import load_model_dir
    from osteo_batch.scoring.tensors import Item

    model = load_model_dir(settings.resolved_model_dir(), device=settings.device)
    threshold = settings.threshold if settings.threshold is not None else model.config.threshold
    with open_store(settings, read_only=True) as st:
        todo = [Item(r["path"], r["sop_instance_uid"], None)
                for r in st.rows("flagged_unexplained", {"model_id": model.model_id, "min_score": raw_floor(threshold)})]
    from osteo_batch.progress import ProgressLog

    done, failed = explain(model, todo, settings.workdir / "heatmaps", device=settings.device,
                           roots=settings.archive_roots(),
                           workers=min(settings.workers, 2), progress=ProgressLog("heat maps", len(todo)))
    with open_store(settings) as st:
        record(st, model.model_id, run_id, done)
    return {"flagged_without_heatmap": len(todo), "explained": len(done), "failed": len(failed)}


@_timed
def worklist_stage(settings: Settings, run_id: str) -> dict[str, Any]:
    """Record queued referral actions, load known conditions, render the run's worklists (all sites, each site, CSV)."""
    from osteo_batch.models.model import load_model_dir
    from osteo_batch.followup.referrals import flush_queue
    from osteo_batch.worklist import write_worklist

    model_dir = settings.resolved_model_dir()
    model = load_model_dir(model_dir)
    threshold = settings.threshold if settings.threshold is not None else model.config.threshold
    known = {"loaded": 0, "rejected": 0}
    with open_store(settings) as st:
        queued = flush_queue(st, settings.workdir)  # coordinators' actions made while a run held the store
        if settings.known_conditions_csv:
            from osteo_batch.followup.conditions import load_known_conditions

            parsed = load_known_conditions(st, settings.known_conditions_csv)
            known = {"loaded": len(parsed.rows), "rejected": len(parsed.rejected)}
        res = write_worklist(
            st, workdir=settings.workdir, run={"run_id": run_id}, model_id=model.model_id, threshold=threshold,
            bands=model.config.bands, model_card=model.card, rules=settings.exclusions(), sites=settings.sites,
        )
    return {"worklist": str(res.path), "csv": str(res.csv), "site_pages": len(res.site_pages), "listed": res.listed,
            "flagged": res.listed + sum(res.excluded.values()), "excluded": res.excluded,
            "below_threshold": res.below_threshold, "threshold": threshold, "referrals_from_queue": queued.recorded,
            "referral_files_set_aside": queued.quarantined, "known_conditions": known}


def index_archive(settings: Settings, run_id: str | None = None, *, load_dxa: bool = False) -> dict[str, Any]:
    """A sweep-only run (``kind = 'sweep'``): DXA table (when asked) and sweep, under the run lock.

    What ``sweep``, ``train``, ``calibrate``, the study and the demo's history
    run before they read the index. The run lock keeps a sweep from
    interleaving with a nightly run in the same work folder, and lets
    :func:`start_run` mark runs a kill left ``running``.
    """
    from osteo_batch.run import lock as runlock

    run_id = run_id or new_run_id()
    with runlock.hold(settings.workdir, run_id):
        start_run(settings, run_id, kind="sweep")
        out: dict[str, Any] = {"run_id": run_id}
        if load_dxa:
            out["dxa"] = load_dxa_stage(settings, run_id)
        out["sweep"] = sweep_stage(settings, run_id)
        finish_run(settings, run_id, {k: v for k, v in out.items() if k != "run_id"})
    return out


def finish_run(settings: Settings, run_id: str, summary: dict[str, Any], *, status: str = "finished") -> dict[str, Any]:
    with open_store(settings) as st:
        st.run("runs_finish", {"run_id": run_id, "status": status, "summary": json.dumps(summary, default=str)})
    return summary


def run_nightly(
    settings: Settings,
    run_id: str | None = None,
    *,
    stages: dict[str, Callable[..., dict[str, Any]]] | None = None,
    on_stage: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The whole nightly run, stage by stage, recorded in ``runs``.

    ``stages`` replaces stage functions by name (the Prefect flow passes its
    tasks here, so the sequence is written once); ``on_stage`` sees each
    stage's summary as it completes.
    """
    from osteo_batch.run import lock as runlock

    run_id = run_id or new_run_id()
    with runlock.hold(settings.workdir, run_id):
        return _run_nightly_locked(settings, run_id, stages, on_stage)


def _run_nightly_locked(settings, run_id, stages, on_stage) -> dict[str, Any]:
    fns = {**STAGES, **(stages or {})}
    meta = start_run(settings, run_id)
    summary: dict[str, Any] = dict(meta)
    try:
        for name in STAGES:
            args = (meta["model_id"],) if name == "sweep" else ()
            summary[name] = fns[name](settings, run_id, *args)
            if on_stage:
                on_stage(name, summary[name])
        summary["instances"] = instance_counts(settings)
    except BaseException as e:
        summary["error"] = type(e).__name__  # the type only: a message may name a file
        _write_summary_page(settings, summary, "failed")
        try:
            finish_run(settings, run_id, summary, status="failed")
        except Exception:  # e.g. the store is held; the original error matters more
            log.warning("run %s: could not record the failure in the store", run_id)
        raise
    summary["run_page"] = str(_write_summary_page(settings, summary, "finished"))
    return finish_run(settings, run_id, summary)


def _write_summary_page(settings: Settings, summary: dict[str, Any], status: str):
    from osteo_batch.run.summary import write_run_page

    try:
        return write_run_page(settings.workdir, summary, status=status)
    except Exception:  # the run's own outcome matters more than its summary page
        log.warning("run %s: could not write the run summary page", summary.get("run_id"))
        return None


def instance_counts(settings: Settings) -> dict[str, Any]:
    """Files by status and by reason, as the store holds them now (read-only)."""
    from osteo_batch.archive.sweep import by_reason, by_status

    with open_store(settings, read_only=True) as st:
        rows = st.rows("status_counts")
        eligible = st.scalar("eligible_count")
    counts = by_status(rows)
    return {"files": sum(counts.values()), "eligible": eligible, "by_status": counts, "by_reason": by_reason(rows)}


#: The nightly stages in order: archive -> instances -> scores -> explanations -> worklist.
STAGES: dict[str, Callable[..., dict[str, Any]]] = {
    "dxa": load_dxa_stage,
    "sweep": sweep_stage,
    "score": score_stage,
    "explain": explain_stage,
    "worklist": worklist_stage,
}
