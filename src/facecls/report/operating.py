"""The open-set operating point of a model as the report and the model card show it: the score,
its threshold, how it was set, and the named and stranger rates per face-size band."""

from __future__ import annotations

from typing import Any

from facecls.openset_fpir import by_name
from facecls.report.render import md_escape

LOOK_ALIKES_NOTE = (
    "Known people taken for each other when one of them is left out (relatives, look-alikes): "
    "with their own identity missing, some of their photos still score above the threshold, as "
    "a stranger who looks like the other would. Where the threshold is set by the stranger rate "
    "on these pseudo-strangers, they set it, and where the people resemble each other more than "
    "strangers resemble them, it names fewer real strangers than its target (`facecls calibrate "
    "--strangers` sets it on real ones)."
)


def operating_point(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The operating point of a bundle's ``model.json`` content; ``None`` when uncalibrated."""
    openset = meta.get("openset") or {}
    if not openset or "threshold" not in openset:
        return None
    method = openset.get("method", "msp")
    by_hand = bool(openset.get("set_by_hand"))
    # the rates were measured at the calibrated threshold: none beside one set by hand
    rates = {} if by_hand else (openset.get("rates") or {}).get(method, {})
    stats = openset.get("calibration") or {}
    return {
        "method": method,
        "threshold": float(openset["threshold"]),
        "rule": openset.get("rule", "acceptance"),
        "fpir": openset.get("fpir"),
        "acceptance": openset.get("acceptance"),
        "named": rates.get("named"),
        "named_views": rates.get("named_views"),
        "pseudo_strangers": stats.get("pseudo_strangers"),
        "pseudo_named": rates.get("pseudo_strangers_named"),
        "people": stats.get("pseudo_stranger_people") if stats.get("stranger_weighting") else None,
        "strangers": stats.get("strangers"),
        "strangers_named": rates.get("strangers_named"),
        "views": stats.get("views"),
        "fallback": stats.get("fallback"),
        "bands": list(rates.get("bands") or []),
        "look_alikes": [
            dict(pair, count=photos_and_views(pair))
            for pair in by_name(rates.get("look_alikes") or [], meta.get("class_names") or [])
        ],
        "old": int(openset.get("version", 1)) < 2,
        "by_hand": by_hand,
    }


def how_set(point: dict[str, Any]) -> str:
    """One sentence on how the threshold was set."""
    if point["by_hand"]:
        return "set by hand (`facecls calibrate --threshold`)"
    if point["rule"] == "fpir" and point.get("strangers"):
        real = point["strangers"]
        text = (
            f"set where {point['fpir']:.1%} of {real['photos']} photos of {real['people']} "
            "strangers given to `facecls calibrate --strangers` are named (each person counted "
            "once)"
        )
        if point["named"] is not None:
            text += f"; it names {point['named']:.1%} of the validation faces"
        return text
    if point["rule"] == "fpir":
        each = f", {point['people']} people each counted once" if point.get("people") else ""
        text = (
            f"set where {point['fpir']:.1%} of {point['pseudo_strangers']} pseudo-strangers "
            f"(validation people left out of their own class{each}) are named"
        )
        if point["named"] is not None:
            text += f"; it names {point['named']:.1%} of the validation faces"
        if point["named_views"] is not None:
            text += (
                f" and {point['named_views']:.1%} of their {point['views']} views as photos "
                "show them (smaller, softer, tilted, off-centre)"
            )
        # pseudo-strangers are the trained people: real strangers may resemble them less or more
        return text + (
            ". `facecls calibrate RUN --strangers PHOTOS/` sets it on photos of people the model "
            "must not name instead (or `--strangers LIBRARY`: the people forgotten in a face "
            "library)"
        )
    text = f"set to accept {point['acceptance']:.0%} of the correctly named validation faces"
    if point["fallback"]:
        text += (
            f" ({point['fallback']}; `facecls calibrate RUN --strangers PHOTOS/` sets it by the "
            "stranger rate on photos of people it must not name, 500 or more at 1 %, or "
            "`--strangers LIBRARY` on the people forgotten in a face library)"
        )
    if point["old"]:
        text += (
            "; calibrated by an older facecls: `facecls calibrate RUN_FOLDER` sets it by the "
            "stranger rate"
        )
    return text


def band_lines(point: dict[str, Any]) -> list[str]:
    """A Markdown table of the named and stranger rates per face-size band (``[]`` without)."""
    header = ["face size (detector box)", "faces", "named correctly",
              "pseudo-strangers answered unknown"]  # fmt: skip
    return _table(header, [
        [row["band"], str(row["faces"]), f"{row['named']:.1%}", f"{row['strangers_unknown']:.1%}"]
        for row in point["bands"]
    ])  # fmt: skip


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a Markdown table (``[]`` without rows)."""
    if not rows:
        return []

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    return [line(header), line(["---"] * len(header)), *map(line, rows)]


def photos_and_views(pair: dict[str, Any]) -> str:
    """``3 (and 2 views)``: how many of a look-alike's photos, and of their views, are named."""
    views = int(pair.get("views", 0))
    more = f" (and {views} view{'s' if views > 1 else ''})" if views else ""
    return f"{pair['photos']}{more}"


def look_alike_lines(point: dict[str, Any]) -> list[str]:
    """A Markdown table of the known people taken for each other above the threshold (``[]``
    when there are none)."""
    header = ["person", "named as (when left out)", "highest score", "photos (and views)"]
    return _table(header, [
        [md_escape(p["person"]), md_escape(p["as"]), f"{p['score']:.4f}", p["count"]]
        for p in point["look_alikes"]
    ])  # fmt: skip
