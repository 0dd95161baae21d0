"""ONNX export parity on a run's own test split: same top-1 as PyTorch, and how close the numbers are.

Exports the run's model (``model.onnx`` beside the bundle), then predicts every test image of the
run (from its ``folds.json`` and data source) with both backends and prints the share of equal
top-1 identities and decisions, the largest absolute difference of logits/embeddings, and the
speed of each backend on this machine.

    PYTHONPATH=src python benchmarks/onnx_parity.py --run RUN_FOLDER
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from facecls.config_io import load_yaml
from facecls.data.dataset import load_dataset
from facecls.inference.export import export_onnx
from facecls.inference.model import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    args = parser.parse_args()
    config = load_yaml(args.run / "config.yaml")
    dataset = load_dataset(config.data, lambda _m: None)
    test = json.loads((args.run / "folds.json").read_text())["test"]
    index = {p: i for i, p in enumerate(dataset.paths)}
    images = dataset.images[[index[p] for p in test]].numpy()  # uint8 (N, 3, S, S)
    result = export_onnx(args.run)
    outputs = {}
    for backend in ("torch", "onnx"):
        model = load_model(args.run, device="cpu", backend=backend)
        model.outputs(images[:8])  # warm up
        start = time.perf_counter()
        logits, features = model.outputs(images)
        seconds = time.perf_counter() - start
        decisions = [p.identity for p in model.decide(logits, features)]
        outputs[backend] = (logits, features, decisions, seconds)
    (tl, tf, td, ts), (ol, of, od, os_) = outputs["torch"], outputs["onnx"]
    diff = max(np.abs(tl - ol).max(), np.abs(tf - of).max())
    print(f"ONNX parity on {len(images)} test images of {args.run} "
          f"({config.train.model} @ {config.data.image_size} px; {platform.machine()} CPU, "
          f"{torch.get_num_threads()} threads)")  # fmt: skip
    print(f"  same top-1: {np.mean(tl.argmax(1) == ol.argmax(1)):.4f}  same decision: "
          f"{np.mean(np.array(td) == np.array(od)):.4f}  max abs difference {diff:.2e}")  # fmt: skip
    print(f"  torch {len(images) / ts:.0f} img/s, onnxruntime {len(images) / os_:.0f} img/s "
          f"(export check on {result.checked_on}: {result.max_abs_diff:.2e})")  # fmt: skip


if __name__ == "__main__":
    main()
