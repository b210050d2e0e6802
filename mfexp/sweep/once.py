"""One test evaluation per best trial, however many worker commands a sweep has.

Every command of a sweep (one per machine) ends by evaluating each model's best trial on the
test part and registering it. Run under `storage.exclusive()` (a lock every process of the sweep
shares), these two checks make that happen once, by whichever command finishes last:

- trials of the model still RUNNING elsewhere: another command is still searching, and its best
  may yet change; this one leaves the evaluation to it (the last to finish finds none running);
- the current best trial already evaluated (a study user attr `mfexp.evaluated.<trial>` holds
  its run id and test RMSE): the outcome is read from there, not trained and registered again.
"""
from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from mfexp.config import refits
from mfexp.sweep.best import best_config, refit_config, write_replay_yaml
from mfexp.sweep.results import ModelOutcome
from mfexp.sweep.storage import drop_kept_networks

ATTR = "mfexp.evaluated.{}"


def evaluation_suffix(plan, model: str) -> str:
    """What else than the trial an evaluation depends on: another refit or seed count is another
    evaluation (a sweep resumed with new end settings evaluates its bests again, once)."""
    return ((".refit" if refits(plan.sweep, model) else "")
            + (f".seeds{plan.sweep.average_seeds}" if plan.sweep.average_seeds > 1 else ""))


def _key(plan, model: str, trial) -> str:
    return ATTR.format(trial) + evaluation_suffix(plan, model)


def settled(plan, model: str, study: optuna.Study, out: ModelOutcome, yaml_path: Path) -> bool:
    """True when this command must not evaluate `model`'s best: evaluated already (`out` is filled
    from the record and the replay YAML written here too), or still being searched elsewhere."""
    record = study.user_attrs.get(_key(plan, model, out.best_trial))
    if record is not None:
        out.test_rmse, out.best_run_id = record.get("test_rmse"), record.get("run_id")
        out.ranking = dict(record.get("ranking") or {})
        # the key names the end settings (evaluation_suffix), so a record that predates these
        # fields was made with this plan's: the report must not say "one seed" of a 3-seed average
        out.refit = bool(record.get("refit", refits(plan.sweep, model)))
        out.average_seeds = int(record.get("average_seeds", plan.sweep.average_seeds))
        out.best_config_path = str(_replay_yaml(plan, model, study, record, yaml_path))
        print(f"[{model:>7}] best trial {out.best_trial} was evaluated on the test part by {record.get('by')}"
              f" (test_rmse {_fmt(out.test_rmse)}): not again", flush=True)
        return True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial must not hold this up (RDB)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if running:
        print(f"[{model:>7}] {len(running)} trial(s) still running in another worker command: the last one "
              "to finish evaluates the best on the test part", flush=True)
        return True
    return False


def record(plan, model: str, study: optuna.Study, out: ModelOutcome) -> None:
    """Say in the study that its best trial has been evaluated, with what result."""
    study.set_user_attr(_key(plan, model, out.best_trial), {
        "run_id": out.best_run_id, "test_rmse": out.test_rmse, "ranking": out.ranking, "refit": out.refit,
        "average_seeds": out.average_seeds,
        "by": f"{socket.gethostname()}:{os.getpid()}"})
    drop_kept_networks(plan.sweep, model)


def _replay_yaml(plan, model: str, study: optuna.Study, record: dict, yaml_path: Path) -> Path:
    header = (f"best {model} of sweep {plan.sweep.name} (trial {study.best_trial.number}, val RMSE "
              f"{study.best_value:.4f}), at its best epoch: test RMSE {_fmt(record.get('test_rmse'))} (MLflow run "
              f"{record.get('run_id')}). Replay: python -m mfexp.run --config-dir {yaml_path.parent} "
              f"--config-name {yaml_path.stem}")
    cfg = best_config(plan, model, study)
    return write_replay_yaml(refit_config(cfg) if refits(plan.sweep, model) else cfg, yaml_path, header)


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "unknown"
