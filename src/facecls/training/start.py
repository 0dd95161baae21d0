"""Starting a run: resolve and check the config, load and split the data, make the run folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facecls.atomic import file_in_the_way, write_json
from facecls.config import ConfigError, RunConfig
from facecls.config_io import given_settings, save_yaml, to_dict
from facecls.config_io import replace as replace_config
from facecls.config_rules import resolve
from facecls.data.batches import resident
from facecls.data.checks import report_data_problems
from facecls.data.dataset import FaceDataset, load_dataset
from facecls.data.face_choice import kept_faces_of
from facecls.data.splits import TestSplit, folds_from_document, split_test
from facecls.environment import environment
from facecls.logs import RunLog, debug
from facecls.models import model_info
from facecls.models.face_embedder import choice_embedder
from facecls.models.facenet import default_weights_path, missing_weights_message
from facecls.models.factory import input_size_problem
from facecls.models.weights_store import find_weights, missing_message
from facecls.runtime import autocast_dtype, runtime_for
from facecls.training.distributed import DistContext, broadcast_text
from facecls.training.distributed import context as dist_context
from facecls.training.fold import Log
from facecls.training.resume import (
    DATA_FILES_NAME,
    check_resume,
    check_same_data,
    data_fingerprint,
)

# What the user set (config_io.given_settings), kept from the start so a resumed run knows it.
GIVEN_NAME = "settings_given.json"


def _silent(_message: str) -> None:
    """The log of ranks other than 0."""


@dataclass
class StartedRun:
    """A run folder being trained: the data, its split, the folds, where it all lives."""

    device: torch.device
    dataset: FaceDataset
    split: TestSplit
    images: torch.Tensor
    targets: torch.Tensor
    run_dir: Path
    dist: DistContext
    folds: list[np.ndarray] | None = None  # from folds.json when resuming
    # What the user set (config_io.given_settings), before the recipe and this machine filled
    # in the rest; None for a run started before facecls kept it.
    given: dict[str, Any] | None = None


def _check_processes(config: RunConfig, dist: DistContext) -> None:
    """Refuse settings that cannot work with this many processes, before any collective."""
    t = config.train
    if not dist.distributed or t.parallel_folds:
        return
    if t.batch_size % dist.world_size:
        raise ValueError(
            f"--batch-size {t.batch_size} is the global batch and must be a multiple of the "
            f"{dist.world_size} processes (each takes an equal share of every batch)"
        )
    if t.sync_bn and dist.device.type != "cuda":
        raise ValueError(
            "--sync-bn needs CUDA devices: PyTorch's SyncBatchNorm does not run on the CPU "
            "(gloo). Without it each process normalises with the statistics of its own rows."
        )
    if t.skip_nonfinite:
        raise ValueError(
            "--skip-nonfinite works with one process only: a rank that skips a batch alone "
            "would leave the others waiting for its gradients"
        )


def check_prerequisites(config: RunConfig) -> None:
    """Refuse a run whose weights file is missing, before data is loaded or a folder is made.

    Raises:
        FileNotFoundError: ``--weights`` (or FaceNet's default weights) is not a file.
    """
    t = config.train
    if t.weights and Path(t.weights).expanduser().is_dir():
        raise FileNotFoundError(
            f"{Path(t.weights).expanduser()}: is a folder (--weights); give the weights file "
            "(safetensors) itself"
        )
    if t.weights and not Path(t.weights).expanduser().is_file():
        raise FileNotFoundError(
            f"{Path(t.weights).expanduser()}: weights file not found (--weights); nothing was "
            "loaded and no run folder was made"
        )
    facenet_default = not t.weights and t.model == "facenet" and t.pretrained
    if facenet_default and not default_weights_path().is_file():
        raise FileNotFoundError(f"{missing_weights_message()}; no run folder was made")
    if not t.weights and t.model == "sface" and t.pretrained and not find_weights("sface"):
        raise FileNotFoundError(f"{missing_message('sface')}; no run folder was made")


def _start(
    config: RunConfig, dist: DistContext, log: Log, show_progress: bool, command: str,
    resume: Path | None, given: dict[str, Any] | None = None,
) -> StartedRun:  # fmt: skip
    _check_processes(config, dist)
    check_prerequisites(config)
    if resume is None:
        check_runs_dir(config.runs_dir)
    info = model_info(config.train.model)
    if info is not None and info.min_size and config.data.image_size < info.min_size:
        # Say so before decoding the data, not after.
        raise ValueError(
            f"model {info.name!r} needs --image-size of at least {info.min_size} px "
            f"(it was designed for {info.default_size}), got {config.data.image_size}"
        )
    problem = input_size_problem(config.train.model, config.data.image_size)
    if problem is not None:
        raise ValueError(
            f"model {config.train.model!r} cannot take --image-size {config.data.image_size} "
            f"({problem}); choose another size (the size it was designed for works)"
        )
    t = config.train
    if t.freeze != "none" and not (t.pretrained or t.weights):
        log(
            f"Warning: --freeze {t.freeze} keeps a backbone that was never trained (no "
            "--pretrained or --weights): only the head learns, on random features"
        )
    if resume is not None:
        check_resume(resume, config, command, log)
    device = dist.device
    # Rank 0 decodes (and extracts) into the cache first; the other ranks then read the cache.
    # a photo with several faces keeps the one that agrees with its identity's other photos
    embedder = choice_embedder(config.train, config.data.image_size, str(device))
    kept = kept_faces_of(resume) if resume is not None else None

    def load() -> FaceDataset:
        return load_dataset(config.data, log, show_progress, str(device), embedder, kept)

    dataset = dist.main_writes(load)
    if dataset is None:
        dataset = load()
    folds = None
    if resume is None:
        split = split_test(dataset, config.data, config.train.seed)
    else:
        check_same_data(resume, dataset)
        document = json.loads((resume / "folds.json").read_text())
        split, folds = folds_from_document(dataset, document)
    report_data_problems(dataset, split, log)
    if len(split.test) == 0:
        raise ValueError("the test part is empty: check the split file or the test/ folder")
    images = resident(dataset.images, device)
    targets = dataset.targets.to(images.device)
    if resume is None:
        # Only rank 0 creates the folder (never a -2 twin); every rank learns its name.
        run_dir = Path(broadcast_text(str(new_run_dir(config)) if dist.is_main else None, dist))
        if dist.is_main:
            save_yaml(config, run_dir / "config.yaml")
            write_json(run_dir / "environment.json", environment(config.train.seed))
            write_json(run_dir / DATA_FILES_NAME, data_fingerprint(dataset))
            write_json(run_dir / GIVEN_NAME, given or {})
    else:
        run_dir = resume
        saved = resume / GIVEN_NAME  # what the user set when the run started
        given = json.loads(saved.read_text()) if saved.is_file() else None
    processes = f"; {dist.world_size} processes" if dist.distributed else ""
    precision = "bf16" if runtime_for(config.train, device).dtype is not None else "fp32"
    log(
        f"Data: {len(dataset)} images of {dataset.num_classes} identities "
        f"({dataset.info['kind']}: {dataset.info['location']}); test part {len(split.test)} "
        f"images ({split.how}); device {device} ({precision}){processes}; run folder {run_dir}"
    )
    return StartedRun(device, dataset, split, images, targets, run_dir, dist, folds, given)


def begin_run(
    config: RunConfig, record: RunLog, show_progress: bool, command: str,
    resume: Path | str | None,
) -> tuple[RunConfig, StartedRun, Log, bool]:  # fmt: skip
    """Resolve the recipe, join the process group (under torchrun) and start the run; ranks
    other than 0 log nothing, show no progress and keep no run.log."""
    log: Log = record.log
    given = given_settings(config) if resume is None else None
    config = resolve(config)
    dist = dist_context(config.train.device)
    if resume is None and config.train.precision == "auto":
        # Store what auto chose on this machine, so evaluate and resume elsewhere use the same.
        dtype = autocast_dtype("auto", dist.device)
        config = replace_config(config, train={"precision": "fp32" if dtype is None else "bf16"})
    if not dist.is_main:
        log, show_progress = _silent, False
    run = _start(
        config,
        dist,
        log,
        show_progress,
        command,
        None if resume is None else Path(resume),
        given,
    )
    if dist.is_main:
        record.open(run.run_dir)
        debug(f"facecls {command}{' (resumed)' if resume else ''}; resolved config:\n"
              + json.dumps(to_dict(config), indent=2))  # fmt: skip
        debug("environment:\n" + json.dumps(environment(config.train.seed), indent=2))
    else:
        record.discard()
    return config, run, log, show_progress


def check_runs_dir(runs_dir: str | Path) -> None:
    """Refuse a ``--runs-dir`` that is (or lies under) a file, before any work.

    Raises:
        ConfigError: naming the option and the file in the way.
    """
    blocking = file_in_the_way(runs_dir)
    if blocking is not None:
        raise ConfigError(
            f"--runs-dir {runs_dir}: {blocking} is a file, not a folder; give a folder for the "
            "run folders"
        )


def new_run_dir(config: RunConfig) -> Path:
    """``runs/<name>``, or ``runs/<name>-2``, ``-3``… when taken (never overwrite a run).

    Raises:
        ConfigError: ``runs_dir`` is a file, or the folder cannot be made there.
    """
    check_runs_dir(config.runs_dir)
    base = Path(config.runs_dir) / config.name
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    try:
        candidate.mkdir(parents=True)
    except OSError as error:
        raise ConfigError(
            f"--runs-dir {config.runs_dir}: cannot make the run folder {candidate.name} there "
            f"({error.strerror or error})"
        ) from error
    return candidate
