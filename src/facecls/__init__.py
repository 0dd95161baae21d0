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
"""

from __future__ import annotations

from facecls.config import AugmentConfig, DataConfig, RunConfig, TrainConfig
from facecls.demo import demo
from facecls.inference.calibration import calibrate_command as calibrate
from facecls.inference.enroll import enroll
from facecls.inference.export import export_onnx
from facecls.inference.faces import Prediction
from facecls.inference.model import FaceModel, load_model
from facecls.inference.predict import predict
from facecls.inference.search import search
from facecls.inference.serve import serve
from facecls.inference.verify import embed, verify
from facecls.inference.video import predict_video
from facecls.models import create_model, list_models
from facecls.report.write import write_comparison, write_report
from facecls.training.evaluate import evaluate_run as evaluate
from facecls.training.run import RunResult
from facecls.training.run import cross_validate as cross_validate
from facecls.training.run import fit as train
from facecls.training.tune import tune

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
    "list_models",
    "load_model",
    "predict",
    "predict_video",
    "search",
    "serve",
    "train",
    "tune",
    "verify",
    "write_comparison",
    "write_report",
]
