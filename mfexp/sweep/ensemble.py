"""sweep.ensemble: after the search, blend each model's best network into one model.

Members are the networks the sweep already evaluated once on the test part (each model's best
trial at its best epoch, loaded back from its MLflow run). Their validation-holdout predictions fit
the blend's weights (non-negative least squares, `mfexp.models.ensemble.fit_weights`); the blend's
validation figure is cross-validated over folds of the holdout, so it can be compared fairly with
single models when the champion is chosen. The blend is evaluated once on the test part, logged as
its own MLflow run (tag mfexp.best=true, mfexp.model=ensemble) with its model, and registered like
any model, so recommend and make serve use it.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, replace
from typing import Optional

import mxnet as mx
import numpy as np
import pandas as pd

from mfexp.config import refits
from mfexp.metrics import rmse
from mfexp.models import io as model_io, ModelData
from mfexp.models.base import NEEDS
from mfexp.models.ensemble import Ensemble, cross_validated_rmse, fit_weights
from mfexp.models.plugins import code_paths, settings_dict
from mfexp.sweep.best import VAL_PREDICTIONS
from mfexp.sweep.results import ModelOutcome
from mfexp.track.tracker import BEST_TAG, MODEL_TAG, PARENT_TAG, Tracker, download, git_commit
from mfexp.train import predict

log = logging.getLogger("mfexp.sweep")
NAME = "ensemble"


def _member(run_id: str):
    with tempfile.TemporaryDirectory() as tmp:
        folder = download(run_id, "model/artifacts/mfexp_model", tmp)
        return model_io.load(folder)


def _logged_val_predictions(run_id: str) -> Optional[np.ndarray]:
    """The holdout predictions a refit best run logged of the network chosen before it was refit."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = download(run_id, VAL_PREDICTIONS, tmp)
        except Exception:  # noqa: BLE001 -- not a refit run: its own network never saw the holdout
            return None
        return np.load(path)


def _predictions(nets, part) -> np.ndarray:
    return np.column_stack([predict(net, part.users, part.items, mx.cpu(), part.timestamps) for net in nets])


def build_ensemble(plan, outcomes: list[ModelOutcome], data, data_cfg, parent_run_id: Optional[str],
                   refit_data=None) -> Optional[ModelOutcome]:
    """The blend of the outcomes' best runs, logged and evaluated once on the test part; None when
    fewer than two models have a logged best run. `data_cfg` is the DataConfig `data` came from.
    With sweep.refit, a member's best run holds the network trained on train + holdout: the weights
    are fit on the holdout predictions it logged of the network chosen before (never on predictions
    of a network that saw the holdout), and the blend is of the refit networks, on `refit_data`."""
    chosen = [o for o in outcomes if o.best_run_id and o.model != NAME]
    if len(chosen) < 2:
        log.info("ensemble: needs the logged best runs of two models or more; skipped")
        return None
    nets = [_member(o.best_run_id).net for o in chosen]
    scale = (float(data.rating_min), float(data.rating_max))
    logged = [_logged_val_predictions(o.best_run_id) if refits(plan.sweep, o.model) else None for o in chosen]
    val = np.column_stack([p if p is not None else _predictions([net], data.val)[:, 0]
                           for p, net in zip(logged, nets)])
    weights, bias = fit_weights(val, data.val.ratings)
    cv_rmse = cross_validated_rmse(val, data.val.ratings, scale, seed=plan.sweep.seed)
    test_pred = np.clip(bias + _predictions(nets, data.test) @ weights, *scale)
    test_rmse = rmse(data.test.ratings, test_pred)
    fitted_val = rmse(data.val.ratings, np.clip(bias + val @ weights, *scale))
    if refit_data is not None:  # what the refit members were trained on: train + holdout
        data, data_cfg = refit_data, replace(data_cfg, val_fraction=0.0)
    flat_nets, flat_weights, flat_bias = [], [], bias  # a member that is itself an average: its own nets
    for net, w in zip(nets, weights):
        if isinstance(net, Ensemble):
            flat_nets += net.members()
            flat_weights += [w * sw for sw in net.settings.weights]
            flat_bias += w * net.settings.bias
        else:
            flat_nets.append(net)
            flat_weights.append(w)
    ens = Ensemble.assemble(flat_nets, flat_weights, flat_bias, ModelData.from_dataset(data, NEEDS), name=NAME)
    out = ModelOutcome(model=NAME, study_name="-", best_val_rmse=cv_rmse, test_rmse=test_rmse,
                       best_params={o.model: round(float(w), 4) for o, w in zip(chosen, weights)},
                       n_complete=len(chosen))
    tracking = replace(plan.tracking, log_model=True, experiment=plan.experiment, run_name=f"{NAME}-best")
    tracker = Tracker(tracking)
    tags = {"dataset": data.name, "split": data.split, MODEL_TAG: NAME, BEST_TAG: "true",
            "git_commit": git_commit()}
    if parent_run_id:
        tags[PARENT_TAG] = parent_run_id
    params = {"model.name": NAME, "model.bias": round(bias, 6),
              **{f"model.weight.{o.model}": round(float(w), 6) for o, w in zip(chosen, weights)},
              **{f"model.member.{o.model}": o.best_run_id for o in chosen}}
    with tracker.run(run_name=f"{NAME}-best", params=params, tags=tags, experiment=plan.experiment):
        # what recommend reads back: the training data (as every run's config.yaml) and the blend
        tracker.log_yaml({"data": asdict(data_cfg), "model": settings_dict(ens.settings)}, "config.yaml")
        tracker.log_datasets(data, data_cfg)  # the Dataset column: train, holdout (weights fit there), test
        tracker.log_metrics({"best_val_rmse_search": cv_rmse, "val_rmse_fitted": fitted_val, "test_rmse": test_rmse})
        trained = model_io.from_training(ens, data)
        example = pd.DataFrame({"user_id": data.user_ids[:5].astype(np.int64),
                                "movie_id": data.item_ids[:5].astype(np.int64)})
        code = tuple(dict.fromkeys(p for net in flat_nets for p in code_paths(net.settings)))
        tracker.log_model(lambda folder: model_io.save(trained, folder), example, code)
    out.best_run_id = tracker.run_id
    print(f"[{NAME:>7}] blend of {', '.join(f'{o.model} {w:.3f}' for o, w in zip(chosen, weights))} "
          f"+ {bias:.3f}: val_rmse {cv_rmse:.4f} (cross-validated on the holdout), one evaluation on the "
          f"test part: {test_rmse:.4f}", flush=True)
    return out
