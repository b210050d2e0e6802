"""After the search: each model's best trial, chosen on the validation holdout, is evaluated
once on the test part at its best checkpoint, in an MLflow run tagged mfexp.best=true.

The checkpoint is rebuilt rather than stored: training is deterministic (same seed, same data,
same order), so replaying the best trial's config up to its best epoch gives the very network
the trial had at that epoch (its val RMSE is logged beside the trial's, as a check). Retraining
on the whole training part instead was tried: it changed the networks the search had chosen
(the towers' test RMSE moved by up to 0.04 from what their val RMSE promised). The config is
written to sweeps/<name>/best-<model>.yaml, which `python -m mfexp.run` replays exactly.

`sweep.refit=true` trains the chosen configuration once more on the whole training part
(train + holdout: `data.val_fraction=0`, implicit feedback from all of it), for the same number of
epochs, and evaluates that network once on the test part instead; it is what the best run logs
and serves. The choice is still the holdout's. The replayed network's holdout predictions are
logged beside it (`val_predictions.npy`), so the blend's weights are fit on predictions of
networks that never saw the holdout. It helps the models trained with Adam (fm on u1: test RMSE
0.8945 -> 0.8891, BENCHMARKS.md); the tutorial's towers trained with SGD moved by up to 0.04 from what their
val RMSE promised when retrained, so the default (`sweep.refit=auto`) asks it only of the models whose
class says so (Recommender.refit: svdpp, fm, autorec); a list names models (`sweep.refit=[biased,fm]`)."""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

import mxnet as mx
import numpy as np
import optuna
import yaml

from mfexp.config import Config, flatten
from mfexp.experiment import log_trained, run_tags, track_kept, train_and_track
from mfexp.metrics import rmse
from mfexp.models import ModelData
from mfexp.models.base import NEEDS
from mfexp.models.ensemble import Ensemble
from mfexp.sweep.objective import apply_params, ranking_on
from mfexp.sweep.results import BEST_EPOCH_ATTR, OVERRIDES_ATTR, POPULATION_ATTR, VAL_RMSE_ATTR, ModelOutcome
from mfexp.sweep.storage import kept_network_path, val_predictions_path
from mfexp.track.tracker import (
    AVERAGE_SEEDS_TAG,
    BEST_TAG,
    DEVICE_TAG,
    NOTE_TAG,
    PARENT_TAG,
    REFIT_TAG,
    STUDY_TAG,
    TRIAL_TAG,
    Tracker,
    redacted,
)
from mfexp.train import build_net, evaluate, fit, predict, resolve_device

log = logging.getLogger("mfexp.sweep")


def best_config(plan, model: str, study: optuna.Study) -> Config:
    best = study.best_trial
    overrides = {**plan.spaces[model].fixed, **best.user_attrs.get(OVERRIDES_ATTR, {}), **best.params,
                 "train.epochs": int(best.user_attrs.get(BEST_EPOCH_ATTR) or plan.bases[model].train.epochs),
                 "train.patience": None}
    cfg = apply_params(plan.bases[model], overrides)
    cfg.tracking = replace(plan.tracking, log_model=True, experiment=plan.experiment,
                           run_name=f"{model}-best")
    return cfg


def refit_config(cfg: Config) -> Config:
    """The chosen configuration trained on train + holdout, for its best epoch count."""
    return replace(cfg, data=replace(cfg.data, val_fraction=0.0),
                   tracking=replace(cfg.tracking, run_name=cfg.tracking.run_name + "-refit"))


VAL_PREDICTIONS = "val_predictions.npy"


def seeded(cfg: Config, i: int) -> Config:
    """The i-th of sweep.average_seeds copies of a configuration: train.seed + i."""
    return cfg if i == 0 else replace(cfg, train=replace(cfg.train, seed=cfg.train.seed + i))


def _gives_trial_rmse(model: str, path: Path, got: Optional[float], val_rmse: float) -> bool:
    """Whether what the search kept in `path` gives the best trial's val RMSE (else it is another study's
    file, left under the same sweep name, and the choice is trained again)."""
    if got is not None and abs(got - val_rmse) <= 1e-4:
        return True
    log.warning("%s: %s gives val_rmse %s, not the best trial's %.4f: trained again instead", model, path,
                "none" if got is None else f"{got:.4f}", val_rmse)
    return False


def searched_val_predictions(plan, model: str, number: int, val_rmse: float, data):
    """Trial `number`'s holdout predictions as it kept them during the search (Objective.keep):
    the network a replay would train, without training it again. None where this machine has none, or
    where they do not give the trial's `val_rmse` (a file left by another study of the same name)."""
    path = val_predictions_path(plan.sweep, model, number)
    try:
        pred = np.load(path)
    except (OSError, ValueError):
        return None
    if pred.shape != (len(data.val),):
        return None
    if not _gives_trial_rmse(model, path, rmse(data.val.ratings, np.clip(pred, float(data.rating_min),
                                                                         float(data.rating_max))), val_rmse):
        return None
    log.info("%s: the blend takes the best trial's holdout predictions kept in %s, not a replay", model, path)
    return pred


def kept_network(plan, model: str, number: int, cfg: Config, data, val_rmse: float):
    """Trial `number`'s network as it kept it during the search (Objective.keep), built from `cfg` and
    loaded on its device: the network a replay would train, without training it again. None where this
    machine has none, or where it does not give the trial's `val_rmse` (a file left by another study)."""
    path = kept_network_path(plan.sweep, model, number)
    if not path.exists():
        return None
    ctx, _ = resolve_device(cfg.train.device)
    net = build_net(cfg, data, ctx)
    try:
        net.load_parameters(str(path), ctx=ctx)
    except (OSError, AssertionError, mx.base.MXNetError) as err:  # Gluon asserts on a parameter it lacks
        log.warning("%s: %s could not be loaded (%s): trained again instead", model, path, str(err).splitlines()[0])
        return None
    if not _gives_trial_rmse(model, path, evaluate(net, data.val, ctx, (float(data.rating_min),
                                                                        float(data.rating_max))), val_rmse):
        return None
    log.info("%s: evaluated on the test part as the best trial kept it in %s, not a replay", model, path)
    return net


def replayed_val_predictions(cfg: Config, data, seeds: int = 1):
    """(holdout predictions, holdout RMSE of the first) of the best trial's network replayed
    untracked; with `seeds` > 1 the average of that many seeds' predictions."""
    ctx, _ = resolve_device(cfg.train.device)
    part, preds, first = data.val, [], None
    for i in range(seeds):
        c = seeded(cfg, i)
        net = build_net(c, data, ctx)
        result = fit(net, data, c.train, ctx, eval_test=False, final_test=False)
        first = result.final_val_rmse if first is None else first
        preds.append(predict(net, part.users, part.items, ctx, part.timestamps))
    return np.mean(preds, axis=0).astype(np.float32), first


def train_seed_average(cfg: Config, data, tracker, seeds: int, on_trained=None):
    """train_and_track for `seeds` copies of `cfg` (train.seed + i): the first's epochs are logged,
    the average of all their predictions is the model logged (an Ensemble of equal weights named
    after the model) and evaluated. Returns (the first's FitResult, its final_test_rmse the average's)."""
    ctx, device = resolve_device(cfg.train.device)
    tracker.set_tags({DEVICE_TAG: device, AVERAGE_SEEDS_TAG: str(seeds)})
    tracker.log_yaml(asdict(cfg), "config.yaml")
    tracker.log_datasets(data, cfg.data, test=True)
    nets, first = [], None
    for i in range(seeds):
        c = seeded(cfg, i)
        net = build_net(c, data, ctx)
        hook = (lambda report: tracker.log_metrics(report.metrics(), step=report.epoch)) if i == 0 else None
        result = fit(net, data, c.train, ctx, eval_test=False, final_test=False, on_epoch=hook)
        first = result if first is None else first
        nets.append(net)
    avg = Ensemble.assemble(nets, [1.0 / seeds] * seeds, 0.0, ModelData.from_dataset(data, NEEDS), name=cfg.model.name)
    first.final_test_rmse = evaluate(avg, data.test, mx.cpu(), (float(data.rating_min), float(data.rating_max)))
    summary = {"best_epoch": first.best_epoch, "final_test_rmse": first.final_test_rmse}
    if first.final_val_rmse is not None:
        summary["final_val_rmse_seed0"] = first.final_val_rmse
        summary["final_val_rmse"] = evaluate(avg, data.val, mx.cpu(), (float(data.rating_min), float(data.rating_max)))
    tracker.log_metrics(summary)
    log_trained(tracker, avg, data, cfg, on_trained)
    if first.final_val_rmse is not None:
        first.final_val_rmse = summary["final_val_rmse"]
    return first


def write_replay_yaml(cfg: Config, path: Path, header: str) -> Path:
    """A primary Hydra config holding every value: --config-dir <folder> --config-name <stem>."""
    doc = {"defaults": ["mfexp_schema", "_self_", {"override hydra/job_logging": "stdout"}],
           "hydra": {"run": {"dir": "."}, "output_subdir": None, "job": {"chdir": False}},
           # no password in it: a tracking.uri that had one must be given again to replay (config.py says so)
           **redacted(asdict(replace(cfg, tracking=replace(cfg.tracking, experiment="mfexp", run_name=None))))}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(f"# {header}\n" + yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, path)
    return path


def _chosen_by(plan, study: optuna.Study) -> str:
    return f"{plan.sweep.objective} {study.best_value:.4f}"


def trial_val_rmse(study: optuna.Study) -> float:
    """The best trial's val RMSE (its value when the objective is val RMSE; kept as a user attr)."""
    return float(study.best_trial.user_attrs.get(VAL_RMSE_ATTR, study.best_value))


def best_description(plan, model: str, study: optuna.Study, result, yaml_path: Path,
                     ranking: Optional[dict] = None, refit: bool = False, kept: bool = False) -> str:
    """The best run's MLflow description: which trial it is, and that the test part judged it once."""
    best = study.best_trial
    top = (", " + ", ".join(f"{k.removeprefix('test_')} {v:.4f}" for k, v in ranking.items())) if ranking else ""
    return (f"**The best `{model}` of sweep `{plan.sweep.name}`**: trial {best.number} of study "
            f"`{study.study_name}`, chosen on the validation holdout ({_chosen_by(plan, study)}). Its "
            + (f"configuration was trained again on train + holdout for its best epoch count ({result.best_epoch}) "
               if refit else f"network was kept by the search at its best epoch ({result.best_epoch}) "
               if kept else f"configuration was replayed to its best epoch ({result.best_epoch}) ")
            + f"and evaluated **once** on the "
            f"test part: test RMSE {result.final_test_rmse:.4f}{top}. The test part chose nothing.\n\n"
            f"Replay: `python -m mfexp.run --config-dir {yaml_path.parent} --config-name {yaml_path.stem}`")


def _test_ranking(model: str, data, into: list):
    """on_trained hook: the trained network's top-10 quality on the test part, or a warning."""
    def hook(trained) -> None:
        try:
            into.append(ranking_on(trained, data, "test").as_metrics("test"))
        except Exception as err:  # noqa: BLE001 -- a metric must not cost the sweep its best run
            log.warning("%s: no ranking metrics (%s: %s)", model, type(err).__name__, err)
    return hook


def _check_replay(model: str, replayed: Optional[float], val_rmse: float, new_masks: bool = False) -> None:
    """`new_masks`: the trial trained with dropout in a population, whose masks a lone replay draws anew
    (mfexp.population): its replay is another draw, as another seed would be, not a sign of trouble."""
    if replayed is None or abs(replayed - val_rmse) <= 1e-4:
        return
    if new_masks:
        log.info("%s: the best trial trained with dropout in a population; its lone replay draws other masks and "
                 "reached val_rmse %.4f, the trial %.4f; its test RMSE is of the replayed network", model,
                 replayed, val_rmse)
    else:
        log.warning("%s: the replayed best trial reached val_rmse %.4f, the trial %.4f: training was not "
                    "deterministic here (threads?); its test RMSE is of the replayed network", model,
                    replayed, val_rmse)


def evaluate_best(plan, model: str, study: optuna.Study, data, parent_run_id, out: ModelOutcome,
                  yaml_path: Path, refit_data=None) -> ModelOutcome:
    """`refit_data` (sweep.refit): the data set with no holdout, which the chosen configuration is
    trained on again before its one test evaluation."""
    cfg, val_rmse, val_pred = best_config(plan, model, study), trial_val_rmse(study), None
    new_masks = study.best_trial.user_attrs.get(POPULATION_ATTR, 1) > 1 and getattr(cfg.model, "dropout", 0) > 0
    train_cfg, train_data, seeds = cfg, data, plan.sweep.average_seeds
    kept = (kept_network(plan, model, study.best_trial.number, cfg, data, val_rmse)
            if refit_data is None and seeds == 1 else None)
    if refit_data is not None:
        if plan.sweep.ensemble:  # the blend is fit on the holdout: predictions of networks that never saw it
            val_pred = (searched_val_predictions(plan, model, study.best_trial.number, val_rmse, data)
                        if seeds == 1 else None)
            if val_pred is None:  # kept on another machine, or not at its best epoch: trained again
                val_pred, replayed = replayed_val_predictions(cfg, data, seeds)
                _check_replay(model, replayed, val_rmse, new_masks)
        train_cfg, train_data = refit_config(cfg), refit_data
    tags = {**run_tags(train_cfg, train_data), BEST_TAG: "true", STUDY_TAG: study.study_name,
            TRIAL_TAG: str(study.best_trial.number), REFIT_TAG: str(refit_data is not None).lower()}
    if parent_run_id:
        tags[PARENT_TAG] = parent_run_id
    tracker = Tracker(train_cfg.tracking)
    ranked = []
    with tracker.run(run_name=train_cfg.tracking.run_name, params=flatten(train_cfg), tags=tags,
                     experiment=plan.experiment):
        if kept is not None:
            result = track_kept(train_cfg, train_data, tracker, kept,
                                int(study.best_trial.user_attrs.get(BEST_EPOCH_ATTR) or 0),
                                on_trained=_test_ranking(model, train_data, ranked))
        elif seeds > 1:
            result = train_seed_average(train_cfg, train_data, tracker, seeds, _test_ranking(model, train_data, ranked))
        else:
            result = train_and_track(train_cfg, train_data, tracker, eval_test=False,
                                     on_trained=_test_ranking(model, train_data, ranked))
        ranking = ranked[0] if ranked else {}
        tracker.log_metrics({"test_rmse": result.final_test_rmse, "best_val_rmse_search": val_rmse, **ranking},
                            step=len(result.history))
        tracker.set_tags({NOTE_TAG: best_description(plan, model, study, result, yaml_path, ranking,
                                                                  refit=refit_data is not None,
                                                                  kept=kept is not None)})
        if val_pred is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / VAL_PREDICTIONS
                np.save(path, val_pred)
                tracker.log_artifact(path)
    if refit_data is None and seeds == 1 and kept is None:
        _check_replay(model, result.final_val_rmse, val_rmse, new_masks)
    out.test_rmse, out.best_run_id, out.ranking = result.final_test_rmse, tracker.run_id, ranking
    out.refit, out.average_seeds = refit_data is not None, seeds
    how = "refit on train + holdout for its best epoch count" if refit_data is not None else "at its best epoch"
    how += f", the average of {seeds} seeds" if seeds > 1 else ""
    header = (f"best {model} of sweep {plan.sweep.name} (trial {study.best_trial.number}, val RMSE "
              f"{val_rmse:.4f}{'' if plan.sweep.objective == 'val_rmse' else ', ' + _chosen_by(plan, study)}), "
              f"{how}: test RMSE "
              f"{result.final_test_rmse:.4f}. Replay: python -m mfexp.run --config-dir {yaml_path.parent} "
              f"--config-name {yaml_path.stem}")
    out.best_config_path = str(write_replay_yaml(train_cfg, yaml_path, header))
    return out
