"""One check for every number a user or a file gives facecls: a finite number (and, where the
caller says so, within a range), or one line naming the option or field.

``nan`` and ``inf`` parse as floats, and every comparison with NaN is false, so a range check
alone lets them through (a threshold of -inf accepts every pair as "same"): the command line's
float options (:func:`finite_float`), config files, ``model.json`` and the service's form
fields all pass through :func:`finite`.
"""

from __future__ import annotations

import argparse
import math
from typing import Any


class NumberError(ValueError):
    """A number is not finite or is out of its range; the message names where it came from."""


def is_finite_number(value: Any) -> bool:
    """A finite int or float (``bool`` excluded: JSON's ``true`` is not a number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def finite(value: Any, what: str, low: float | None = None, high: float | None = None) -> float:
    """``value`` as a float when it is a finite number within ``[low, high]``.

    Args:
        what: the option or field, as the message should name it (``--threshold``).

    Raises:
        NumberError: naming ``what``, the value and the range.
    """
    if not is_finite_number(value):
        raise NumberError(f"{what} must be a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise NumberError(f"{what} must be in [{lo}, {hi}], got {value!r}")
    return float(value)


def finite_float(text: str) -> float:
    """argparse ``type`` of every float option: refuses ``nan``, ``inf`` and non-numbers when
    the command line is parsed (argparse names the option)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value
