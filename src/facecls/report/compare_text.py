"""The comparison as the terminal shows it: each verdict sentence, then Table 5 (the test
scores with their 95 % intervals) as aligned text. ``facecls compare`` prints it beside the
path of the page, so the answer is on screen without opening a browser."""

from __future__ import annotations

from typing import Any


def _cell(value: float | None, low: float | None = None, high: float | None = None) -> str:
    if value is None:
        return "–"
    interval = "" if low is None or high is None else f" [{low:.3f}, {high:.3f}]"
    return f"{value:.3f}{interval}"


def verdict_lines(context: dict[str, Any]) -> list[str]:
    """One line per pair of runs: its verdict sentence, or why it could not be paired."""
    lines = []
    for couple in context["couples"]:
        head = f"{couple['a']} vs {couple['b']}: "
        if couple["paired"]:
            lines.append(f"{head}{couple['verdict']} (paired on {couple['why']})")
        else:
            lines.append(f"{head}not paired: {couple['why']}.")
    return lines


def score_table(context: dict[str, Any]) -> list[str]:
    """Table 5 of the comparison: one row per test score, one column per run."""
    header = ["Metric (test part)", *context["names"]]
    rows = [header]
    for row in context["rows"]:
        rows.append([row["label"], *(_cell(c["value"], c["low"], c["high"]) for c in row["cells"])])
    for row in context["averages"]:  # with their intervals, as the page shows them
        cells = (_cell(c["value"], c.get("low"), c.get("high")) for c in row["cells"])
        rows.append([f"Class average {row['label']}", *cells])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def comparison_text(context: dict[str, Any]) -> str:
    """The verdicts and the score table of a comparison page's ``context``."""
    return "\n".join([*verdict_lines(context), "", *score_table(context)])
