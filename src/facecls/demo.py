"""``facecls demo``: the report's comparison of its three models on the best data at hand."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from facecls.config import AugmentConfig, DataConfig, RunConfig, TrainConfig
from facecls.data.sources import LFW_ARCHIVE_NAME, default_cache_dir
from facecls.report.table5 import table5_text
from facecls.report.write import write_comparison
from facecls.training.run import cross_validate

DEMO_MODELS = ("baseline", "tronnet", "resnet18")


def choose_data(data: str | None, log: Callable[[str], None]) -> tuple[str, bool]:
    """The demo's source and whether it is LFW: the one given, LFW when cached, else synthetic.

    LFW is not downloaded by the demo (110 MB); it says how to get it instead.
    """
    if data is not None:
        return data, data == "lfw" or "lfw" in Path(data).name.lower()
    cached = default_cache_dir() / LFW_ARCHIVE_NAME
    if cached.exists():
        log(f"Using LFW deep-funneled from the cache ({cached}).")
        return str(cached), True
    log(
        "Using the built-in synthetic faces (no download). For real faces, run "
        "'facecls demo --data lfw' (downloads LFW once, 110 MB) or pass a local "
        f"{LFW_ARCHIVE_NAME} with --data, or copy it to {cached}."
    )
    return "synthetic", False


def demo_configs(source: str, is_lfw: bool, on_gpu: bool, runs_dir: str) -> list[RunConfig]:
    """One cross-validation config per model, sized to the hardware.

    On a GPU the report's 224 px; on a CPU small images, few epochs and 3 folds (9.3 min of CPU
    time on the 2-core dev VM; 22 min real time there while the VM was shared, README).
    """
    if on_gpu:
        size, folds, batch = 224, 5, 64
        epochs = {"baseline": 30, "tronnet": 30, "resnet18": 30}
    else:
        # Seed CNNs are cheap on the CPU, ResNet-18 is not: give each what fits ~10 minutes.
        size, folds, batch = 56, 3, 32
        epochs = {"baseline": 30, "tronnet": 20, "resnet18": 10}
    data = DataConfig(
        source=source,
        image_size=size,
        min_images=20 if is_lfw else 1,
        synthetic_classes=12,
        synthetic_max=48,
        synthetic_min=12,
    )
    configs = []
    for model in DEMO_MODELS:
        train = TrainConfig(model=model, epochs=epochs[model], folds=folds, batch_size=batch)
        configs.append(
            RunConfig(
                name=f"demo-{model}",
                runs_dir=runs_dir,
                data=data,
                augment=AugmentConfig(),
                train=train,
            )  # fmt: skip
        )
    return configs


def demo(
    data: str | None = None,
    runs_dir: str = "runs",
    log: Callable[[str], None] = print,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Cross-validate ``baseline``, ``tronnet`` and ``resnet18``, print a Table-5 comparison with
    95 % intervals, write the comparison page and say where every page is.

    Returns:
        ``{model: metrics.json content}`` of the three runs.
    """
    source, is_lfw = choose_data(data, log)
    on_gpu = torch.cuda.is_available()
    results: dict[str, Any] = {}
    run_dirs = {}
    for config in demo_configs(source, is_lfw, on_gpu, runs_dir):
        log(f"\n=== {config.train.model} ===")
        result = cross_validate(config, log=log, show_progress=show_progress)
        results[config.train.model] = result.metrics
        run_dirs[config.train.model] = result.run_dir
    print(
        "\nTest-part comparison (the report's Table 5 form, [95 % bootstrap interval]; its "
        "Accuracy is per identity, correct / test images of the identity, averaged):\n"
    )
    print(table5_text(results))
    print("\nReports (open in a browser; they work offline):")
    for model, path in run_dirs.items():
        page = path / "report.html"
        print(f"  {model:<10} {page if page.is_file() else path}")
    try:
        comparison = write_comparison(list(run_dirs.values()))
        print(f"  {'compare':<10} {comparison}")
    except Exception as error:  # the runs are complete; a comparison failure costs only the page
        print(f"  compare    not written ({type(error).__name__}: {error}); try: facecls compare "
              + " ".join(str(p) for p in run_dirs.values()))  # fmt: skip
    return results
