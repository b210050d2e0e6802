"""One Optuna trial = one MXNet training run = one nested MLflow run.

The Gluon epoch hook reports each epoch's validation RMSE to Optuna and stops a pruned trial
at once; the same hook logs the epoch to MLflow as it happens (the Optuna -> MLflow link:
tags optuna.study_name, optuna.trial_number, optuna.trial_state, and a matching status).
Data is loaded once per worker and handed to the Objective.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from mxnet.base import MXNetError
import optuna
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mfexp.config import Config, flatten
from mfexp.data.movielens import atomic_write
from mfexp.errors import ConfigError
from mfexp.experiment import run_tags, train_and_track
from mfexp.metrics import liked, ranking_quality
from mfexp.models import validate
from mfexp.scoring import score_all, towers
from mfexp.sweep.results import (
    BEST_EPOCH_ATTR,
    DURATION_ATTR,
    EPOCHS_BUDGET_ATTR,
    EPOCHS_RUN_ATTR,
    FAIL_REASON_ATTR,
    MLFLOW_GAP_ATTR,
    MLFLOW_RUN_ATTR,
    OVERRIDES_ATTR,
    PRUNED_AT_ATTR,
    VAL_RMSE_ATTR,
    WORKER_ATTR,
)
from mfexp.sweep.space import SearchSpace
from mfexp.track.tracker import (FAIL_REASON_TAG, PARENT_TAG, PRUNED_AT_TAG, STATE_TAG, STUDY_TAG, TRIAL_TAG,
                                 Tracker, redact)
from mfexp.train import predict, resolve_device

log = logging.getLogger("mfexp.sweep")


def apply_params(base: DictConfig, params: dict[str, Any]) -> Config:
    """The base config with a trial's sampled values, type-checked by the schema and validated."""
    cfg = copy.deepcopy(base)
    for key, value in params.items():
        try:
            OmegaConf.update(cfg, key, value, merge=True)
        except OmegaConfBaseException as err:
            raise ConfigError(f"search space key {key}={value!r} does not fit the config: "
                              f"{str(err).splitlines()[0]}. Fix the key or its range in the sweep's space.") from err
    return validate(OmegaConf.to_object(cfg))


# sweep.objective -> the study's direction. val_rmse: the lowest val RMSE of any epoch, reported each
# epoch to the pruner. val_ndcg_at_10: NDCG@10 on the holdout of the network the trial keeps (its best
# val-RMSE epoch with train.patience, else its last); nothing reported per epoch, so no pruning.
DIRECTIONS = {"val_rmse": "minimize", "val_ndcg_at_10": "maximize"}
RANK_K = 10


def ranking_on(trained, data, part: str, coverage: bool = True):
    """Top-10 quality (mfexp.metrics.RankingQuality) of a trained model on the `part` "test" (items
    rated in the train part or the holdout left out) or "val" (items rated in the train part left
    out); hits are the part's items rated >= 4."""
    target = data.test if part == "test" else data.val
    known = [p for p in ((data.train, data.val) if part == "test" else (data.train,)) if p is not None and len(p)]
    seen = (np.concatenate([p.users for p in known]), np.concatenate([p.items for p in known]))
    tw = towers(trained)
    return ranking_quality(lambda u: score_all(trained, u, tw), data.n_users, data.n_items, seen,
                           liked(target.users, target.items, target.ratings), k=RANK_K, coverage=coverage)


def fail_reason(err: BaseException) -> str:
    """Why a trial failed, as its user attr and its run's tag keep it (and the console shows it)."""
    return "interrupted" if isinstance(err, KeyboardInterrupt) else redact(f"{type(err).__name__}: {err}")[:1000]


def mark_worker(trial: optuna.Trial) -> None:
    """Mark a trial as this process's (host:pid: a worker dead on this host is found by its pid, on any
    storage). Every trial is marked before the sweep's lock is released, so a RUNNING trial found
    unmarked under the lock is one whose worker was killed right after asking it (runner._fail_dead)."""
    trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")


class Objective:
    def __init__(self, model: str, base: DictConfig, space: SearchSpace, data, *, study_name: str,
                 experiment: str, parent_run_id: Optional[str], tracking_cfg, objective: str = "val_rmse",
                 on_report: Optional[Callable[[optuna.Trial, Any], None]] = None,
                 predictions: Optional[Callable[[int], Path]] = None,
                 networks: Optional[Callable[[int], Path]] = None):
        """`predictions(number)`: where a complete trial keeps its holdout predictions; `networks(number)`:
        where it keeps its network's weights (None: nowhere)."""
        self.model, self.base, self.space, self.data = model, base, space, data
        self.study_name, self.experiment, self.parent_run_id = study_name, experiment, parent_run_id
        self.tracking_cfg, self.objective, self.on_report = tracking_cfg, objective, on_report
        self.predictions, self.networks = predictions, networks

    def keep(self, number: int, net, result, cfg: Config) -> None:
        """Save the trial's holdout predictions and its network's weights where they are what a replay of
        it would give: its kept weights are its best epoch's (patience restored them, or the best was the
        last). A full disk costs the select phase a replay, not the trial its result."""
        predictions = self.predictions(number) if self.predictions is not None else None
        network = self.networks(number) if self.networks is not None else None
        if (predictions is None and network is None) or not len(self.data.val):
            return
        if result.final_val_rmse != result.best_val_rmse:  # its last epoch's, not its best's: a replay differs
            for path in filter(None, (predictions, network)):  # (a file of that number left by an earlier
                path.unlink(missing_ok=True)                    # study is not this trial's)
            return
        try:
            if predictions is not None:
                part = self.data.val
                pred = predict(net, part.users, part.items, resolve_device(cfg.train.device)[0], part.timestamps)
                buffer = io.BytesIO()
                np.save(buffer, pred.astype(np.float32))
                predictions.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(predictions, buffer.getvalue())
            if network is not None:
                network.parent.mkdir(parents=True, exist_ok=True)
                partial = network.with_name(network.name + ".partial")
                try:
                    net.save_parameters(str(partial))  # Gluon's own format; best.kept_network loads it
                    os.replace(partial, network)
                except BaseException:
                    with contextlib.suppress(OSError):  # nothing half-written is left behind
                        partial.unlink(missing_ok=True)
                    raise
        except (OSError, MXNetError) as err:  # MXNet's own writer raises MXNetError when the disk is full
            log.warning("trial %d: its holdout predictions or network were not kept (%s); the select phase "
                        "would train it again", number, err)

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except BaseException as err:
            trial.set_user_attr(FAIL_REASON_ATTR, fail_reason(err))
            raise

    def _run(self, trial: optuna.Trial) -> float:
        started = time.perf_counter()
        fixed = trial.user_attrs.get(OVERRIDES_ATTR)  # a reference trial: values given, not sampled
        cfg = apply_params(self.base, {**self.space.fixed, **fixed} if fixed else self.space.suggest(trial))
        cfg.tracking = self.tracking_cfg
        tags = {**run_tags(cfg, self.data), STUDY_TAG: self.study_name,
                TRIAL_TAG: str(trial.number), STATE_TAG: "RUNNING"}
        if self.parent_run_id:
            tags[PARENT_TAG] = self.parent_run_id
        tracker = Tracker(cfg.tracking)
        with tracker.run(run_name=f"{self.model}-trial-{trial.number}", params=flatten(cfg), tags=tags,
                         experiment=self.experiment, killed_on=(optuna.TrialPruned,)):
            if tracker.run_id:
                trial.set_user_attr(MLFLOW_RUN_ATTR, tracker.run_id)
            ranked, kept = [], []  # val_ndcg_at_10: the kept network's ranking quality on the holdout
            by_rank = self.objective == "val_ndcg_at_10"

            def trained(t):
                kept.append(t.net)
                if by_rank:
                    ranked.append(ranking_on(t, self.data, "val", coverage=False))
            try:
                result = train_and_track(
                    cfg, self.data, tracker, eval_test=False, final_test=False,
                    on_epoch=None if by_rank else (lambda report: self.report(trial, report, tracker)),
                    on_trained=trained)
            except optuna.TrialPruned:
                raise
            except BaseException as err:
                tracker.set_tags({STATE_TAG: "FAIL", FAIL_REASON_TAG: fail_reason(err)})
                raise
            trial.set_user_attr(BEST_EPOCH_ATTR, result.best_epoch)
            trial.set_user_attr(EPOCHS_RUN_ATTR, len(result.history))
            trial.set_user_attr(EPOCHS_BUDGET_ATTR, int(cfg.train.epochs))  # a reference may bring its own
            trial.set_user_attr(VAL_RMSE_ATTR, result.best_val_rmse)
            trial.set_user_attr(DURATION_ATTR, round(time.perf_counter() - started, 3))
            if by_rank:
                trial.set_user_attr("val_ndcg_at_10", ranked[0].ndcg)
                tracker.log_metrics(ranked[0].as_metrics("val"))
            if kept:
                self.keep(trial.number, kept[0], result, cfg)
            tracker.set_tags({STATE_TAG: "COMPLETE"})
        if tracker.gaps:
            trial.set_user_attr(MLFLOW_GAP_ATTR, tracker.gap_summary())
        return ranked[0].ndcg if by_rank else result.best_val_rmse

    def report(self, trial: optuna.Trial, report, tracker=None) -> None:
        """One epoch's val RMSE to Optuna, `on_report` (a caller's hook: bench stamps and budgets) first;
        raises TrialPruned when the pruner stops the trial (its run tagged PRUNED, where `tracker` is its)."""
        if self.on_report is not None:
            self.on_report(trial, report)
        trial.report(report.val_rmse, report.epoch)
        if trial.should_prune():
            trial.set_user_attr(PRUNED_AT_ATTR, report.epoch)
            if tracker is not None:
                tracker.set_tags({STATE_TAG: "PRUNED", PRUNED_AT_TAG: str(report.epoch)})
            raise optuna.TrialPruned(f"pruned at epoch {report.epoch}")
