"""PACS and FHIR credentials, read from an environment variable or a private file, never from a URL.

Why a file or a variable and one strict format: a password in a URL or a
settings file ends up in process lists, shell histories and the run's logs.
The secret lives in one place the operator protects (a 0600 file, or a
variable the scheduler injects) and is one line::

    basic USER:PASSWORD      HTTP Basic (the user name ends at the first colon)
    bearer TOKEN             an OAuth2 / API bearer token

The first word is case-insensitive; whitespace around the line and between
the words is ignored. Every error says what is wrong and names the file by its
name only, and never repeats any part of the line (a mistyped first word may be
the secret itself).
"""

from __future__ import annotations

import base64
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from osteo_batch.errors import UserError

FORMAT_HINT = "one line 'basic USER:PASSWORD' or 'bearer TOKEN'"


class CredentialsError(UserError):
    """The credentials variable or file is missing, unprotected or not in the one format."""

    code = "credentials_invalid"
    fix = f"write {FORMAT_HINT}"


@dataclass(frozen=True, repr=False)
class Credentials:
    """Basic (``username`` and ``password``) or bearer (``token``) credentials; exactly one kind is set.

    ``repr`` and ``str`` show the kind only, so a credentials object that
    reaches a log, a traceback's locals or a Prefect parameter shows no secret.
    """

    username: str | None = None
    password: str | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        basic = self.username is not None or self.password is not None
        if basic == (self.token is not None):
            raise ValueError("Credentials holds either username and password, or a token")
        if basic and (not self.username or self.password is None or ":" in self.username):
            raise ValueError("basic credentials need a user name without ':' and a password")

    @property
    def kind(self) -> str:
        return "bearer" if self.token is not None else "basic"

    def authorization(self) -> str:
        """The HTTP ``Authorization`` header value (RFC 7617 Basic or RFC 6750 Bearer)."""
        if self.token is not None:
            return f"Bearer {self.token}"
        raw = f"{self.username}:{self.password}".encode("utf-8")
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def __repr__(self) -> str:
        return f"Credentials(kind={self.kind!r})"

    __str__ = __repr__


def parse_credentials(text: str, *, source: str) -> Credentials:
    """``text`` in the one format, as :class:`Credentials`; ``source`` names where it came from in errors."""
    line = text.strip()
    if not line:
        raise CredentialsError(f"{source} is empty", code="credentials_empty")
    if "\n" in line or "\r" in line:
        raise CredentialsError(f"{source} holds more than one line", code="credentials_malformed")
    scheme, *rest_ = line.split(None, 1)
    scheme, rest = scheme.lower(), (rest_[0].strip() if rest_ else "")
    if scheme == "basic":
        user, colon, password = rest.partition(":")
        if not colon or not user or not password:
            raise CredentialsError(f"{source}: 'basic' must be followed by USER:PASSWORD", code="credentials_malformed")
        return Credentials(username=user, password=password)
    if scheme == "bearer":
        if not rest or any(c.isspace() for c in rest):
            raise CredentialsError(f"{source}: 'bearer' must be followed by one token", code="credentials_malformed")
        return Credentials(token=rest)
    raise CredentialsError(f"{source} must start with 'basic' or 'bearer'", code="credentials_malformed")


def read_credentials_file(path: Path) -> str:
    """The text of ``path``, refused unless it is a regular file with mode 0600 or stricter (0400).

    The file is opened once and checked through its descriptor (no race
    between the check and the read); ``O_NONBLOCK`` keeps a FIFO put in its
    place from hanging the run.
    """
    name = Path(path).name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise CredentialsError(f"credentials file {name} cannot be opened ({e.strerror or 'error'})",
                               code="credentials_unreadable",
                               fix="check the credentials file's path and owner") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CredentialsError(f"credentials file {name} is not a regular file", code="credentials_unreadable",
                                   fix="point the setting at a regular file")
        if st.st_mode & 0o177:  # 0600 or stricter: nothing for group or others (nor execute)
            raise CredentialsError(
                f"credentials file {name} has mode {stat.S_IMODE(st.st_mode):04o}; it must be 0600 or stricter",
                code="credentials_file_mode", fix=f"chmod 600 {name}")
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            if sum(map(len, chunks)) > 65536:
                raise CredentialsError(f"credentials file {name} is larger than 64 KiB", code="credentials_malformed")
    except OSError as e:
        raise CredentialsError(f"credentials file {name} cannot be read ({e.strerror or 'error'})",
                               code="credentials_unreadable", fix="check the credentials file") from None
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialsError(f"credentials file {name} is not UTF-8 text", code="credentials_malformed") from None


def load_credentials(env_var: str | None, file: Path | None) -> Credentials | None:
    """The credentials in the environment variable named ``env_var``, or in ``file``; None when neither holds any.

    A variable that is not set holds none (so a default variable name can
    always be passed); one that is set, even to an empty value, counts. A set
    variable and a file together are refused: which one wins would be a guess.
    """
    value = os.environ.get(env_var) if env_var else None
    if value is not None and file is not None:
        raise CredentialsError(f"credentials are given both by environment variable {env_var} and by a file",
                               code="credentials_conflict", fix=f"unset {env_var} or drop the credentials file")
    if value is not None:
        return parse_credentials(value, source=f"environment variable {env_var}")
    if file is not None:
        return parse_credentials(read_credentials_file(Path(file)), source=f"credentials file {Path(file).name}")
    return None
