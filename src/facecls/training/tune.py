"""``facecls tune``: search the learning rate, weight decay, imbalance remedy and sampler.

Optuna's TPE sampler proposes a configuration per trial; each trial is an ordinary ``train``
(or ``cv``) run under ``RUN_DIR/trials/`` scored on validation balanced accuracy (pooled
out-of-fold in ``cv`` mode), never on the test part. Trials that trail the median of earlier
ones at the same epoch are pruned. The study lives in ``RUN_DIR/study.db`` (SQLite), so a
stopped search resumes where it stood; the best configuration is written as ``best.yaml``
(``facecls train --config``) and the trials as ``tuning.md`` / ``tuning.html``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facecls.config import IMBALANCE, RunConfig
from facecls.config_io import load_yaml, save_yaml
from facecls.config_io import replace as replace_config
from facecls.logs import LoggerLog, RunLog
from facecls.report.write import write_tuning_page
from facecls.training.fold import Log
from facecls.training.run import cross_validate, fit
from facecls.training.start import new_run_dir

STUDY_FILE, BEST_FILE = "study.db", "best.yaml"
# One remedy per run: a loss remedy or a sampler (the config refuses both at once).
REMEDIES = (*IMBALANCE, "sampler:class-balanced", "sampler:sqrt")


@dataclass
class TuneResult:
    """The study's folder, the best configuration file and its validation score."""

    run_dir: Path
    best_config: Path
    best_value: float
    trials: int


def suggest(trial: Any) -> dict[str, Any]:
    """The ``train`` settings of one trial (Optuna's ``trial.suggest_*``)."""
    params: dict[str, Any] = {
        "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-1, log=True),
        "imbalance": "none",
        "sampler": "none",
    }
    remedy = trial.suggest_categorical("remedy", REMEDIES)
    if remedy.startswith("sampler:"):
        params["sampler"] = remedy.split(":", 1)[1]
    else:
        params["imbalance"] = remedy
    if remedy == "logit-adjust":
        params["tau"] = trial.suggest_float("tau", 0.25, 2.0)
    if remedy == "effective":
        params["beta"] = trial.suggest_categorical("beta", [0.9, 0.99, 0.999, 0.9999])
    return params


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as error:
        raise ImportError("facecls tune needs Optuna: pip install 'facecls[tune]'") from error
    return optuna


def tune(
    config: RunConfig, trials: int = 30, mode: str = "holdout", resume: Path | str | None = None,
    log: Log = print, show_progress: bool = False,
) -> TuneResult:  # fmt: skip
    """Run (or resume) a study of ``trials`` trials of ``config`` with searched settings.

    Args:
        mode: ``holdout`` (one ``train`` per trial) or ``cv`` (k-fold per trial).
        resume: the study's folder; finished and pruned trials are kept, not repeated.
    """
    optuna = _optuna()
    if mode not in ("holdout", "cv"):
        raise ValueError(f"--mode must be holdout or cv, got {mode!r}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"--trials must be a whole number of at least 1, got {trials!r}")
    if resume is None:
        run_dir = new_run_dir(config)
        save_yaml(config, run_dir / "config.yaml")
    else:
        run_dir = Path(resume)
        if not (run_dir / STUDY_FILE).is_file():
            raise FileNotFoundError(f"--resume {run_dir}: no {STUDY_FILE} (not a tuning folder)")
        config = load_yaml(run_dir / "config.yaml")
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # facecls says what happens
    with RunLog(log) as record:
        record.open(run_dir)
        return _study(optuna, config, trials, mode, run_dir, record.log, show_progress)


def _study(
    optuna: Any, config: RunConfig, trials: int, mode: str, run_dir: Path, log: Log,
    show_progress: bool,
) -> TuneResult:  # fmt: skip
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    try:
        study = optuna.create_study(
            study_name="facecls", storage=f"sqlite:///{run_dir / STUDY_FILE}", load_if_exists=True,
            direction="maximize",
            # a fresh seed per session: a resumed study must not redraw the first one's trials
            sampler=optuna.samplers.TPESampler(seed=config.train.seed + len_trials(run_dir, optuna)),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        )  # fmt: skip
    except Exception as error:  # SQLAlchemy's DatabaseError, Optuna's storage errors, ...
        raise ValueError(
            f"{run_dir / STUDY_FILE}: not a readable Optuna study ({type(error).__name__}); "
            "move it away and start a new tuning run (the trials' run folders are kept)"
        ) from error
    done = sum(t.state in finished for t in study.trials)
    if done:
        log(f"Tuning: resuming {run_dir} with {done} finished trial(s)")
    train = fit if mode == "holdout" else cross_validate
    epochs = config.train.epochs or 1
    quiet_trials = LoggerLog(logging.DEBUG)  # a trial's messages go to run.log files only

    def objective(trial: Any) -> float:
        params = suggest(trial)
        trial_config = dataclasses.replace(
            replace_config(config, train=params),
            name=f"trial-{trial.number}", runs_dir=str(run_dir / "trials"),
        )  # fmt: skip

        def on_epoch(row: dict[str, Any], _cm: np.ndarray, _counts: np.ndarray) -> None:
            step = int(row["fold"]) * epochs + int(row["epoch"])
            trial.report(float(row["val_balanced_accuracy"]), step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at fold {row['fold']} epoch {row['epoch']}")

        result = train(trial_config, log=quiet_trials, show_progress=False, on_epoch=on_epoch)
        if mode == "holdout":
            value = result.metrics["validation"]["summary"]["balanced_accuracy"]
        else:
            value = result.metrics["cv"]["pooled_out_of_fold"]["balanced_accuracy"]
        trial.set_user_attr("run_dir", str(result.run_dir))
        return float(value)

    def report(_study: Any, trial: Any) -> None:
        value = "pruned" if trial.value is None else f"{trial.value:.4f}"
        log(f"trial {trial.number}: validation balanced accuracy {value}  {trial.params}")

    if trials > done:
        study.optimize(objective, n_trials=trials - done, callbacks=[report], catch=())
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise ValueError(
            f"{run_dir}: no trial finished (every one was pruned or failed), so there is no best "
            f"setting yet; run more with facecls tune --resume {run_dir} --trials N"
        )
    best = study.best_trial
    best_config = dataclasses.replace(
        replace_config(config, train=suggest(optuna.trial.FixedTrial(best.params))),
        name=f"{config.name}-best",
    )
    save_yaml(best_config, run_dir / BEST_FILE)
    write_tuning_page(run_dir, trial_rows(study), best.number)
    log(f"Best: trial {best.number}, validation balanced accuracy {best.value:.4f}")
    return TuneResult(run_dir, run_dir / BEST_FILE, float(best.value), len(study.trials))


def len_trials(run_dir: Path, optuna: Any) -> int:
    """Trials already in the study (0 for a new one)."""
    try:
        return len(
            optuna.load_study(
                study_name="facecls", storage=f"sqlite:///{run_dir / STUDY_FILE}"
            ).trials
        )
    except KeyError:  # no study of that name yet
        return 0


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One row per trial for the tuning page: number, state, score, settings."""
    return [
        {"number": t.number, "state": t.state.name.lower(), "value": t.value,
         "params": dict(t.params)}
        for t in study.trials
    ]  # fmt: skip
