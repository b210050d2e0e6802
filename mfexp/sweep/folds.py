"""sweep.folds: does the winner hold? After the selection on the holdout of data.split (u1), each
model's chosen configuration is trained on each listed fold and evaluated once on that fold's test
part; the blend too, its weights fit on each fold's own holdout as on the selection fold. Nothing
about the choice changes: the other folds only report.

A fold is loaded as `data.split=<fold>` loads it (mfexp/data/loader.py): its holdout carved out of
its own training part, implicit feedback and every derived feature from that training part only.
The chosen configuration trains there as its best run did (its best epoch count; sweep.refit and
sweep.average_seeds as on the selection fold). Each fold is an MLflow run under the model's best
run (the fold as a param and a tag), without a logged model (replay it with `python -m mfexp.run
--config-dir sweeps/<name> --config-name best-<model> data.split=<fold>`); the best run gets the
mean and sd over the folds. Each fold's figure is recorded in the model's study, so a resumed sweep
(or another worker command) reads it back instead of training it again, as once.py does.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
import optuna

from mfexp.config import Config, flatten, refits, sweep_folds
from mfexp.data import load_dataset
from mfexp.errors import TrainingDiverged
from mfexp.experiment import run_tags
from mfexp.metrics import rmse
from mfexp.models.ensemble import fit_weights
from mfexp.sweep.best import best_config, refit_config, seeded
from mfexp.sweep.ensemble import NAME
from mfexp.sweep.once import evaluation_suffix
from mfexp.sweep.results import FoldFigures, ModelOutcome
from mfexp.track.tracker import FOLDS_TAG, FOLD_TAG, MODEL_TAG, Tracker
from mfexp.train import build_net, fit, predict, resolve_device

log = logging.getLogger("mfexp.sweep")
ATTR = "mfexp.fold.{fold}.{what}"  # study user attr: one fold's figure, recorded once


@dataclass
class FoldFit:
    """One configuration's networks on one fold: their predictions and figures."""

    val_pred: np.ndarray  # on the fold's holdout, by networks that never saw it
    test_pred: np.ndarray
    val_rmse: Optional[float]
    test_rmse: float
    epochs: int
    wall_s: float


def fit_on_fold(cfg: Config, data, refit_data=None, seeds: int = 1, on_epoch=None) -> FoldFit:
    """Train `cfg` on `data` (one fold) as a sweep's best run trains: `seeds` networks (train.seed + i)
    whose predictions are averaged; with `refit_data` (the fold without a holdout) the test figure is of
    networks trained again on train + holdout, the holdout predictions still of those that never saw it."""
    started = time.perf_counter()
    nets, epochs = _train(cfg, data, seeds, on_epoch)
    val_pred = _average(nets, data.val)
    if refit_data is not None:
        nets, _ = _train(refit_config(cfg), refit_data, seeds, None)
    test_pred = _average(nets, data.test)
    scale = (float(data.rating_min), float(data.rating_max))
    val_rmse = rmse(data.val.ratings, np.clip(val_pred, *scale)) if len(data.val) else None
    return FoldFit(val_pred, test_pred, val_rmse, rmse(data.test.ratings, np.clip(test_pred, *scale)), epochs,
                   time.perf_counter() - started)


def _train(cfg: Config, data, seeds: int, on_epoch) -> tuple[list, int]:
    ctx, _ = resolve_device(cfg.train.device)
    nets, epochs = [], 0
    for i in range(seeds):
        c = seeded(cfg, i)
        net = build_net(c, data, ctx)
        result = fit(net, data, c.train, ctx, eval_test=False, final_test=False, on_epoch=on_epoch if i == 0 else None)
        epochs = epochs or len(result.history)
        nets.append((net, ctx))
    return nets, epochs


def _average(nets, part) -> np.ndarray:
    if len(part) == 0:
        return np.zeros(0, dtype=np.float32)
    return np.mean([predict(net, part.users, part.items, ctx, part.timestamps) for net, ctx in nets], axis=0)


# --- the sweep's end ---------------------------------------------------------------------------------
def evaluate_folds(plan, outcomes: list[ModelOutcome], studies: dict[str, optuna.Study], data_cfg) -> float:
    """Fill `outcome.folds` of each evaluated model (and the blend) for the folds sweep.folds lists;
    returns the wall time it took. Runs once per sweep command, after the test evaluations and the blend."""
    folds = sweep_folds(plan.sweep, data_cfg)
    if not folds:
        return 0.0
    started = time.perf_counter()
    models = [o for o in outcomes if o.model in studies and o.test_rmse is not None and o.n_complete]
    blend = next((o for o in outcomes if o.model == NAME and o.test_rmse is not None), None)
    for o in models + ([blend] if blend else []):
        o.folds = FoldFigures(data_cfg.split, {data_cfg.split: o.test_rmse},
                              {data_cfg.split: o.best_run_id} if o.best_run_id else {})
    print(f"sweep.folds: each model's choice on {', '.join(folds)} (chosen on {data_cfg.split}'s holdout, "
          "which the other folds do not change)", flush=True)
    for fold in folds:
        _one_fold(plan, fold, models, blend, studies, data_cfg)
    for o in models + ([blend] if blend else []):
        _log_mean_sd(plan, o)
    return time.perf_counter() - started


def _one_fold(plan, fold: str, models: list[ModelOutcome], blend: Optional[ModelOutcome], studies, data_cfg) -> None:
    """Every model's choice, then the blend, on one fold; a figure recorded earlier is read back (its
    networks are trained again, untracked, only when the blend of this fold still needs them)."""
    data = load_dataset(replace(data_cfg, split=fold))
    refit = any(refits(plan.sweep, o.model) for o in models)
    refit_data = load_dataset(replace(data_cfg, split=fold, val_fraction=0.0)) if refit else None
    holder = studies[plan.sweep.models[0]]
    blend_key = _blend_key(plan, fold, blend, studies) if blend else None
    blend_record = holder.user_attrs.get(blend_key) if blend else None
    fits: dict[str, FoldFit] = {}
    for o in models:
        study = studies[o.model]
        key = _key(plan, fold, o.model, study.best_trial.number)
        record, how = study.user_attrs.get(key), "recorded earlier: not again"
        cfg = fold_config(plan, o.model, study, fold)
        if record is None:
            try:
                fit = fits[o.model] = _tracked_fit(plan, o, cfg, data, refit_data, fold)
            except TrainingDiverged as err:  # a finding about the choice, not a reason to lose the others
                print(f"[{o.model:>7}] {fold}: no figure, {err}", flush=True)
                continue
            record = {"test_rmse": fit.test_rmse, "run_id": o.folds.run_ids.get(fold), "wall_s": fit.wall_s}
            study.set_user_attr(key, record)
            how = f"{fit.wall_s:.0f}s"
        elif blend is not None and blend_record is None:
            fits[o.model] = fit_on_fold(cfg, data, refit_data if refits(plan.sweep, o.model) else None,
                                        plan.sweep.average_seeds)
        _add(o, fold, record)
        print(f"[{o.model:>7}] {fold}: test_rmse {record['test_rmse']:.4f} ({how})", flush=True)
    if blend is not None:
        record = blend_record or _blend_on_fold(plan, blend, fits, data, fold)
        if record is not None and blend_record is None:
            holder.set_user_attr(blend_key, record)
        if record is not None:
            _add(blend, fold, record)
            print(f"[{blend.model:>7}] {fold}: test_rmse {record['test_rmse']:.4f}", flush=True)


def fold_config(plan, model: str, study: optuna.Study, fold: str) -> Config:
    """The model's chosen configuration (its best run's) on `fold`."""
    cfg = best_config(plan, model, study)
    return replace(cfg, data=replace(cfg.data, split=fold),
                   tracking=replace(cfg.tracking, log_model=False, run_name=f"{model}-{fold}"))


def _tracked_fit(plan, o: ModelOutcome, cfg: Config, data, refit_data, fold: str) -> FoldFit:
    """fit_on_fold in an MLflow run under the model's best run: per-epoch metrics, the figures."""
    tags = {**run_tags(cfg, data), FOLD_TAG: fold}
    with Tracker(cfg.tracking).reopen(o.best_run_id):
        tracker = Tracker(cfg.tracking)
        with tracker.run(run_name=cfg.tracking.run_name, params={**flatten(cfg), "fold": fold}, tags=tags,
                         experiment=plan.experiment):
            tracker.log_datasets(data, cfg.data, test=True)
            fit = fit_on_fold(cfg, data, refit_data if refits(plan.sweep, o.model) else None,
                              plan.sweep.average_seeds,
                              lambda report: tracker.log_metrics(report.metrics(), step=report.epoch))
            figures = {"test_rmse": fit.test_rmse, "wall_time_s": fit.wall_s}
            if fit.val_rmse is not None:
                figures["final_val_rmse"] = fit.val_rmse
            tracker.log_metrics(figures, step=fit.epochs)
    if tracker.run_id:
        o.folds.run_ids[fold] = tracker.run_id
    return fit


def _blend_on_fold(plan, blend: ModelOutcome, fits: dict[str, FoldFit], data, fold: str) -> Optional[dict]:
    """The blend of this fold's networks, its weights fit on this fold's holdout (as on the selection
    fold), evaluated once on this fold's test part, in a run under the blend's best run."""
    members = [m for m in blend.best_params if m in fits]
    if len(members) < 2:
        log.warning("sweep.folds: the blend needs two members with networks on %s, has %s; skipped", fold, members)
        return None
    started = time.perf_counter()
    weights, bias = fit_weights(np.column_stack([fits[m].val_pred for m in members]), data.val.ratings)
    scale = (float(data.rating_min), float(data.rating_max))
    test_rmse = rmse(data.test.ratings, np.clip(bias + np.column_stack([fits[m].test_pred for m in members]) @ weights,
                                                *scale))
    wall = time.perf_counter() - started
    tracking = replace(plan.tracking, log_model=False, experiment=plan.experiment, run_name=f"{blend.model}-{fold}")
    params = {"model.name": blend.model, "model.bias": round(float(bias), 6), "data.split": fold, "fold": fold,
              **{f"model.weight.{m}": round(float(w), 6) for m, w in zip(members, weights)}}
    tracker = Tracker(tracking)
    with Tracker(tracking).reopen(blend.best_run_id):
        with tracker.run(run_name=tracking.run_name, params=params, experiment=plan.experiment,
                         tags={"dataset": data.name, "split": fold, MODEL_TAG: blend.model, FOLD_TAG: fold}):
            tracker.log_metrics({"test_rmse": test_rmse, "wall_time_s": wall})
    return {"test_rmse": test_rmse, "run_id": tracker.run_id, "wall_s": wall,
            "weights": {m: round(float(w), 4) for m, w in zip(members, weights)}}


def _add(o: ModelOutcome, fold: str, record: dict) -> None:
    o.folds.rmse[fold] = float(record["test_rmse"])
    o.folds.cost_s += float(record.get("wall_s") or 0.0)
    if record.get("run_id"):
        o.folds.run_ids[fold] = record["run_id"]


def _log_mean_sd(plan, o: ModelOutcome) -> None:
    """The mean and sd over the folds (the selection fold's figure included) on the model's best run."""
    if o.folds is None or len(o.folds.rmse) < 2:
        return
    mean, sd = o.folds.mean_sd
    with Tracker(replace(plan.tracking, experiment=plan.experiment)).reopen(o.best_run_id) as tracker:
        tracker.log_metrics({"folds_test_rmse_mean": mean, "folds_test_rmse_sd": sd,
                             "folds_n": float(len(o.folds.rmse)), "folds_cost_s": o.folds.cost_s,
                             **{f"folds_test_rmse_{f}": v for f, v in o.folds.rmse.items()}})
        tracker.set_tags({FOLDS_TAG: ",".join(o.folds.rmse)})


def _key(plan, fold: str, model: str, trial: int) -> str:
    return ATTR.format(fold=fold, what=_member(plan, model, trial))


def _member(plan, model: str, trial: int) -> str:
    return f"{model}.{trial}{evaluation_suffix(plan, model)}"


def _blend_key(plan, fold: str, blend: ModelOutcome, studies) -> str:
    """The blend of these members' chosen trials on this fold (another set of bests is another blend)."""
    members = sorted(_member(plan, m, studies[m].best_trial.number) for m in blend.best_params if m in studies)
    return ATTR.format(fold=fold, what="ensemble." + ",".join(members))
