"""The served model and its enrolled people, kept as numbered bundle versions on disk.

``facecls serve MODEL`` never changes ``MODEL``. Enrollments go to a store folder (default
``<bundle>.served`` beside it): each enrollment writes a complete new bundle ``v000002/``...
(weights hard-linked, centroids and ``model.json`` new) into a temporary folder, renames it into
place, then points the file ``CURRENT`` at it (an atomic rename). A run whose bundle lacks the
trained identities' centroids (``train`` leaves them to the first use) is calibrated once into
the store's first version, ``v000001``, never into the run. A crash at any step leaves
``CURRENT`` naming the last complete version, so nothing enrolled before is lost; a restart picks
up where it was. Enrollments are serialised by a lock, so two at once both land, one after the
other.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from facecls.atomic import write_text
from facecls.bundle import CENTROIDS_NAME, WEIGHTS_NAME, BundleError, read_centroids
from facecls.data.face_choice import agree
from facecls.data.sources import DataError
from facecls.inference.calibration import calibrate_run
from facecls.inference.enroll import ENOUGH_PHOTOS, FEW_PHOTOS, write_enrolled
from facecls.inference.model import FaceModel, load_model
from facecls.openset import l2_normalize

CURRENT = "CURRENT"
KEEP_VERSIONS = 3  # older versions are removed once a newer one is current
_VERSION = re.compile(r"^v(\d{6})$")
# A person's name: 1-64 letters (any script), digits, spaces or . ' - _, starting with a letter,
# digit or _ and not ending in a space. The service's OpenAPI document publishes this pattern.
NAME_PATTERN = r"^\w([\w .'-]{0,62}[\w.'-])?$"
NAME_MAX = 64
_NAME = re.compile(NAME_PATTERN)


class NameTaken(DataError):
    """An enrollment under a trained identity's name."""


def chosen_faces(photos: list[np.ndarray]) -> np.ndarray:
    """One unit embedding per photo (``photos``: each photo's faces' embeddings, main face
    first): a photo with several faces gives the one that agrees with the person's single-face
    photos (:func:`facecls.data.face_choice.agree`; the main face when there is none)."""
    single = [p[0] for p in photos if len(p) == 1]
    several = [p for p in photos if len(p) > 1]
    if not several:
        return np.stack(single)
    base = {0: np.sum(single, axis=0)} if single else {}
    choice = agree(np.zeros(len(several), np.int64), several, base)
    return np.stack(single + [p[k] for p, k in zip(several, choice.kept.tolist(), strict=True)])


def check_name(name: str) -> str:
    """A person's name as given, if it matches :data:`NAME_PATTERN`."""
    if not _NAME.fullmatch(name):
        raise DataError(
            f"{name!r}: a name is 1-64 letters, digits, spaces or . ' - _ (starting with a "
            "letter or digit, not ending in a space)"
        )
    return name


class ModelStore:
    """The current model of a service and its persistent enrollments.

    Args:
        model_path: the trained run folder or bundle (read only).
        store: the folder of versions (default ``<bundle folder>.served``).
        device: torch device for the network.
    """

    def __init__(
        self, model_path: str | Path, store: str | Path | None = None, device: str = "auto",
        log: Callable[[str], None] = print,
    ) -> None:  # fmt: skip
        base = load_model(model_path, device=device)
        self.source = base.folder  # the bundle served: read, never written
        self.root = Path(store) if store else base.folder.with_name(base.folder.name + ".served")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise BundleError(
                f"{self.root}: cannot be the store folder (enrolled versions, serve.log): "
                f"{error.strerror or error}; give --store DIR"
            ) from error
        self._lock = threading.Lock()
        version = self._current_version()
        if version is None and "trained" not in read_centroids(base.folder):
            version = self._calibrated_copy(base, log)
        self._model = base.with_bundle(self.root / version) if version else base
        self.version = version or "original"

    @property
    def model(self) -> FaceModel:
        """The model to use now (swapped whole after each enrollment)."""
        return self._model

    def _current_version(self) -> str | None:
        pointer = self.root / CURRENT
        if not pointer.is_file():
            return None
        version = pointer.read_text().strip()
        if not _VERSION.match(version) or not (self.root / version).is_dir():
            raise BundleError(f"{pointer}: names {version!r}, which is not a complete version")
        return version

    def _calibrated_copy(self, base: FaceModel, log: Callable[[str], None]) -> str | None:
        """Calibrate a run's bundle into the store's first version; the run is not touched."""
        run_dir = base.folder.parent
        if not (run_dir / "folds.json").is_file():
            log(f"{base.folder}: no trained centroids; /enroll is unavailable (calibrate first)")
            return None
        log(
            f"{run_dir}: computing the trained identities' centroids once, into "
            f"{self.root} (the run is not changed)"
        )
        number = max(self._versions(), default=0) + 1
        staging = self._staging(number)
        for source in base.folder.iterdir():
            if source.is_file():
                shared = source.name in (WEIGHTS_NAME, "model.onnx")  # the graph does not change
                _link_or_copy(source, staging / source.name, shared)
        calibrate_run(run_dir, log=log, into=staging)
        return self._commit(staging, number)

    def _staging(self, number: int) -> Path:
        staging = self.root / f".v{number:06d}.partial"
        shutil.rmtree(staging, ignore_errors=True)  # left by a crash: never current
        staging.mkdir(parents=True)
        return staging

    def _commit(self, staging: Path, number: int) -> str:
        """Rename a complete version into place and make it current (the commit point)."""
        version = f"v{number:06d}"
        staging.rename(self.root / version)
        write_text(self.root / CURRENT, version + "\n")
        return version

    def _versions(self) -> list[int]:
        if not self.root.is_dir():
            return []
        found = (_VERSION.match(p.name) for p in self.root.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def enroll(self, name: str, faces: np.ndarray | list[np.ndarray]) -> dict[str, object]:
        """Enroll ``name`` from uint8 faces ``(N, 3, S, S)`` (prepared as ``to_batch`` does; one
        per photo), or from each photo's faces (a list of such arrays, main face first: a photo
        with several adds the face that agrees with the others, :func:`chosen_faces`) into a new
        version; a name enrolled before is replaced. Returns a summary.

        Raises:
            DataError: a bad name or no face; :class:`NameTaken`: a trained identity's name.
            BundleError: the model has no trained centroids.
            OSError: the store cannot be written (or its current version is gone).
        """
        name = check_name(name)
        photos = [np.asarray(f) for f in faces] if isinstance(faces, list) else [
            np.asarray(faces)[i : i + 1] for i in range(len(faces))
        ]  # fmt: skip
        photos = [p for p in photos if len(p)]
        if not photos:
            raise DataError("no face to enroll")
        model = self._model
        if name in model.trained_names:
            raise NameTaken(f"{name!r} is one of the model's trained identities")
        if model.trained_centroids is None:
            raise BundleError(
                "the served model has no trained centroids (a bundle outside its run folder): "
                "run facecls calibrate on its run and serve that"
            )
        unit = chosen_faces([l2_normalize(model.outputs(p)[1].astype(np.float64)) for p in photos])
        with self._lock:  # one writer at a time; each builds on the version before it
            model = self._model
            if not (model.folder / CENTROIDS_NAME).is_file():  # the next version starts from it
                raise FileNotFoundError(f"{model.folder}: the served version is gone")
            number = max(self._versions(), default=0) + 1
            staging = self._staging(number)
            write_enrolled(model, {name: unit.sum(axis=0)}, {name: len(unit)}, staging, True)
            version = self._commit(staging, number)
            self._model = model.with_bundle(self.root / version)
            self.version = version
            self._prune(number)
        advice = (
            f"enrolled from {len(unit)} photos; {FEW_PHOTOS}" if len(unit) < ENOUGH_PHOTOS else None
        )
        return {"name": name, "photos": int(len(unit)), "version": version,
                "enrolled": list(self._model.enrolled_names), "advice": advice}  # fmt: skip

    def _prune(self, current: int) -> None:
        for number in self._versions():
            if number <= current - KEEP_VERSIONS:
                shutil.rmtree(self.root / f"v{number:06d}", ignore_errors=True)


def _link_or_copy(source: Path, target: Path, link: bool) -> None:
    """Hard-link the weights (versions share one file) where the file system allows; copy."""
    if link:
        try:
            os.link(source.resolve(), target)
            return
        except OSError:
            pass  # another file system, or links not allowed
    shutil.copyfile(source, target)
