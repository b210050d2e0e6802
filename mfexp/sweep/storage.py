"""Optuna storage, studies, samplers and pruners for a sweep.

Default storage: Optuna's journal file `sweeps/<name>/optuna.journal`, safe for several
processes on one machine. `sweep.storage=<URL>` takes any Optuna RDB URL (sqlite:///...,
postgresql://...), with heartbeats so a killed worker's trial does not stay RUNNING.
Stores are created once, in the main process, before any worker starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import optuna
from optuna.trial import TrialState

from mfexp.config import SweepConfig
from mfexp.errors import ConfigError
from mfexp.tracking import redact

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)  # toward sweep.n_trials; FAIL does not count
HEARTBEAT_S = 30


def sweep_dir(sweep: SweepConfig) -> Path:
    return Path(sweep.root) / sweep.name


def study_name(sweep: SweepConfig, model: str) -> str:
    return f"{sweep.name}-{model}"


def open_storage(sweep: SweepConfig) -> optuna.storages.BaseStorage:
    """The sweep's storage; raises ConfigError (naming sweep.storage) when it cannot be used."""
    if not sweep.storage:
        folder = sweep_dir(sweep)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "optuna.journal"
            path.touch(exist_ok=True)
        except OSError as err:
            raise ConfigError(f"cannot write the sweep's storage in {folder}/ ({err.strerror}). Make the "
                              "folder writable, or set sweep.root=<folder> or sweep.storage=<URL>.") from err
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if "://" not in sweep.storage:
        raise ConfigError(f"sweep.storage must be an Optuna RDB URL such as sqlite:///sweep.db or "
                          f"postgresql://user@host/db, got {redact(sweep.storage)!r}.")
    try:
        return optuna.storages.RDBStorage(
            sweep.storage, heartbeat_interval=HEARTBEAT_S,
            failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=1))
    except Exception as err:  # SQLAlchemy/driver errors: say which URL and what to do
        raise ConfigError(f"cannot open sweep.storage={redact(sweep.storage)}: {type(err).__name__}: "
                          f"{redact(str(err)).splitlines()[0]}. Check the URL, that the database server "
                          "is running and reachable, and that its driver is installed "
                          "(postgresql:// needs psycopg, part of make install).") from err


def make_sampler(sweep: SweepConfig, worker: int = 0, grid: Optional[dict] = None) -> optuna.samplers.BaseSampler:
    seed = sweep.seed + 1000 * worker  # workers must not propose the same points
    name = sweep.sampler
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=5)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=sweep.seed, scramble=True)
    if name == "grid":
        return optuna.samplers.GridSampler(grid or {}, seed=seed)
    if name == "gp":
        _needs("torch", "sweep.sampler=gp", "pip install torch (into .venv)")
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":
        _needs("cmaes", "sweep.sampler=cmaes", "pip install cmaes (into .venv)")
        return optuna.samplers.CmaEsSampler(seed=seed)
    raise ConfigError(f"unknown sweep.sampler {name!r}")


def make_pruner(sweep: SweepConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    name = sweep.pruner
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=2, max_resource=max_epochs, reduction_factor=3)
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"unknown sweep.pruner {name!r}")


def _needs(module: str, key: str, how: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{key} needs the '{module}' package, which is not installed: {how}, "
                          "or choose another sampler (tpe, random, qmc, grid).")


def counted_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=COUNTED))
