"""Where the archive is when it is a PACS, and how gently to ask it: ``--pacs URL`` and the ``[pacs]`` table.

Why one frozen dataclass: the URL, the AE titles, the query windows and the
retrieval limits travel with the run's :class:`osteo_batch.settings.Settings`
(into Prefect parameters and shard processes), so they must be plain values.
Credentials are not among them: they are read from an environment variable
or a 0600 file when a client is opened (:mod:`osteo_batch.pacs.credentials`),
so they never reach the store, a Prefect parameter or an artifact.

URL forms:

- ``http://HOST:PORT/PATH`` or ``https://...``: DICOMweb (QIDO-RS, WADO-RS, STOW-RS);
- ``dimse://CALLED_AET@HOST:PORT``: DIMSE (C-FIND, C-GET, C-STORE), calling as ``calling_aet``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from osteo_batch.errors import UserError

#: The environment variable read for DICOMweb credentials when ``[pacs] credentials_env`` is not set.
DEFAULT_CREDENTIALS_ENV = "OSTEO_PACS_CREDENTIALS"
_AET = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")  # PS3.5 AE: 16 characters, no backslash, no control characters


class PacsConfigError(UserError, ValueError):
    """A PACS URL or ``[pacs]`` value that cannot be used: one line naming the key and the fix."""

    code = "bad_pacs_setting"


@dataclass(frozen=True)
class PacsUrl:
    """A parsed ``--pacs`` URL. ``display`` is what messages and the store may show (no credentials)."""

    protocol: str  # "dicomweb" or "dimse"
    host: str
    port: int
    base_url: str | None = None  # DICOMweb: scheme://host:port/path, no userinfo
    called_aet: str | None = None  # DIMSE

    @property
    def display(self) -> str:
        return self.base_url if self.protocol == "dicomweb" else f"dimse://{self.called_aet}@{self.host}:{self.port}"


def parse_pacs_url(url: str) -> PacsUrl:
    """Parse ``url``; a one-line :class:`PacsConfigError` that says how to write it when it does not parse."""
    how = ("write it like http://pacs.example.org:8042/dicom-web (DICOMweb) or dimse://PACS_AET@pacs.example.org:104 "
           "(DIMSE)")
    if not isinstance(url, str) or not url.strip():
        raise PacsConfigError(f"--pacs needs a URL; {how}")
    try:
        u = urlsplit(url.strip())
        port = u.port
    except ValueError:
        raise PacsConfigError(f"--pacs URL does not parse; {how}") from None
    if u.scheme in ("http", "https"):
        if u.username or u.password:
            raise PacsConfigError("--pacs URL holds credentials; put them in the environment variable "
                                  f"{DEFAULT_CREDENTIALS_ENV} or a 0600 file ([pacs] credentials_file), never in the URL")
        if not u.hostname:
            raise PacsConfigError(f"--pacs URL has no host; {how}")
        if u.query or u.fragment:
            raise PacsConfigError(f"--pacs URL must not have a query or fragment; {how}")
        netloc = u.hostname if port is None else f"{u.hostname}:{port}"
        if ":" in u.hostname:  # IPv6 literal
            netloc = f"[{u.hostname}]" + (f":{port}" if port else "")
        base = urlunsplit((u.scheme, netloc, u.path.rstrip("/"), "", ""))
        return PacsUrl("dicomweb", u.hostname, port or (443 if u.scheme == "https" else 80), base_url=base)
    if u.scheme == "dimse":
        if u.password is not None or not u.username:
            raise PacsConfigError(f"--pacs dimse URL needs the called AE title before @; {how}")
        aet = u.username
        if not _AET.fullmatch(aet) or aet.strip() != aet and not aet.strip():
            raise PacsConfigError("--pacs called AE title must be 1-16 printable characters without a backslash")
        if not u.hostname or port is None:
            raise PacsConfigError(f"--pacs dimse URL needs a host and a port; {how}")
        if u.path not in ("", "/") or u.query or u.fragment:
            raise PacsConfigError(f"--pacs dimse URL takes no path or query; {how}")
        return PacsUrl("dimse", u.hostname, port, called_aet=aet)
    raise PacsConfigError(f"--pacs URL scheme {u.scheme or '(none)'!r} is not http, https or dimse; {how}")


def _hours(v: str) -> tuple[dt.time, dt.time]:
    m = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)", v)
    if not m:
        raise PacsConfigError(f"[pacs] hours = {v!r} must be HH:MM-HH:MM, like \"20:00-06:00\"")
    a, b = dt.time(int(m[1]), int(m[2])), dt.time(int(m[3]), int(m[4]))
    if a == b:
        raise PacsConfigError(f"[pacs] hours = {v!r} is an empty window; leave hours unset to allow any time")
    return a, b


@dataclass(frozen=True)
class PacsSettings:
    """The PACS source of one run. Every value is checked when it is made, however it was made."""

    url: str
    calling_aet: str = "OSTEO"
    since: dt.date | None = None  # the backlog's first study date (first night only; later nights resume)
    overlap_days: int = 2  # each night re-asks this many days before where the last complete query ended
    lookback_days: int = 30  # and re-asks the last this-many days, for studies that arrive late
    window_days: int = 7  # one query per window of study dates; a full answer splits it
    query_limit: int = 500  # answers asked for per query; a window that returns this many is split
    result_limit: int | None = None  # the PACS's own answer limit, when known (a cut answer is then split too)
    parallel: int = 4  # retrievals at once
    spool_max: int = 64  # retrieved files waiting to be scored, at most (flagged ones wait for their heat map too)
    timeout_s: float = 60.0  # per request or association
    hours: str | None = None  # "HH:MM-HH:MM" (local time) when the PACS may be queried; None: any time
    credentials_env: str | None = None  # environment variable with DICOMweb credentials (default OSTEO_PACS_CREDENTIALS)
    credentials_file: str | None = None  # or a 0600 file holding them

    def __post_init__(self) -> None:
        parse_pacs_url(self.url)
        if not isinstance(self.calling_aet, str) or not _AET.fullmatch(self.calling_aet) or not self.calling_aet.strip():
            raise PacsConfigError("--calling-aet must be 1-16 printable characters without a backslash")
        for k, lo in (("overlap_days", 0), ("lookback_days", 0), ("window_days", 1), ("query_limit", 2),
                      ("parallel", 1), ("spool_max", 1)):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise PacsConfigError(f"[pacs] {k} = {v!r} must be a whole number >= {lo}")
        if self.result_limit is not None and (isinstance(self.result_limit, bool) or not isinstance(self.result_limit, int)
                                              or self.result_limit < 1):
            raise PacsConfigError(f"[pacs] result_limit = {self.result_limit!r} must be a whole number >= 1")
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float)) or not 0 < self.timeout_s < 1e6:
            raise PacsConfigError(f"[pacs] timeout_s = {self.timeout_s!r} must be a number of seconds > 0")
        if self.since is not None and not isinstance(self.since, dt.date):
            raise PacsConfigError(f"--since {self.since!r} must be a date, YYYY-MM-DD")
        if self.hours is not None:
            _hours(self.hours)
        if self.credentials_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(self.credentials_env)):
            raise PacsConfigError("[pacs] credentials_env must name an environment variable, like OSTEO_PACS_CREDENTIALS")

    @property
    def parsed(self) -> PacsUrl:
        return parse_pacs_url(self.url)

    @property
    def display(self) -> str:
        """The source as the store, the run page and messages show it: no credentials, ever."""
        return self.parsed.display

    def may_query(self, now: dt.datetime | None = None) -> bool:
        """Whether ``now`` (local time) lies within ``hours`` (a window may wrap midnight)."""
        if self.hours is None:
            return True
        a, b = _hours(self.hours)
        t = (now or dt.datetime.now()).time()
        return a <= t < b if a < b else (t >= a or t < b)

    def credentials_path(self) -> Path | None:
        return Path(self.credentials_file) if self.credentials_file else None

    def credentials_var(self) -> str:
        return self.credentials_env or DEFAULT_CREDENTIALS_ENV

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["since"] = self.since.isoformat() if self.since else None
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "PacsSettings":
        d = dict(d)
        if d.get("since"):
            d["since"] = dt.date.fromisoformat(d["since"])
        return cls(**d)


#: The ``[pacs]`` table's keys (``url`` and every field but ``since``, which is a first-night flag).
PACS_KEYS = tuple(f.name for f in fields(PacsSettings))


def parse_since(value: str) -> dt.date:
    """``--since YYYY-MM-DD``, or a one-line error."""
    try:
        if len(value) != 10:
            raise ValueError(value)
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise PacsConfigError(f"--since {value!r} is not a date; write it YYYY-MM-DD, like 2024-01-01") from None


def pacs_from_table(table: dict[str, Any], base: Path | None) -> dict[str, Any]:
    """The ``[pacs]`` table of a config file, checked by key, with a relative credentials_file made absolute."""
    out: dict[str, Any] = {}
    for k, v in table.items():
        if k not in PACS_KEYS:
            raise PacsConfigError(f"[pacs] has no key {k!r}; known: {', '.join(PACS_KEYS)}")
        if k == "since":
            v = v if isinstance(v, dt.date) and not isinstance(v, dt.datetime) else parse_since(str(v))
        if k == "credentials_file" and isinstance(v, str) and base is not None and not os.path.isabs(v):
            v = str(base / v)
        out[k] = v
    return out


def source_values(values: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Settings ``values`` get one source (``archive`` or ``pacs``) from a config file's tables and the flags.

    ``--archive`` or ``--pacs`` on the command line wins over the config file's source.
    """
    table = values.pop("pacs_table", None) or {}
    if overrides.get("archive") is not None and overrides.get("pacs_url") is not None:
        raise PacsConfigError("give the archive as a folder (--archive) or a PACS (--pacs), not both")
    if overrides.get("archive") is not None:
        table = {}
    if overrides.get("pacs_url") is not None:
        values.pop("archive", None)
        table = {**table, "url": overrides["pacs_url"]}
    for k in ("since", "calling_aet"):
        if overrides.get(k) is not None:
            if not table:
                raise PacsConfigError(f"--{k.replace('_', '-')} is for a PACS source; give --pacs URL too")
            table[k] = overrides[k]
    if table:
        if "url" not in table:
            raise PacsConfigError("[pacs] needs url = \"http://HOST:PORT/dicom-web\" or \"dimse://AET@HOST:PORT\"")
        if values.get("archive") is not None:  # both from the config file (a flag would have dropped one)
            raise PacsConfigError("the config file sets both [archive] path and [pacs] url; keep one")
        values["pacs"] = PacsSettings(**table)
