"""Who is screened: declarative selection rules over DICOM keywords.

Why declarative: programs differ (age 50 or 65, PA only, CR excluded...), and
a rule file a coordinator can read beats a chain of ``if``s. The model follows
MONAI Deploy's series selector: named rules, each a list of conditions (equals,
in, regex, numeric range); AND within a rule, OR across rules. The shipped
defaults live in ``osteo_batch/defaults/eligibility.toml``.

Regexes are RE2 (google-re2), not Python's ``re``: a rule is matched against
every file's header, and a backtracking engine can spend seconds on one value
(``(x+x+)+y`` against 27 characters took 9 s with ``re``). RE2 matches in time
linear in the value whatever the pattern, and refuses, when the rules load,
what needs backtracking (backreferences, lookarounds). The whole value must
match (``fullmatch``), as before; RE2's ``\\d``, ``\\w``, ``\\b`` are ASCII.

One check is built in and applies whatever the rules say: a study date a
program must not trust makes a file ``ineligible:study_date`` (an age computed
from it would be wrong). That is a study date after the run date (today in the
archive's time zone, ``[archive] timezone``), before 1900, or a StudyDate the
header holds but that does not parse as a date. Unlike the rules, whose verdict
is kept until the rules or the file change, this one is re-derived every night
(``sql/eligibility_inputs.sql``): a date in the future becomes plausible when
its day arrives.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from osteo_batch.errors import UserError
from osteo_batch.reasons import Reason

DEFAULT_RULES = Path(__file__).resolve().parents[1] / "defaults" / "eligibility.toml"  # osteo_batch/defaults, package data
_TESTS = ("equals", "in", "regex", "min", "max")

#: The eligibility reason of the built-in study date check.
STUDY_DATE_REASON = Reason.STUDY_DATE.value
#: Study dates before this day are not trusted.
EARLIEST_STUDY_DATE = dt.date(1900, 1, 1)
#: What is wrong with an untrusted study date (``study_date_problem`` in
#: ``sql/eligibility_inputs.sql`` and ``sql/study_dates.sql``) -> what it means.
STUDY_DATE_PROBLEMS = {
    "after_run_date": "after the run date",  # today in the archive's time zone
    "before_1900": "before 1900",
    "unparseable": "not a date",  # a StudyDate that is not YYYYMMDD, and no other date to go by
}


def study_date_params(run_date: dt.date) -> dict[str, dt.date]:
    """The parameters of the study date check, for the SQL that applies it."""
    return {"run_date": run_date, "earliest": EARLIEST_STUDY_DATE}


class RuleError(UserError, ValueError):
    """A rule file that cannot be used; the message names the rule and the fix."""

    code = "bad_rule"


@dataclass(frozen=True)
class Condition:
    name: str
    source: str  # DICOM keyword or derived field
    derived: bool
    equals: Any = None
    one_of: tuple[str, ...] | None = None
    regex: Any = None  # a compiled RE2 pattern (see _compile_regex)
    min: float | None = None
    max: float | None = None

    def test(self, value: Any) -> bool:
        if value is None or value == "":
            return False
        if self.equals is not None and str(value) != str(self.equals):
            return False
        if self.one_of is not None and str(value) not in self.one_of:
            return False
        if self.regex is not None and not self.regex.fullmatch(str(value)):
            return False
        if self.min is not None or self.max is not None:
            try:
                x = float(value)
            except (TypeError, ValueError):
                return False
            if self.min is not None and x < self.min:
                return False
            if self.max is not None and x > self.max:
                return False
        return True


@dataclass(frozen=True)
class Rule:
    name: str
    conditions: tuple[Condition, ...]

    def first_failure(self, header: Mapping[str, Any], derived: Mapping[str, Any]) -> str | None:
        for c in self.conditions:
            value = derived.get(c.source) if c.derived else header.get(c.source)
            if not c.test(value):
                return c.name
        return None


@dataclass(frozen=True)
class Rules:
    rules: tuple[Rule, ...]
    source: str
    digest: str = ""  # hash of the rule text: a change re-evaluates every file

    def reason(self, header: Mapping[str, Any], derived: Mapping[str, Any]) -> str | None:
        """None when eligible, else ``ineligible:<condition>`` (one per rule, joined by ``|``)."""
        failures: list[str] = []
        for r in self.rules:
            f = r.first_failure(header, derived)
            if f is None:
                return None
            if f not in failures:
                failures.append(f)
        return "ineligible:" + "|".join(failures)


#: Python syntax RE2 lacks because it needs backtracking, and what to call it in the message.
_BACKTRACKING = (
    (re.compile(r"\\[1-9]|\(\?P=|\\g<"), "a backreference"),
    (re.compile(r"\(\?<?[=!]"), "a lookaround ((?=, (?!, (?<=, (?<!)"),
)


def _compile_regex(pattern: Any, where: str):
    """``pattern`` compiled with RE2 (linear-time matching), or a one-line RuleError saying why not.

    RE2's own parse errors are not logged (``log_errors = False``): they would
    go to the process's stderr, outside the one-line error.
    """
    import re2

    if not isinstance(pattern, str):
        raise RuleError(f"{where}: regex must be text, e.g. regex = \"(?i)CHEST|THORAX\"")
    opts = re2.Options()
    opts.log_errors = False
    try:
        return re2.compile(pattern, opts)
    except re2.error as e:
        for rx, what in _BACKTRACKING:
            if rx.search(pattern):
                raise RuleError(f"{where}: bad regex: {what} needs backtracking, whose time per value has no bound; "
                                "rules use RE2 syntax (github.com/google/re2/wiki/Syntax): rewrite it without") from None
        detail = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        detail = " ".join(detail.split())[:120]
        raise RuleError(f"{where}: bad regex: {detail} (rules use RE2 syntax, github.com/google/re2/wiki/Syntax)") from None


def _condition(rule: str, raw: Mapping[str, Any]) -> Condition:
    name = raw.get("name")
    if not name:
        raise RuleError(f"rule {rule!r}: every condition needs a name (used in rejection reasons)")
    if ("keyword" in raw) == ("field" in raw):
        raise RuleError(f"rule {rule!r}, condition {name!r}: give exactly one of 'keyword' (a DICOM keyword) or 'field' (age)")
    if "keyword" in raw:
        from pydicom.datadict import keyword_dict

        if raw["keyword"] not in keyword_dict:
            raise RuleError(f"rule {rule!r}, condition {name!r}: {raw['keyword']!r} is not a DICOM keyword (e.g. 'PatientSex', 'ViewPosition')")
    elif raw["field"] != "age":
        raise RuleError(f"rule {rule!r}, condition {name!r}: unknown field {raw['field']!r}; the derived field is 'age'")
    unknown = set(raw) - {"name", "keyword", "field", *_TESTS}
    if unknown:
        raise RuleError(f"rule {rule!r}, condition {name!r}: unknown key(s) {sorted(unknown)}; allowed: name, keyword, field, {', '.join(_TESTS)}")
    if not any(t in raw for t in _TESTS):
        raise RuleError(f"rule {rule!r}, condition {name!r}: needs one of {', '.join(_TESTS)}")
    if "in" in raw and not isinstance(raw["in"], list):
        raise RuleError(f"rule {rule!r}, condition {name!r}: 'in' must be a list, e.g. in = [\"CR\", \"DX\"]")
    for bound in ("min", "max"):
        if bound in raw and (isinstance(raw[bound], bool) or not isinstance(raw[bound], (int, float))):
            raise RuleError(f"rule {rule!r}, condition {name!r}: {bound} = {raw[bound]!r} must be a number")
    rx = _compile_regex(raw["regex"], f"rule {rule!r}, condition {name!r}") if "regex" in raw else None
    return Condition(
        name=str(name),
        source=raw.get("keyword") or raw["field"],
        derived="field" in raw,
        equals=raw.get("equals"),
        one_of=tuple(str(v) for v in raw["in"]) if "in" in raw else None,
        regex=rx,
        min=float(raw["min"]) if "min" in raw else None,
        max=float(raw["max"]) if "max" in raw else None,
    )


def parse_rules(doc: Mapping[str, Any], source: str) -> Rules:
    raw_rules = doc.get("rule")
    if not raw_rules:
        raise RuleError(f"{source}: no [[rule]] entries; see {DEFAULT_RULES.name} for the format")
    if not isinstance(raw_rules, list) or not all(isinstance(r, dict) for r in raw_rules) or not all(
        isinstance(c, dict) for r in raw_rules for c in (r.get("condition") or [])
    ):
        raise RuleError(f"{source}: rules are tables: write [[rule]] and [[rule.condition]], see {DEFAULT_RULES.name}")
    rules = []
    for i, r in enumerate(raw_rules):
        name = r.get("name") or f"rule{i + 1}"
        conds = tuple(_condition(name, c) for c in r.get("condition", []))
        if not conds:
            raise RuleError(f"rule {name!r}: has no [[rule.condition]] entries")
        rules.append(Rule(name, conds))
    canon = json.dumps(raw_rules, sort_keys=True, default=str)
    return Rules(tuple(rules), source, hashlib.sha256(canon.encode()).hexdigest()[:16])


def load_rules(path: str | Path | None = None) -> Rules:
    """Rules from a TOML file holding ``[[rule]]`` entries; the shipped defaults if None."""
    p = Path(path) if path else DEFAULT_RULES
    try:
        with p.open("rb") as f:
            doc = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RuleError(f"{p.name}: not valid TOML ({e})") from None
    if "rule" not in doc and p != DEFAULT_RULES:
        return load_rules(None)  # a config file without rules keeps the defaults
    return parse_rules(doc, p.name)
