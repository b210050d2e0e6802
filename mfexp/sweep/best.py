"""After the search: each model's best trial, chosen on the validation holdout, is evaluated
once on the test part at its best checkpoint, in an MLflow run tagged mfexp.best=true.

The checkpoint is rebuilt rather than stored: training is deterministic (same seed, same data,
same order), so replaying the best trial's config up to its best epoch gives the very network
the trial had at that epoch (its val RMSE is logged beside the trial's, as a check). Retraining
on the whole training part instead was tried: it changed the networks the search had chosen
(the towers' test RMSE moved by up to 0.04 from what their val RMSE promised). The config is
written to sweeps/<name>/best-<model>.yaml, which `python -m mfexp.run` replays exactly."""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

import optuna
import yaml

from mfexp.config import Config, flatten
from mfexp.sweep.objective import apply_params
from mfexp.sweep.results import ModelOutcome

log = logging.getLogger("mfexp.sweep")


def best_config(plan, model: str, study: optuna.Study) -> Config:
    best = study.best_trial
    overrides = {**plan.spaces[model].fixed, **best.user_attrs.get("overrides", {}), **best.params,
                 "train.epochs": int(best.user_attrs.get("best_epoch") or plan.bases[model].train.epochs),
                 "train.patience": None}
    cfg = apply_params(plan.bases[model], overrides)
    cfg.tracking = replace(plan.tracking, log_model=True, experiment=plan.experiment,
                           run_name=f"{model}-best")
    return cfg


def write_replay_yaml(cfg: Config, path: Path, header: str) -> Path:
    """A primary Hydra config holding every value: --config-dir <folder> --config-name <stem>."""
    doc = {"defaults": ["mfexp_schema", "_self_", {"override hydra/job_logging": "stdout"}],
           "hydra": {"run": {"dir": "."}, "output_subdir": None, "job": {"chdir": False}},
           **asdict(replace(cfg, tracking=replace(cfg.tracking, experiment="mfexp", run_name=None)))}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(f"# {header}\n" + yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, path)
    return path


def _chosen_by(plan, study: optuna.Study) -> str:
    return f"{plan.sweep.objective} {study.best_value:.4f}"


def trial_val_rmse(study: optuna.Study) -> float:
    """The best trial's val RMSE (its value when the objective is val RMSE; kept as a user attr)."""
    return float(study.best_trial.user_attrs.get("val_rmse", study.best_value))


def best_description(plan, model: str, study: optuna.Study, result, yaml_path: Path,
                     ranking: Optional[dict] = None) -> str:
    """The best run's MLflow description: which trial it is, and that the test part judged it once."""
    best = study.best_trial
    top = (", " + ", ".join(f"{k.removeprefix('test_')} {v:.4f}" for k, v in ranking.items())) if ranking else ""
    return (f"**The best `{model}` of sweep `{plan.sweep.name}`**: trial {best.number} of study "
            f"`{study.study_name}`, chosen on the validation holdout ({_chosen_by(plan, study)}). Its "
            f"configuration was replayed to its best epoch ({result.best_epoch}) and evaluated **once** on the "
            f"test part: test RMSE {result.final_test_rmse:.4f}{top}. The test part chose nothing.\n\n"
            f"Replay: `python -m mfexp.run --config-dir {yaml_path.parent} --config-name {yaml_path.stem}`")


def _test_ranking(model: str, data, into: list):
    """on_trained hook: the trained network's top-10 quality on the test part, or a warning."""
    from mfexp.sweep.objective import ranking_on

    def hook(trained) -> None:
        try:
            into.append(ranking_on(trained, data, "test").as_metrics("test"))
        except Exception as err:  # noqa: BLE001 -- a metric must not cost the sweep its best run
            log.warning("%s: no ranking metrics (%s: %s)", model, type(err).__name__, err)
    return hook


def evaluate_best(plan, model: str, study: optuna.Study, data, parent_run_id, out: ModelOutcome,
                  yaml_path: Path) -> ModelOutcome:
    from mfexp.run import run_tags, train_and_track
    from mfexp.tracking import Tracker

    cfg = best_config(plan, model, study)
    tags = {**run_tags(cfg, data), "mfexp.best": "true", "optuna.study_name": study.study_name,
            "optuna.trial_number": str(study.best_trial.number)}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    tracker = Tracker(cfg.tracking)
    val_rmse, ranked = trial_val_rmse(study), []
    with tracker.run(run_name=cfg.tracking.run_name, params=flatten(cfg), tags=tags, experiment=plan.experiment):
        result = train_and_track(cfg, data, tracker, eval_test=False, on_trained=_test_ranking(model, data, ranked))
        ranking = ranked[0] if ranked else {}
        tracker.log_metrics({"test_rmse": result.final_test_rmse, "best_val_rmse_search": val_rmse, **ranking},
                            step=len(result.history))
        tracker.set_tags({"mlflow.note.content": best_description(plan, model, study, result, yaml_path, ranking)})
    if result.final_val_rmse is not None and abs(result.final_val_rmse - val_rmse) > 1e-4:
        log.warning("%s: the replayed best trial reached val_rmse %.4f, the trial %.4f: training was not "
                    "deterministic here (threads?); its test RMSE is of the replayed network", model,
                    result.final_val_rmse, val_rmse)
    out.test_rmse, out.best_run_id, out.ranking = result.final_test_rmse, tracker.run_id, ranking
    header = (f"best {model} of sweep {plan.sweep.name} (trial {study.best_trial.number}, val RMSE "
              f"{val_rmse:.4f}{'' if plan.sweep.objective == 'val_rmse' else ', ' + _chosen_by(plan, study)}), "
              f"at its best epoch: test RMSE "
              f"{result.final_test_rmse:.4f}. Replay: python -m mfexp.run --config-dir {yaml_path.parent} "
              f"--config-name {yaml_path.stem}")
    out.best_config_path = str(write_replay_yaml(cfg, yaml_path, header))
    return out
