"""The peers facecls is measured against, on the same LFW train/test images.

* **eigenfaces + RBF SVM**: scikit-learn's face-recognition example recipe
  (``examples/applications/plot_face_recognition.py``): grey 50 × 37 faces cut from LFW's 250 px
  images as ``fetch_lfw_people`` does (rows 70–195, columns 78–172, scaled by 0.4), PCA with 150
  whitened components fitted on the train part, then ``SVC(kernel="rbf",
  class_weight="balanced")`` tuned by ``RandomizedSearchCV`` (10 draws of C ~ loguniform(1e3, 1e5),
  γ ~ loguniform(1e-4, 1e-1), 5-fold on the train part).
* **dlib face embeddings + logistic regression**: what a ``face_recognition`` user gets: dlib's
  HOG face detector (1 up-sampling; the detection nearest the centre, or a fixed central box when
  none is found), the 5-point shape predictor and dlib's ResNet face descriptor (128-d, one
  jitter), then multinomial logistic regression (C chosen by 3-fold CV on the train part). It
  needs the optional extra ``facecls[peers]`` (``dlib-bin``, ``face-recognition-models``). The
  model files are read from the ``face_recognition_models`` package folder without importing it:
  its ``__init__`` needs ``pkg_resources``, which setuptools >= 81 no longer ships, and
  ``face_recognition`` itself requires the source package ``dlib`` by name (``pip install
  --no-deps face-recognition`` would work around that), so facecls calls dlib directly, as
  ``face_recognition.face_encodings`` does.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# fetch_lfw_people's default slice of the 250 × 250 LFW image and its resize factor.
LFW_SLICE = (slice(70, 195), slice(78, 172))
LFW_RESIZE = 0.4


def eigenface_pixels(paths: Sequence[Path]) -> np.ndarray:
    """Grey 50 × 37 faces, flattened to ``(N, 1850)`` float32 in [0, 1]."""
    rows, cols = LFW_SLICE
    height = int((rows.stop - rows.start) * LFW_RESIZE)
    width = int((cols.stop - cols.start) * LFW_RESIZE)
    out = np.empty((len(paths), height * width), dtype=np.float32)
    for i, path in enumerate(paths):
        grey = np.asarray(Image.open(path).convert("L"))[rows, cols]
        small = Image.fromarray(grey).resize((width, height), Image.Resampling.BILINEAR)
        out[i] = np.asarray(small, dtype=np.float32).ravel() / 255.0
    return out


def eigenfaces_svm(
    paths: Sequence[Path], targets: np.ndarray, train: np.ndarray, test: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, dict]:
    """Predictions for ``test`` and what was chosen; scikit-learn's example recipe."""
    from scipy.stats import loguniform
    from sklearn.decomposition import PCA
    from sklearn.model_selection import RandomizedSearchCV
    from sklearn.svm import SVC

    pixels = eigenface_pixels(paths)
    pca = PCA(n_components=150, svd_solver="randomized", whiten=True, random_state=seed)
    x_train = pca.fit_transform(pixels[train])
    x_test = pca.transform(pixels[test])
    grid = {"C": loguniform(1e3, 1e5), "gamma": loguniform(1e-4, 1e-1)}
    search = RandomizedSearchCV(
        SVC(kernel="rbf", class_weight="balanced"), grid, n_iter=10, random_state=seed, n_jobs=1
    )
    search.fit(x_train, targets[train])
    chosen = {k: float(f"{v:.3g}") for k, v in search.best_params_.items()}
    return search.predict(x_test), {"best_params": chosen}


def dlib_available() -> bool:
    return (
        importlib.util.find_spec("dlib") is not None
        and importlib.util.find_spec("face_recognition_models") is not None
    )


def _dlib_models() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("face_recognition_models (pip install 'facecls[peers]')")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class DlibDescriber:
    """dlib's ``face_recognition`` pipeline on one photo file: read and decode it, HOG detection
    (1 up-sampling; the face nearest the centre, else a fixed central box), the 5 landmarks and
    the 128-d ResNet descriptor (one jitter). The model files are loaded once, here."""

    def __init__(self) -> None:
        import dlib

        models = _dlib_models()
        self._rectangle = dlib.rectangle
        self.detector = dlib.get_frontal_face_detector()
        self.shapes = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.encoder = dlib.face_recognition_model_v1(
            str(models / "dlib_face_recognition_resnet_model_v1.dat")
        )
        self.fallbacks = 0  # photos where HOG found no face (the central box was used)

    def __call__(self, path: Path) -> np.ndarray:
        image = np.asarray(Image.open(path).convert("RGB"))
        h, w = image.shape[:2]
        found = list(self.detector(image, 1))
        if found:  # the face nearest the centre (LFW centres the named person)
            box = min(found, key=lambda r: abs(r.center().x - w / 2) + abs(r.center().y - h / 2))
        else:
            self.fallbacks += 1
            box = self._rectangle(int(w * 0.28), int(h * 0.28), int(w * 0.72), int(h * 0.72))
        descriptor = self.encoder.compute_face_descriptor(image, self.shapes(image, box), 1)
        return np.asarray(descriptor, dtype=np.float32)


def dlib_descriptors(
    paths: Sequence[Path], cache: Path | None = None, log: Callable[[str], None] | None = None
) -> tuple[np.ndarray, float]:
    """128-d dlib face descriptors ``(N, 128)`` and the seconds they took (0 from the cache);
    ``log`` gets a line at each tenth done (they take about 0.15 s a photo on one core)."""
    if cache is not None and cache.exists():
        return np.load(cache), 0.0
    describe = DlibDescriber()
    started = time.perf_counter()
    out = np.empty((len(paths), 128), dtype=np.float32)
    tenth = 0
    for i, path in enumerate(paths):
        out[i] = describe(path)
        if log is not None and (i + 1) * 10 // len(paths) > tenth:
            tenth = (i + 1) * 10 // len(paths)
            rate = (i + 1) / (time.perf_counter() - started)
            log(f"dlib descriptors: {tenth * 10}% ({i + 1}/{len(paths)}, {rate:.1f} photos/s)")
    seconds = time.perf_counter() - started
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, out)
    return out, seconds


def fit_logistic_regression(
    features: np.ndarray, targets: np.ndarray, c: float | None = None
) -> Any:
    """Multinomial logistic regression, C chosen by 3-fold CV (a fitted ``GridSearchCV``: its
    ``.predict`` is the refitted best model's, ``.best_params_`` the choice); with ``c`` given,
    one model with that C instead (a choice made earlier on the same features)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    if c is None and np.bincount(np.unique(targets, return_inverse=True)[1]).min() < 3:
        c = 100.0  # too few photos per person for 3-fold CV: the C it chose on all of LFW-8
    if c is not None:
        return LogisticRegression(C=c, max_iter=3000).fit(features, targets)
    search = GridSearchCV(
        LogisticRegression(max_iter=3000), {"C": [1.0, 10.0, 100.0]}, cv=3, n_jobs=1
    )
    return search.fit(features, targets)


def logistic_regression(
    features: np.ndarray, targets: np.ndarray, train: np.ndarray, test: np.ndarray
) -> tuple[np.ndarray, dict]:
    """Multinomial logistic regression on embeddings; C by 3-fold CV on the train part."""
    search = fit_logistic_regression(features[train], targets[train])
    return search.predict(features[test]), {"best_params": search.best_params_}
