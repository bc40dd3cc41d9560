"""Render HTML from the Jinja2 templates in ``reports/``, autoescape always on.

Why one place: every page carries patient names that may hold markup
(``<script>`` in a name field is a real test case), so escaping is decided
here once and cannot be turned off by a template. Images are inlined as data
URIs so a page works offline from a shared drive.
"""

from __future__ import annotations

import base64
from functools import lru_cache
from pathlib import Path
from typing import Any

from osteo_batch.resources import REPORTS_DIR

DISCLAIMER = (
    "Screening aid, not a diagnosis. DXA confirms osteoporosis. "
    "A low score does not rule osteoporosis out."
)


@lru_cache(maxsize=None)
def _env():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(
        loader=FileSystemLoader(str(REPORTS_DIR)),
        autoescape=True,  # for every template, whatever its extension
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["DISCLAIMER"] = DISCLAIMER
    env.filters["pct"] = lambda x, d=0: "—" if x is None else f"{100 * x:.{d}f}%"
    env.filters["num"] = lambda x, d=3: "—" if x is None else f"{x:.{d}f}"
    return env


def render(template: str, **context: Any) -> str:
    return _env().get_template(template).render(**context)


def png_data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI: pages embed their images, so one file is the whole page (no folder of
    images beside it to copy, lose or leave readable)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def data_uri_png(path: str | Path) -> str:
    """The PNG file at ``path`` as a ``data:`` URI (see :func:`png_data_uri`)."""
    return png_data_uri(Path(path).read_bytes())
