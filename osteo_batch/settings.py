"""The one typed configuration: every setting a run needs, its type and range, and the TOML that sets it.

Why one place: a setting is checked once, here, however it arrives (a config
file, a command-line flag, a Prefect parameter, ``from_json`` in a shard
process, a caller building :class:`Settings` directly), so a bad value stops
the run before it starts, in one line that names the setting and the fix,
instead of listing everyone (NaN) or no one.
"""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from osteo_batch.errors import UserError
from osteo_batch.setting_checks import Spec as _Spec, show as _show
from osteo_batch.followup import exclusions as _excl

STORE_FILE = "osteo.duckdb"


class SettingsError(UserError, ValueError):
    """A setting that cannot work; the message names it and the fix."""

    code = "bad_setting"


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
    threads: int | None = None  # the model's intra-op threads while scoring; None: measured free cores (scoring/threads.py)
    shards: int = 1  # shards of the pending images; 0: one per visible GPU
    compile: bool = False  # torch.compile the model for scoring
    commit_every: int = 1024  # images per score part file
    threshold: float | None = None  # overrides the model's threshold when set
    # the worklist's exclusions (defaults: osteo_batch.followup.exclusions, the one place they are written)
    dxa_lookback_days: int = _excl.DEFAULT_DXA_DAYS  # no referral within this many days of a DXA ...
    dxa_lookback_days_near: int = _excl.DEFAULT_DXA_DAYS_NEAR  # ... or this many if its lowest T-score was near -2.5
    referred_days: int = _excl.DEFAULT_REFERRED_DAYS  # no referral again within this many days of "referred"
    declined_days: int = _excl.DEFAULT_DECLINED_DAYS
    unreachable_days: int = _excl.DEFAULT_UNREACHABLE_DAYS
    dxa_done_days: int = _excl.DEFAULT_DXA_DONE_DAYS
    known_conditions_csv: Path | None = None  # patients with known osteoporosis or treatment
    sites: dict[str, str] | None = None  # InstitutionName -> site shown on the worklists
    store_wait_s: float = 60.0
    timezone: str | None = None  # the archive's IANA time zone ([archive] timezone); None: this machine's
    allowed_roots: tuple[str, ...] = ()  # [archive] allowed_roots: folders outside the archive links may lead into
    pacs: Any = None  # the archive as a PACS (osteo_batch.pacs.config.PacsSettings), instead of ``archive``
    send_results: bool = False  # store one SR per scored image back to the source PACS
    allow_phantom_results: bool = False  # ... even from a model trained on phantoms only (test PACSes)
    fhir_url: str | None = None  # POST each run's FHIR Bundle here
    fhir_system: str = "urn:osteo-batch:patient-id"  # identifier system of the patients' IDs in FHIR

    def __post_init__(self) -> None:
        # Every number, flag and word is checked here, against _SPECS, however the
        # Settings were made (load_settings, from_json, a caller): a bad value stops
        # the run before it starts instead of listing everyone (NaN) or no one.
        for key, spec in _SPECS.items():
            v = getattr(self, key)
            if not spec.ok(v):
                flag = f" ({_FLAGS[key]} {_show(v)})" if key in _FLAGS else ""
                raise SettingsError(f"{key} = {_show(v)}{flag} must be {spec.wants()}")
        if self.archive is not None and self.pacs is not None:
            raise SettingsError("give the archive as a folder (--archive) or a PACS (--pacs), not both")
        if self.pacs is not None:
            from osteo_batch.pacs.config import PacsSettings

            if not isinstance(self.pacs, PacsSettings):
                raise SettingsError("pacs must be a PacsSettings (osteo_batch.pacs.config)")
        if self.fhir_url is not None:
            from urllib.parse import urlsplit

            u = urlsplit(str(self.fhir_url))
            if u.scheme not in ("http", "https") or not u.hostname or u.username or u.password or u.query:
                raise SettingsError("--fhir must be an http:// or https:// URL without credentials or a query "
                                    "(credentials go in the environment variable OSTEO_FHIR_CREDENTIALS)")

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
        from osteo_batch.followup.exclusions import Exclusions

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
                            precision=self.precision, threads=self.threads, compile=self.compile,
                            commit_every=self.commit_every,
                            roots=self.archive_roots(), pacs=self.pacs,
                            spool_dir=str(self.workdir / "spool") if self.pacs is not None else None)

    def archive_roots(self) -> tuple[str, ...]:
        """The resolved archive root and ``[archive] allowed_roots``: the only places a file is opened
        (a pending file turned into a link out of the archive after the sweep is refused at decode too)."""
        from osteo_batch.archive.walk import real_roots

        return real_roots(self.archive, self.allowed_roots) if self.archive else ()

    def retrieval(self):
        """How stages that decode reach PACS instances (:class:`osteo_batch.pacs.spool.Retrieval`), or None."""
        if self.pacs is None:
            return None
        from osteo_batch.pacs.spool import Retrieval

        return Retrieval(self.pacs, str(self.workdir / "spool"))

    @property
    def source(self) -> str | None:
        """The archive as the store and the pages show it: its folder, or the PACS URL without credentials."""
        return self.pacs.display if self.pacs is not None else (str(self.archive) if self.archive else None)

    def to_json(self) -> dict[str, Any]:
        d = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        d["pacs"] = self.pacs.to_json() if self.pacs is not None else None
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Settings":
        """The Settings :meth:`to_json` wrote (JSON turns tuples into lists: they come back as tuples)."""
        def back(k: str, v: Any) -> Any:
            if v is None:
                return v
            if k == "pacs":
                from osteo_batch.pacs.config import PacsSettings

                return PacsSettings.from_json(v)
            if k in _PATH_KEYS:
                return Path(v)
            return tuple(v) if isinstance(v, list) else v

        return cls(**{k: back(k, v) for k, v in d.items()})


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


_COUNT1, _COUNT0, _DAYS = _Spec(int, ge=1), _Spec(int, ge=0), _Spec(int, ge=0, note="days")
#: Every setting that is a number, a flag or a word, with its range, for Settings.__post_init__.
_SPECS: dict[str, _Spec] = {
    "batch_size": _Spec(int, ge=1, optional=True), "threads": _Spec(int, ge=1, optional=True),
    "commit_every": _COUNT1, "workers": _COUNT0,
    "shards": _Spec(int, ge=0, note="0: one per visible GPU"),
    # 0 only from the command line: ``worklist --threshold 0`` lists every scored patient.
    # A config file's threshold is held to (0, 1): _RUN_KEYS below.
    "threshold": _Spec(float, ge=0, lt=1, optional=True, note="0 lists every scored patient"),
    "store_wait_s": _Spec(float, ge=0, note="seconds"),
    "compile": _Spec(bool), "send_results": _Spec(bool), "allow_phantom_results": _Spec(bool),
    "fhir_system": _Spec(str), "device": _Spec(str), "precision": _Spec(str, choices=("auto", "fp32", "bf16")),
    **{k: _DAYS for k in ("dxa_lookback_days", "dxa_lookback_days_near", "referred_days", "declined_days",
                          "unreachable_days", "dxa_done_days")},
}
#: The command-line flag that sets a key, named in its message.
_FLAGS = {"batch_size": "--batch-size", "threads": "--threads", "workers": "--workers", "shards": "--shards", "threshold": "--threshold",
          "device": "--device"}
#: What a config file's tables may hold: the same specs, but a file's threshold must be in (0, 1):
#: 0 (list everyone, explain everyone) is for a one-off ``worklist --threshold 0``, not for every night.
_RUN_KEYS: dict[str, _Spec] = {
    **{k: _SPECS[k] for k in ("batch_size", "threads", "workers", "device", "precision", "dxa_lookback_days",
                              "store_wait_s",
                              "shards", "compile", "commit_every")},
    "threshold": _Spec(float, gt=0, lt=1),
}
_WORKLIST_KEYS: dict[str, _Spec] = {
    **{k: _SPECS[k] for k in ("dxa_lookback_days", "dxa_lookback_days_near", "referred_days", "declined_days",
                              "unreachable_days", "dxa_done_days")},
    "known_conditions": _Spec(str),
}


def _folder_list(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise ValueError(v)
    return tuple(v)


_folder_list.__name__ = 'list of folder paths, like ["/mnt/pacs2"]'
_ARCHIVE_KEYS = {"timezone": str, "allowed_roots": _folder_list, "path": str}
#: ``[results]``: what goes back, and where.
_RESULTS_KEYS = {"send": _Spec(bool), "allow_phantom_results": _Spec(bool), "fhir_url": _Spec(str),
                 "fhir_system": _Spec(str)}


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


#: Overrides that set the PACS source (``--pacs``, ``--since``, ``--calling-aet``), not Settings fields.
_PACS_FLAGS = ("pacs_url", "since", "calling_aet")


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
        if "path" in archive_table:  # the source in the file; --archive or --pacs overrides it
            values["archive"] = p.parent / archive_table["path"]
        if "pacs" in doc:
            from osteo_batch.pacs.config import pacs_from_table

            if not isinstance(doc["pacs"], dict):
                raise SettingsError(f"config file {p.name}: 'pacs' must be a table ([pacs])")
            values["pacs_table"] = pacs_from_table(doc["pacs"], p.parent)
        for k, val in _typed_table(doc, "results", _RESULTS_KEYS, p.name).items():
            values[{"send": "send_results"}.get(k, k)] = val
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
    values.update({k: v for k, v in overrides.items() if v is not None and k not in _PACS_FLAGS})
    from osteo_batch.pacs.config import source_values

    source_values(values, overrides)
    for k in _PATH_KEYS & values.keys():
        values[k] = Path(values[k])
    if rules_file and "rules_file" not in values:
        values["rules_file"] = rules_file
    if overrides.get("allowed_roots") is not None:  # given by a caller: checked as a file's are
        values["allowed_roots"] = _allowed_roots(overrides["allowed_roots"], None)
    s = Settings(**values)  # checks every value against _SPECS (__post_init__)
    s.zone()  # a bad time zone given as an override is a one-line error too
    return s
