"""The check of a model bundle's ``model.json`` and its weights digest, shared by every loader.

A sidecar is refused, naming the file and the first problem, before anything is built from it:
fields and types, one class name per class, finite means and positive finite stds, an image
size and class count within bounds (so a hostile file cannot ask for 10**9 classes), a size the
architecture takes, and the ``openset`` and ``enrolled`` blocks. ``model.json`` records the
sha256 of the weights, so weights swapped in from another run are refused.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

from facecls.config import FACES, MAX_IMAGE_SIZE
from facecls.models import model_info
from facecls.models.facenet_files import sha256_of
from facecls.numbers import is_finite_number
from facecls.openset import METHODS

BUNDLE_FORMAT = "facecls-model"
# Refused before anything is allocated: a hostile model.json must not ask for 10**9 classes.
MAX_CLASSES = 1_000_000
DIGEST_KEY = "weights_sha256"


class BundleError(ValueError):
    """A model file cannot be loaded; the message names it and why."""


class BundleWarning(UserWarning):
    """A bundle loads but lacks a safeguard (written before facecls recorded its weights' digest)."""


_number = is_finite_number  # the one check of every number a file gives (facecls.numbers)


def _meta_problem(meta: Any) -> str | None:
    """What is wrong with a ``model.json`` document, or ``None`` when it can be used."""
    if not isinstance(meta, dict):
        return f"must hold a JSON object, not {type(meta).__name__}"
    if meta.get("format") != BUNDLE_FORMAT:
        return 'not a facecls model sidecar (no "format": "facecls-model")'
    types = {"architecture": str, "num_classes": int, "class_names": list, "image_size": int,
             "mean": list, "std": list}  # fmt: skip
    for key, kind in types.items():
        if key not in meta:
            return f"the field {key!r} is missing"
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            return f"{key!r} must be a {kind.__name__}, not {type(meta[key]).__name__}"
    num, size, names = meta["num_classes"], meta["image_size"], meta["class_names"]
    if not 1 <= num <= MAX_CLASSES:
        return f"num_classes {num} is outside 1..{MAX_CLASSES:,}"
    if not all(isinstance(n, str) for n in names) or len(names) != num:
        return f"class_names must be {num} strings (num_classes), got {len(names)} entries"
    if len(set(names)) != len(names):
        return "class_names has a name twice"
    info = model_info(meta["architecture"])
    low = (info.min_size if info else None) or 8
    if not low <= size <= MAX_IMAGE_SIZE:
        return f"image_size {size} is outside {low}..{MAX_IMAGE_SIZE} for {meta['architecture']}"
    if len(meta["mean"]) != 3 or not all(_number(v) for v in meta["mean"]):
        return "mean must be three finite numbers"
    if len(meta["std"]) != 3 or not all(_number(v) and v > 0 for v in meta["std"]):
        return "std must be three positive finite numbers"
    crop = meta.get("crop", 1.0)
    if not (_number(crop) and 0 < crop <= 1):
        return f"crop must be a number in (0, 1], not {crop!r}"
    faces = meta.get("faces", "centre")
    if faces not in FACES:
        return f"faces must be one of {', '.join(FACES)}, not {faces!r}"
    digest = meta.get(DIGEST_KEY)
    if digest is not None and not (
        isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)
    ):
        return f"{DIGEST_KEY} must be 64 hex digits"
    enrolled = meta.get("enrolled", {})
    names = enrolled.get("names", []) if isinstance(enrolled, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return "enrolled must be a JSON object whose names are strings"
    return _openset_problem(meta.get("openset")) or _verify_problem(meta.get("verify"))


def _verify_problem(verify: Any) -> str | None:
    """What is wrong with the ``verify`` block (absent is fine)."""
    if verify is None:
        return None
    if not isinstance(verify, dict):
        return "verify must be a JSON object"
    if "threshold" in verify and not _number(verify["threshold"]):
        return f"verify threshold must be a finite number, not {verify['threshold']!r}"
    if verify.get("far") is not None and not (_number(verify["far"]) and 0 <= verify["far"] < 1):
        return f"verify far must be a number in [0, 1), not {verify['far']!r}"
    return None


def _openset_problem(openset: Any) -> str | None:
    """What is wrong with the ``openset`` block (absent is fine)."""
    if openset is None:
        return None
    if not isinstance(openset, dict):
        return "openset must be a JSON object"
    if openset.get("method", "msp") not in METHODS:
        return f"openset method must be one of {METHODS}, not {openset.get('method')!r}"
    thresholds = openset.get("thresholds", {})
    if not isinstance(thresholds, dict) or not all(_number(v) for v in thresholds.values()):
        return "openset thresholds must map method names to finite numbers"
    for key in ("threshold", "ncm_scale", "acceptance"):
        if key in openset and not _number(openset[key]):
            return f"openset {key} must be a finite number, not {openset[key]!r}"
    if openset.get("ncm_scale", 1) <= 0 or not 0 <= openset.get("acceptance", 0.5) <= 1:
        return "openset ncm_scale must be positive and acceptance in [0, 1]"
    tables = openset.get("enrolled_thresholds", {})
    if not isinstance(tables, dict) or not all(
        isinstance(table, dict) and all(k.isdigit() and _number(v) for k, v in table.items())
        for table in tables.values()
    ):
        return (
            "openset enrolled_thresholds must map each method to {photos: finite number} "
            '(e.g. {"centroid": {"1": 0.4, "3": 0.55}}); recalibrate with facecls calibrate'
        )
    return None


def validate_meta(meta: Any, path: Path) -> dict[str, Any]:
    """Check a ``model.json`` document before anything is built from it; returns it.

    Every loader calls this: the fields and their types, ``len(class_names) == num_classes``,
    finite means, positive finite stds, an image size and class count within bounds (refused
    before any allocation), a size the architecture can take, and the ``openset`` block.

    Raises:
        BundleError: naming ``path`` and the first problem found.
    """
    problem = _meta_problem(meta)
    if problem is not None:
        raise BundleError(f"{path}: {problem}")
    return meta


def weights_digest(path: Path) -> str:
    """sha256 of a weights file, streamed in 1 MiB chunks (the weights store's checksum)."""
    return sha256_of(path)


def check_digest(meta: dict[str, Any], weights_path: Path, meta_path: Path) -> None:
    """Refuse weights whose sha256 differs from the one ``model.json`` records (weights swapped
    in from another run); a bundle written before digests existed loads with a warning."""
    recorded = meta.get(DIGEST_KEY)
    if recorded is None:
        warnings.warn(
            f"{meta_path}: no {DIGEST_KEY} recorded (a bundle from an older facecls, or the "
            f"entry was removed), so {weights_path.name} is unverified: weights swapped in would "
            "load unnoticed (--require-digest refuses such a bundle)",
            BundleWarning,
            stacklevel=3,
        )
    elif weights_digest(weights_path) != recorded:
        raise BundleError(
            f"{weights_path}: its sha256 differs from the one {meta_path.name} records; these "
            "weights were not saved with this model.json (swapped in from another run?)"
        )


def refuse_unverified(meta: dict[str, Any], meta_path: Path) -> None:
    """Refuse a bundle whose ``model.json`` records no weights digest (``--require-digest``,
    the service's default): its weights cannot be told from weights swapped in.

    Raises:
        BundleError: naming the file and the way out.
    """
    if meta.get(DIGEST_KEY) is None:
        raise BundleError(
            f"{meta_path}: no {DIGEST_KEY} recorded, so the weights are unverified and refused "
            "(--require-digest). Re-save the model with this facecls (train, or enroll into a "
            "new bundle), or if you trust these weights run without --require-digest"
        )


def read_sidecar(meta_path: Path) -> dict[str, Any]:
    """Read and validate a bundle's ``model.json``.

    Raises:
        BundleError: the file is missing, unreadable, not JSON or not a valid sidecar.
    """
    try:
        meta = json.loads(Path(meta_path).read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise BundleError(f"{meta_path}: the bundle's JSON sidecar is missing") from error
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BundleError(f"{meta_path}: not valid JSON ({error})") from error
    return validate_meta(meta, meta_path)
