"""The tuning page: every trial of a ``facecls tune`` study, best first, as Markdown and HTML."""

from __future__ import annotations

from html import escape
from typing import Any


def _cells(row: dict[str, Any], best: int) -> list[str]:
    value = "—" if row["value"] is None else f"{row['value']:.4f}"
    params = ", ".join(
        f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in row["params"].items()
    )
    mark = " (best)" if row["number"] == best else ""
    return [f"{row['number']}{mark}", row["state"], value, params]


def tuning_pages(rows: list[dict[str, Any]], best: int) -> tuple[str, str]:
    """``(markdown, html)`` of the trials, sorted by validation balanced accuracy."""
    ordered = sorted(rows, key=lambda r: (r["value"] is None, -(r["value"] or 0.0), r["number"]))
    header = ["trial", "state", "validation balanced accuracy", "settings"]
    title = "Tuning: validation balanced accuracy per trial"
    note = (
        f"{len(rows)} trial(s); best trial {best}, written to best.yaml "
        "(`facecls train --config best.yaml`). Scores are on validation data, never the test part."
    )
    md = [f"# {title}", "", note, "", "| " + " | ".join(header) + " |", "|---" * 4 + "|"]
    md += ["| " + " | ".join(_cells(r, best)) + " |" for r in ordered]
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in _cells(r, best)) + "</tr>"
        for r in ordered
    )
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    html = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.2em .6em;"
        "border-bottom:1px solid #ddd;text-align:left}</style></head><body>"
        f"<h1>{escape(title)}</h1><p>{escape(note)}</p><table><tr>{head}</tr>{body}</table>"
        "</body></html>"
    )
    return "\n".join(md) + "\n", html
