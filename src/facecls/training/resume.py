"""``--resume``: decide whether a run folder can be continued exactly, and say why not.

A run folder can be resumed when it has its ``config.yaml`` and ``folds.json``, has not finished
(no ``metrics.json``), belongs to the same command, and the options given now do not contradict
its config. Checkpoints themselves are checked against the data when they are loaded
(``checkpoint.load_checkpoint``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facecls.config import ConfigError, RunConfig
from facecls.config_io import load_yaml, to_dict
from facecls.data.dataset import FaceDataset
from facecls.data.sources import DataError
from facecls.environment import environment

# The fingerprint of a run's data, written when it starts and checked on --resume.
DATA_FILES_NAME = "data_files.json"


def data_fingerprint(dataset: FaceDataset) -> dict[str, Any]:
    """The number of images, a sha256 of their sorted ``identity/file`` names, one of the names
    with their sizes in bytes, and one of the decoded pixels the run trains on (so a photo
    whose content changed under the same name is told apart; a file that changes is decoded
    again, as the decode cache's key holds its size and modification time)."""
    paths = dataset.paths
    names = hashlib.sha256("\n".join(sorted(paths)).encode("utf-8")).hexdigest()
    sizes = dataset.sizes if dataset.sizes is not None else [0] * len(paths)
    listed = "\n".join(sorted(f"{p}\0{s}" for p, s in zip(paths, sizes, strict=True)))
    pixels = hashlib.sha256(dataset.images.contiguous().numpy().reshape(-1).data)
    return {
        "images": len(paths),
        "sha256": names,
        "sizes_sha256": hashlib.sha256(listed.encode("utf-8")).hexdigest(),
        "pixels_sha256": pixels.hexdigest(),
    }


def check_same_data(run_dir: Path, dataset: FaceDataset) -> None:
    """Refuse to resume a run whose data gained or lost images, or whose photos changed, since
    it started (its folds and checkpoints belong to the old data). A run folder from before
    fingerprints passes; one from before content digests is checked on its names.

    Raises:
        DataError: saying what changed.
    """
    path = run_dir / DATA_FILES_NAME
    if not path.is_file():
        return
    saved, now = json.loads(path.read_text()), data_fingerprint(dataset)
    if saved.get("sha256") != now["sha256"]:
        raise DataError(
            f"--resume {run_dir}: the data changed since the run started ({saved.get('images')} "
            f"images then, {now['images']} now, other files); its folds and checkpoints belong "
            "to the old files. Restore the data as it was, or start a new run without --resume."
        )
    changed = [k for k in ("sizes_sha256", "pixels_sha256") if k in saved and saved[k] != now[k]]
    if changed:
        raise DataError(
            f"--resume {run_dir}: the photos changed since the run started (the same "
            f"{now['images']} file names, other content); its checkpoints were trained on the "
            "old photos. Restore them as they were, or start a new run without --resume."
        )


def _differences(saved: dict[str, Any], given: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(given)):
        a, b = saved.get(key), given.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} in the run, {b!r} now")
    return out


def _warn_if_environment_changed(run_dir: Path, log: Callable[[str], None]) -> None:
    """Other library versions or hardware can change the last bits of every result."""

    path = run_dir / "environment.json"
    if not path.is_file():
        return
    before, now = json.loads(path.read_text()), environment()
    changed = [
        key
        for key in ("facecls", "torch", "libraries", "cpu_threads", "cuda_device")
        if before.get(key) != now.get(key)
    ]
    if changed:
        log(
            f"Warning: {', '.join(changed)} changed since {run_dir} started; the resumed run "
            "may not match an uninterrupted one bit for bit"
        )


def check_resume(
    run_dir: Path, config: RunConfig, command: str, log: Callable[[str], None]
) -> None:
    """Refuse to resume what cannot be continued exactly, saying why."""
    if not (run_dir / "config.yaml").is_file():
        raise ValueError(f"--resume {run_dir}: not a facecls run folder (no config.yaml)")
    if (run_dir / "metrics.json").exists():
        raise ValueError(f"--resume {run_dir}: this run already finished (metrics.json exists)")
    if not (run_dir / "folds.json").is_file():
        raise ValueError(
            f"--resume {run_dir}: the run stopped before its split was saved; start it again"
        )
    differences = _differences(to_dict(load_yaml(run_dir / "config.yaml")), to_dict(config))
    if differences:
        raise ConfigError(
            f"--resume {run_dir}: the options contradict the run's config.yaml ("
            + "; ".join(differences)
            + "). Resume with the run's settings, or start a new run."
        )
    folds = len(json.loads((run_dir / "folds.json").read_text())["folds"])
    if (command == "cv") != (folds > 1):
        other = "cv" if folds > 1 else "train"
        raise ValueError(f"--resume {run_dir}: this is a {other} run; use facecls {other} --resume")
    _warn_if_environment_changed(run_dir, log)
    marker = run_dir / "checkpoints" / "interrupted.json"
    if marker.is_file():
        stopped = json.loads(marker.read_text())
        log(
            f"Resuming {run_dir}: stopped by {stopped['signal']} in fold {stopped['fold']}, "
            f"epoch {stopped['epoch']}; epochs saved up to {stopped['last_saved_epoch']}"
        )
    else:
        log(f"Resuming {run_dir} from its last checkpoint")
