"""Storing a calibration in a bundle, setting a threshold by hand, and saying what was set."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from facecls.bundle import (
    CENTROIDS_NAME,
    META_NAME,
    BundleError,
    bundle_folder,
    read_centroids,
    read_sidecar,
    update_meta,
    write_centroids,
)
from facecls.numbers import finite
from facecls.openset import CENTROID_METHODS, DEFAULT_METHOD, METHODS
from facecls.openset_calibration import Calibration
from facecls.openset_fpir import by_name
from facecls.openset_thresholds import enrolled_method


def write_calibration(
    folder: Path, calibration: Calibration, verification: dict[str, Any] | None = None
) -> None:
    """Store a calibration in a bundle folder (centroids first, then the JSON that names them);
    ``verification`` (see :func:`~facecls.inference.verify_threshold.calibrate_verification`), when given,
    becomes the ``verify`` entry of ``model.json``."""
    if calibration.centroids is not None:
        tensors = read_centroids(folder)
        tensors["trained"] = calibration.centroids
        write_centroids(folder, tensors)
    entries: dict[str, Any] = {"openset": calibration.meta()}
    if verification is not None:
        entries["verify"] = verification
    update_meta(folder, **entries)


def describe_verify(verification: dict[str, Any]) -> str:
    """One line on the verification threshold for logs."""
    if "threshold" not in verification:
        return f"Verify: no threshold calibrated ({verification.get('missing', 'no pairs')})"
    stats = verification["calibration"]
    tar = stats.get("true_accept_rate")
    accepts = (
        f"accepts {tar:.1%} of {stats['genuine_pairs']} same-person pairs" if tar is not None
        else "no same-person pair to measure the true-accept rate on"
    )  # fmt: skip
    return (
        f"Verify: threshold {verification['threshold']:.4f} (cosine) at FAR "
        f"{verification['far']:.1%} on {stats['impostor_pairs']} pairs of different people "
        f"({stats['part']}); {accepts}"
    )


def set_threshold(
    model_path: Path, threshold: float | None = None, method: str | None = None
) -> dict[str, Any]:
    """Change the stored open-set method and/or threshold of a calibrated bundle in place.

    Choosing a method without a threshold uses that method's calibrated threshold.

    Returns:
        The new ``openset`` entry.
    """
    folder = bundle_folder(model_path)
    meta = read_sidecar(folder / META_NAME)
    openset = dict(meta.get("openset") or {})
    if method is not None:
        if method not in METHODS:
            raise ValueError(f"unknown open-set method {method!r}; choose one of {METHODS}")
        if method in CENTROID_METHODS and not read_centroids(folder):
            raise BundleError(f"{folder}: no {CENTROIDS_NAME}; calibrate from data first")
        openset["method"] = method
        if threshold is None:
            if method not in openset.get("thresholds", {}):
                raise BundleError(f"{folder}: no calibrated {method} threshold; give --threshold")
            openset["threshold"] = openset["thresholds"][method]
    if threshold is not None:
        threshold = finite(threshold, "--threshold")
        if method is None:  # the threshold is for the score the model decides by
            enrolled = bool((meta.get("enrolled") or {}).get("names"))
            openset["method"] = (
                enrolled_method(openset) if enrolled else openset.get("method", DEFAULT_METHOD)
            )
        openset["threshold"] = float(threshold)
        openset["set_by_hand"] = True
    update_meta(folder, openset=openset)
    return openset


def describe_look_alikes(openset: dict[str, Any], names: list[str]) -> str | None:
    """One line on the known people taken for each other above the threshold in use (``None``
    when there are none): the pseudo-strangers that set a threshold by the stranger rate."""
    rates = (openset.get("rates") or {}).get(openset.get("method", ""), {})
    pairs = by_name(rates.get("look_alikes") or [], names)
    if not pairs:
        return None
    listed = ", ".join(f"{p['person']} as {p['as']} ({p['score']:.3f})" for p in pairs)
    return (
        f"Look-alikes: with their own identity left out, these people are still named (above "
        f"the threshold): {listed}. A stranger who looks like one of them is the likeliest to "
        "be named"
    )


# Where the validation part is too small for the stranger rate: what sets it instead.
STRANGERS_HINT = (
    "facecls calibrate RUN --strangers PHOTOS/ (or a face library with forgotten people; 5 / "
    "--fpir photos at least, 500 at 1 %) sets it by the stranger rate on real strangers"
)


def log_look_alikes(openset: dict[str, Any], folder: Path, log: Callable[[str], None]) -> None:
    """Log :func:`describe_look_alikes` with the names in the bundle ``folder`` (if any pair)."""
    names = read_sidecar(folder / META_NAME).get("class_names") or []
    line = describe_look_alikes(openset, list(names))
    if line:
        log(line)


def describe(openset: dict[str, Any]) -> str:
    """One line on a calibration for logs."""
    stats = openset.get("calibration", {})
    rates = (openset.get("rates") or {}).get(openset["method"], {})
    if openset.get("rule") == "fpir":
        real = stats.get("strangers")
        if real:
            whom = f"{real['photos']} stranger photos ({real['people']} people, each counted once)"
        elif stats.get("stranger_weighting"):
            whom = (f"{stats.get('pseudo_strangers', '?')} pseudo-strangers "
                    f"({stats.get('pseudo_stranger_people', '?')} people, each counted once)")  # fmt: skip
        else:
            whom = f"{stats.get('pseudo_strangers', '?')} pseudo-strangers"
        how = (
            f"names {openset['fpir']:.1%} of {whom}; names "
            f"{rates.get('named', float('nan')):.1%} of the validation faces"
        )
        if rates.get("named_views") is not None:
            how += f" and {rates['named_views']:.1%} of their views as photos show them"
    else:
        how = (
            f"accepts {openset.get('acceptance', 0):.0%} of the "
            f"{stats.get('validation_correct', '?')} correctly named validation faces"
        )
        if stats.get("fallback"):
            how += f"; {stats['fallback']}; {STRANGERS_HINT}"
    return (
        f"Open set: method {openset['method']}, threshold {openset['threshold']:.4f} ({how}); "
        "thresholds " + ", ".join(f"{m} {t:.4f}" for m, t in openset.get("thresholds", {}).items())
    )
