"""The colours of an answer, the same everywhere a face is drawn: annotated photos, annotated
videos, the service's page and reports.

Named faces are green and ``unknown`` faces orange, with black text on their tags: both stay
legible on skin, sky and dark clothes, and orange is not read as an error (a stranger is an
answer, not a failure).
"""

from __future__ import annotations

KNOWN = (46, 204, 64)  # RGB, #2ecc40
UNKNOWN = (255, 133, 27)  # RGB, #ff851b
OTHER = (200, 200, 200)  # a face without a decision
TEXT = (0, 0, 0)  # the label on a tag of either colour


def colour_of(decision: str) -> tuple[int, int, int]:
    """RGB of a face with this ``decision`` (``known``, ``unknown``, anything else)."""
    return {"known": KNOWN, "unknown": UNKNOWN}.get(decision, OTHER)


def css(rgb: tuple[int, int, int]) -> str:
    """``#rrggbb`` for a page or a style sheet."""
    return "#" + "".join(f"{v:02x}" for v in rgb)


def bgr(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """The same colour in OpenCV's channel order."""
    return rgb[2], rgb[1], rgb[0]
