"""Render the report templates to strings (jinja2); ``report.py`` writes them.

HTML is rendered with autoescape on, so every identity name, path or reason from the data appears
as text, never as markup; Markdown cells are escaped by :func:`md_escape` for the same reason.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from facecls.bundle import facecls_version

# The page may load nothing: images only as data: URIs, no script or style file, no font, no fetch.
REPORT_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)
_MD_SPECIAL = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "\\|", "\\": "\\\\",
                             "`": "\\`", "*": "\\*", "[": "\\[", "]": "\\]", "\n": " "})  # fmt: skip


def md_escape(value: object) -> str:
    """Text for a Markdown table cell: HTML-escaped (Markdown viewers render raw HTML) and with
    the characters that would break the table or start formatting backslash-escaped."""
    return str(value).translate(_MD_SPECIAL)


def _number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    text = f"{value:.{digits}f}"
    return text.lstrip("-") if float(text) == 0.0 else text  # never "-0.000"


def breakable(value: object) -> Markup:
    """A name, HTML-escaped, that may wrap after each ``_``, ``-`` or ``.`` (``<wbr>``), so a
    column of LFW names (``Luiz_Inacio_Lula_da_Silva``) wraps at its parts, never mid-word."""
    return Markup(re.sub(r"([_.-])", r"\1<wbr>", str(escape(str(value)))))


def codes(value: object) -> Markup:
    """Text with Markdown's `code` spans, HTML-escaped and the spans as ``<code>``: the report's
    sentences that name commands read the same on the page as in ``report.md``."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(str(value)))))


def signed(value: float | None, digits: int = 3) -> str:
    """A difference with its sign, as printed: "+0.012", "-0.012", and "0.000" for anything that
    rounds to zero (never "-0.000", never a sign on nothing)."""
    if value is None:
        return "–"
    text = f"{value:+.{digits}f}"
    return f"{0.0:.{digits}f}" if float(text) == 0.0 else text


def format_p(p: float | None) -> str:
    """A p-value as people read it: three decimals, or "< 0.001"."""
    if p is None:
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _interval(low: float | None, high: float | None) -> str:
    return "–" if low is None or high is None else f"[{low:.3f}, {high:.3f}]"


def environment(html: bool) -> jinja2.Environment:
    """The jinja2 environment: autoescape on for HTML, so every name from the data is escaped."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=html,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        num=_number,
        ci=_interval,
        md=md_escape,
        p=format_p,
        signed=signed,
        breakable=breakable,
        codes=codes,
    )
    env.globals.update(csp=REPORT_CSP, version=_version())
    return env


def _version() -> str:

    return facecls_version()


def render(template: str, context: dict[str, Any]) -> str:
    """Render ``templates/<template>``; HTML templates (``*.html.j2``) are autoescaped."""
    return environment(template.endswith(".html.j2")).get_template(template).render(context)
