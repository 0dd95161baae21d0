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
            "recipe": t.recipe, "model": t.model, "freeze": t.freeze,
            "pretrained": t.pretrained, "weights": t.weights,
        }))  # fmt: skip
    except Exception:  # a recipe this facecls no longer knows: show every setting
        return {}
    return to_dict(base)


def changed_settings(run: RunData, shareable: bool) -> list[dict[str, Any]]:
    """Settings that differ from the recipe's defaults (name and runs folder aside), each with
    the recipe's value: what makes this run this run, shown before the full configuration."""
    defaults = recipe_defaults(run)
    if not defaults:
        return []
    out = []
    for section, body in to_dict(run.config).items():
        items = body.items() if isinstance(body, dict) else [(section, body)]
        base = defaults.get(section, {}) if isinstance(body, dict) else defaults
        where = section if isinstance(body, dict) else ""
        for key, value in items:
            if where == "" and key in ("name", "runs_dir"):
                continue
            if repr(value) != repr(base.get(key)):
                out.append({
                    "key": f"{where}.{key}" if where else key,
                    "value": _redacted(where, key, value, shareable),
                    "recipe": _redacted(where, key, base.get(key), shareable),
                })  # fmt: skip
    return out


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
