"""The settings part of a run's report: what the run changed from its recipe, the full resolved
configuration and the environment, with the user's paths withheld from a shareable page."""

from __future__ import annotations

from typing import Any

from facecls.config import RunConfig
from facecls.config_io import replace as replace_config
from facecls.config_io import to_dict
from facecls.config_rules import resolve
from facecls.report.run_data import RunData

# Config values that hold a path on the user's machine; a shareable report leaves them out.
PATH_KEYS = {("data", "source"), ("data", "split_file"), ("data", "cache_dir"), ("", "runs_dir")}
NOT_PATHS = {"synthetic", "lfw", None}
WITHHELD = "(path withheld)"


def _redacted(section: str, key: str, value: Any, shareable: bool) -> Any:
    if shareable and (section, key) in PATH_KEYS and value not in NOT_PATHS:
        return WITHHELD
    return value


def settings_rows(run: RunData, shareable: bool) -> list[dict[str, Any]]:
    """The resolved config as ``{"section", "rows": [(key, value)]}``, paths withheld if asked."""
    values = to_dict(run.config)
    top = [
        (k, _redacted("", k, v, shareable)) for k, v in values.items() if not isinstance(v, dict)
    ]
    out = [{"section": "run", "rows": top}]
    synthetic = run.config.data.source == "synthetic"
    for section, body in values.items():
        if isinstance(body, dict):
            rows = [
                (k, _redacted(section, k, v, shareable)) for k, v in body.items()
                if synthetic or not k.startswith("synthetic_")  # unused by other sources
            ]  # fmt: skip
            out.append({"section": section, "rows": rows})
    return out


def recipe_defaults(run: RunData) -> dict[str, Any]:
    """The settings a run would have had with nothing given but its recipe (and model choice)."""
    t = run.config.train
    try:
        base = resolve(replace_config(RunConfig(), train={
            "recipe": t.recipe, "model": t.model, "pretrained": t.pretrained,
            "weights": t.weights,
        }))  # fmt: skip
    except Exception:  # a recipe this facecls no longer knows: show every setting
        return {}
    return to_dict(base)


def changed_settings(
    run: RunData, shareable: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What makes this run this run, against its recipe's defaults (name and runs folder aside),
    each setting with the recipe's value, in two lists:

    * changed: the settings the user set (``metrics.json``'s ``settings_given``);
    * resolved: those facecls filled in on this machine (``precision: auto`` became ``bf16``).

    A run written before facecls recorded what was given counts a setting whose recipe value is
    ``auto`` or unset as resolved, any other difference as changed.
    """
    defaults = recipe_defaults(run)
    if not defaults:
        return [], []
    given = run.metrics.get("settings_given")
    changed, resolved = [], []
    for section, body in to_dict(run.config).items():
        items = body.items() if isinstance(body, dict) else [(section, body)]
        base = defaults.get(section, {}) if isinstance(body, dict) else defaults
        where = section if isinstance(body, dict) else ""
        for key, value in items:
            if where == "" and key in ("name", "runs_dir"):
                continue
            if repr(value) == repr(base.get(key)):
                continue
            dotted = f"{where}.{key}" if where else key
            row = {
                "key": dotted,
                "value": _redacted(where, key, value, shareable),
                "recipe": _redacted(where, key, base.get(key), shareable),
            }
            by_user = dotted in given if given is not None else base.get(key) not in ("auto", None)
            (changed if by_user else resolved).append(row)
    return changed, resolved


def _remedy(train: dict[str, Any]) -> str | None:
    scheme = train.get("imbalance", "none")
    scheme = scheme if scheme != "none" else train.get("class_weights", "none")
    return None if scheme in (None, "none") else scheme


def _warps(augment: dict[str, Any]) -> list[str]:
    """The geometric warps a run's augmentation asks for (rotation, zoom, shift)."""
    a = augment
    warps = [f"rotation ±{a['rotation']:g}°" if a.get("rotation") else ""]
    warps += [f"zoom ±{a['scale']:g}" if a.get("scale") else ""]
    warps += [f"shift ±{a['translate']:g}" if a.get("translate") else ""]
    return [w for w in warps if w and a.get("enabled", True)]


def _on_cached_embeddings(train: dict[str, Any]) -> bool:
    """Whether the frozen phase trained the head on embeddings computed once (``probe.py``), where
    the warps are not applied: a frozen backbone, not compiled (one process assumed), not under
    ``--recipe report``."""
    frozen = train.get("freeze") in ("backbone", "backbone-then-unfreeze", "top")
    # --recipe report runs the frozen backbone on the warped images in every step (fold.py)
    return frozen and not train.get("compile") and train.get("recipe") != "report"


def _augmentation(augment: dict[str, Any], train: dict[str, Any]) -> str:
    """What the training images went through, as the training loop applied it: a frozen backbone's
    cached embeddings carry the mirror image only, so rotation, zoom and shift are not applied."""
    flip = ["flip"] if augment.get("enabled", True) and augment.get("hflip") else []
    warps = _warps(augment)
    seen = warps[:1] + flip + warps[1:] if augment.get("rotation") else flip + warps
    every = f"augmented images ({', '.join(seen)})" if seen else "no augmentation"
    if not warps or not _on_cached_embeddings(train):
        return every
    frozen = "mirror images only" if flip else "no augmentation"
    skipped = f"{', '.join(warps)} not applied to a frozen backbone's embeddings"
    if train.get("freeze") in ("backbone", "top"):
        return f"{frozen} ({skipped})"
    start = train.get("unfreeze_epoch") or int(train.get("epochs") or 0) // 3 + 1
    return f"{frozen} before epoch {start} ({skipped}), {every} from it on"


def loss_labels(config: dict[str, Any]) -> tuple[str, str]:
    """What a run's training and validation loss curves are: they are often not the same loss
    (label smoothing and augmentation train; checkpoint selection scores without them)."""
    t, a = config.get("train", {}), config.get("augment", {})
    smoothing = float(t.get("label_smoothing") or 0.0)
    train = [f"label smoothing {smoothing:g}" if smoothing else "no label smoothing"]
    train.append(_augmentation(a, t))
    if t.get("sampler", "none") != "none":
        train.append(f"{t['sampler']} sampling")
    val = ["no label smoothing", "no augmentation"]
    if t.get("flip_tta"):
        val.append("logits averaged with the mirror image")
    remedy = _remedy(t)
    if remedy in ("inverse", "sqrt", "effective"):
        train.append(f"{remedy} class weights")
        val.append(f"{remedy} class weights")
    elif remedy == "drw":
        train.append("effective class weights from the re-weighting epoch on")
        val.append("effective class weights in every epoch")
    elif remedy is not None:
        train.append(f"{remedy} logits")
        val.append(f"{remedy} logits")
    train.append("mean over the epoch's steps")
    return "training loss: " + ", ".join(train), "validation loss: " + ", ".join(val)


def training_scope(run: RunData) -> str:
    """Which weights trained: the whole network, or only the final layer on a frozen backbone
    (the report's transfer model), as the page says beside the architecture."""
    t = run.config.train
    if t.pretrained:
        source = "starting from pretrained weights"
    elif t.weights:
        source = "starting from a weights file"
    else:
        source = "from random initialisation"
    config = to_dict(run.config)
    warps = _warps(config.get("augment", {}))
    # The seed report rotated the images its frozen ResNet saw; so does --recipe report, while
    # facecls's probe (embeddings computed once) does not.
    skipped = (
        f" Its embeddings were computed once per image, so the {', '.join(warps)} of the "
        f"augmentation settings {'was' if len(warps) == 1 else 'were'} not applied while it was "
        "frozen (the seed report rotated the images its frozen backbone saw)."
        if warps and _on_cached_embeddings(config.get("train", {})) else ""
    )  # fmt: skip
    if t.freeze == "backbone":
        return (
            f"Backbone frozen, {source}: only the final layer trained (a linear probe, as the "
            f"seed report's transfer model trained only its fully connected layer).{skipped}"
        )
    if t.freeze == "top":
        return (
            f"Backbone frozen, {source}: a linear probe, then the last stage (FaceNet's "
            "Inception-ResNet-C blocks and embedding layer) tuned with the head on the lower "
            "stages' outputs computed once, each embedding kept near the pretrained one."
            f"{skipped}"
        )
    if t.freeze == "backbone-then-unfreeze":
        start = t.unfreeze_epoch or (t.epochs or 0) // 3 + 1
        return (
            f"Backbone frozen until epoch {start}, {source}; then the whole network trained."
            f"{skipped}"
        )
    return f"The whole network trained, {source}."


def environment_rows(run: RunData) -> list[tuple[str, Any]]:
    env = dict(run.metrics.get("environment", {}))
    device = env.pop("cuda_device", None) or f"CPU ({env.get('cpu_threads', '?')} threads)"
    rows = [("device", device), ("requested device", run.config.train.device)]
    libraries = env.pop("libraries", None) or {}
    rows += [(k, v) for k, v in env.items()]
    if libraries:  # one line instead of a nested dict
        rows.append(("libraries", ", ".join(f"{k} {v}" for k, v in libraries.items() if v)))
    wall = run.metrics.get("wall_seconds", 0)
    if "report_seconds" in run.metrics:  # the whole command, its own report included
        rows.append(("wall time", f"{wall:.1f} s (the whole command, its report included)"))
    else:  # written by the run itself, before its own report
        rows.append(
            (
                "wall time",
                f"{wall:.1f} s (the whole command until its results were "
                "saved; metrics.json's wall_seconds adds writing them and this page)",
            )
        )
    return rows
