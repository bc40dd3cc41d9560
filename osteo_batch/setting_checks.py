"""How a setting's value is checked and shown: a type, a range, and the TOML form for messages.

Why apart from :mod:`osteo_batch.settings`: the checks are pure and shared by
every table of the configuration (``[run]``, ``[worklist]``, ``[pacs]``,
``[results]``); the settings module keeps what the settings are.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Spec:
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


def show(v: Any) -> str:
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
