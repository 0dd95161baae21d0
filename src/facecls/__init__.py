"""facecls: train, cross-validate, evaluate and compare CNN face-identity classifiers.

The public API mirrors the command line; each command is one call::

    import facecls
    config = facecls.RunConfig()                  # the report's recipe on synthetic faces
    result = facecls.cross_validate(config)       # writes runs/<name>/
    facecls.evaluate(result.run_dir)              # re-evaluates the saved model on the test part
    facecls.write_report(result.run_dir)          # report.html (self-contained) and report.md
    facecls.write_comparison([run_a, run_b], out) # side by side, with paired significance tests
    model = facecls.load_model(result.run_dir)    # predict, embed, enroll, export
    model.predict(["photo.jpg"])                  # [Prediction(decision="known", identity=...)]
    facecls.get_weights("facenet")                # FaceNet's weights into the cache, verified
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the names below are, for type checkers and editors
    from facecls.config import AugmentConfig, DataConfig, RunConfig, TrainConfig
    from facecls.demo import demo
    from facecls.inference.calibration import calibrate_command as calibrate
    from facecls.inference.enroll import enroll
    from facecls.inference.export import export_onnx
    from facecls.inference.faces import Prediction
    from facecls.inference.model import FaceModel, load_model
    from facecls.inference.predict import predict
    from facecls.inference.search import search
    from facecls.inference.verify import embed, verify
    from facecls.inference.video import predict_video
    from facecls.library.index import index_photos as index
    from facecls.library.search import search_library
    from facecls.library.store import open_library
    from facecls.models import create_model, list_models
    from facecls.models.weights_store import get_weights, list_weights
    from facecls.report.write import write_comparison, write_report
    from facecls.service.serve import serve
    from facecls.training.evaluate import evaluate_run as evaluate
    from facecls.training.finish import RunResult
    from facecls.training.lr_find import lr_find
    from facecls.training.run import cross_validate
    from facecls.training.run import fit as train
    from facecls.training.tune import tune

# Public name -> (module, attribute). Imported on first use (PEP 562), so that ``import facecls``
# and ``facecls --help`` do not load torch; ``from facecls import X`` works as before.
_LAZY: dict[str, tuple[str, str]] = {
    "AugmentConfig": ("facecls.config", "AugmentConfig"),
    "DataConfig": ("facecls.config", "DataConfig"),
    "RunConfig": ("facecls.config", "RunConfig"),
    "TrainConfig": ("facecls.config", "TrainConfig"),
    "demo": ("facecls.demo", "demo"),
    "calibrate": ("facecls.inference.calibration", "calibrate_command"),
    "enroll": ("facecls.inference.enroll", "enroll"),
    "export_onnx": ("facecls.inference.export", "export_onnx"),
    "Prediction": ("facecls.inference.faces", "Prediction"),
    "FaceModel": ("facecls.inference.model", "FaceModel"),
    "load_model": ("facecls.inference.model", "load_model"),
    "predict": ("facecls.inference.predict", "predict"),
    "search": ("facecls.inference.search", "search"),
    "serve": ("facecls.service.serve", "serve"),
    "index": ("facecls.library.index", "index_photos"),
    "open_library": ("facecls.library.store", "open_library"),
    "search_library": ("facecls.library.search", "search_library"),
    "embed": ("facecls.inference.verify", "embed"),
    "verify": ("facecls.inference.verify", "verify"),
    "predict_video": ("facecls.inference.video", "predict_video"),
    "create_model": ("facecls.models", "create_model"),
    "list_models": ("facecls.models", "list_models"),
    "get_weights": ("facecls.models.weights_store", "get_weights"),
    "list_weights": ("facecls.models.weights_store", "list_weights"),
    "write_comparison": ("facecls.report.write", "write_comparison"),
    "write_report": ("facecls.report.write", "write_report"),
    "evaluate": ("facecls.training.evaluate", "evaluate_run"),
    "lr_find": ("facecls.training.lr_find", "lr_find"),
    "RunResult": ("facecls.training.finish", "RunResult"),
    "cross_validate": ("facecls.training.run", "cross_validate"),
    "train": ("facecls.training.run", "fit"),
    "tune": ("facecls.training.tune", "tune"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'facecls' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module), attribute)
    # Kept as a plain attribute: later lookups skip this function, and ``facecls.demo`` stays
    # the function even though importing the module facecls.demo set the attribute to it.
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AugmentConfig",
    "DataConfig",
    "FaceModel",
    "Prediction",
    "RunConfig",
    "RunResult",
    "TrainConfig",
    "calibrate",
    "create_model",
    "cross_validate",
    "demo",
    "embed",
    "enroll",
    "evaluate",
    "export_onnx",
    "get_weights",
    "index",
    "list_models",
    "list_weights",
    "load_model",
    "lr_find",
    "open_library",
    "predict",
    "predict_video",
    "search",
    "search_library",
    "serve",
    "train",
    "tune",
    "verify",
    "write_comparison",
    "write_report",
]
