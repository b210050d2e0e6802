"""One tracked training run: `run(cfg)` validates, loads the data, trains and records it in MLflow
(per-epoch metrics, summary, config, data lineage, the model). `python -m mfexp.run` is its command
line (mfexp/run.py); the sweep's trials and best runs use the pieces below.

With data.split=all, `run` is a user's `cross_validate` (`cross_validate` below): the configuration
trained and evaluated on each fold in turn, ML-100K's u1..u5 or a ratings file's k random folds
(data.folds=k). Each fold is a data set of its own, loaded as `data.split=<fold>` loads it: its holdout
carved out of its own training part, implicit feedback and every other derived feature built from that
training part only, the test part seen once by the trained network. MLflow: one run per fold (the fold
as a param and a tag) under a parent run that carries the mean and the sd of the folds' test RMSE.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import Optional

import numpy as np
import pandas as pd

from mfexp.config import ALL_FOLDS, Config, flatten, fold_names
from mfexp.data import load_dataset
from mfexp.metrics import mean_sd
from mfexp.models import io as model_io, validate
from mfexp.models.plugins import code_paths
from mfexp.track.tracker import (DEVICE_TAG, FOLDS_TAG, FOLD_TAG, MODEL_TAG, Tracker, check_reachable, git_commit,
                                 run_link, tracking_uri)
from mfexp.train import FitResult, build_net, evaluate, fit, resolve_device

log = logging.getLogger("mfexp.run")


def run_tags(cfg: Config, data) -> dict[str, str]:
    return {"dataset": data.name, "split": data.split, "git_commit": git_commit(),
            MODEL_TAG: cfg.model.name}


def train_and_track(cfg: Config, data, tracker, *, eval_test: bool = True, final_test: bool = True,
                    on_epoch=None, on_trained=None):
    """Train inside an active tracker run: per-epoch metrics, summary, config and model.
    `on_trained(trained)` sees the trained model (model_io.TrainedModel) before it is logged."""
    ctx, device = resolve_device(cfg.train.device)
    track_start(cfg, data, tracker, device, test=eval_test or final_test)
    net = build_net(cfg, data, ctx)

    def hook(report):
        tracker.log_metrics(report.metrics(), step=report.epoch)
        if on_epoch is not None:
            on_epoch(report)

    result = fit(net, data, cfg.train, ctx, eval_test=eval_test, final_test=final_test, on_epoch=hook)
    track_end(cfg, data, tracker, net, result, eval_test=eval_test, on_trained=on_trained)
    return result


def track_kept(cfg: Config, data, tracker, net, best_epoch: int, on_trained=None) -> FitResult:
    """Record an already trained `net` (a trial's kept network) inside an active tracker run, as
    train_and_track records one it trains: its holdout and test RMSE, summary, config and model."""
    ctx, device = resolve_device(cfg.train.device)
    track_start(cfg, data, tracker, device, test=True)
    scale = (float(data.rating_min), float(data.rating_max))
    val = evaluate(net, data.val, ctx, scale)
    result = FitResult(best_epoch=best_epoch, best_val_rmse=val, final_val_rmse=val,
                       final_test_rmse=evaluate(net, data.test, ctx, scale))
    track_end(cfg, data, tracker, net, result, eval_test=False, on_trained=on_trained)
    return result


def track_start(cfg: Config, data, tracker, device: str, test: bool) -> None:
    """What a run records before training: the device, the config, the data's lineage."""
    tracker.set_tags({DEVICE_TAG: device})  # what train.device (auto, gpu) resolved to here
    tracker.log_yaml(asdict(cfg), "config.yaml")
    tracker.log_datasets(data, cfg.data, test=test)


def track_end(cfg: Config, data, tracker, net, result, *, eval_test: bool, on_trained=None) -> None:
    """What a run records after training: the summary metrics and the trained network."""
    summary = {"best_epoch": result.best_epoch}
    if result.best_val_rmse is not None:
        summary["best_val_rmse"] = result.best_val_rmse
        summary["final_val_rmse"] = result.final_val_rmse
    if result.final_test_rmse is not None and eval_test:
        summary["final_test_rmse"] = result.final_test_rmse
    tracker.log_metrics(summary)
    log_trained(tracker, net, data, cfg, on_trained)


def log_trained(tracker, net, data, cfg: Config, on_trained=None) -> None:
    """Log a trained `net` as the run's model (with an input example); `on_trained` sees it first."""
    trained = model_io.from_training(net, data)
    if on_trained is not None:
        on_trained(trained)
    first = slice(0, 5)  # the model's input example: real (user, item) pairs, however few items there are
    example = pd.DataFrame({"user_id": data.user_ids[data.train.users[first]].astype(np.int64),
                            "movie_id": data.item_ids[data.train.items[first]].astype(np.int64)})
    tracker.log_model(lambda folder: model_io.save(trained, folder), example, code_paths(cfg.model))


def run(cfg: Config, data=None) -> dict:
    """Validate, load data, train, track. Returns the run's summary (RMSEs, run id)."""
    validate(cfg)
    check_reachable(cfg.tracking)
    if data is None and cfg.data.split == ALL_FOLDS:  # each fold in turn
        return cross_validate(cfg)
    data = data if data is not None else load_dataset(cfg.data)
    log.info("data: %s %s  train %d  val %d  test %d  users %d  items %d", data.name, data.split,
             len(data.train), len(data.val), len(data.test), data.n_users, data.n_items)
    tracker = Tracker(cfg.tracking)
    try:
        with tracker.run(run_name=cfg.tracking.run_name, params=flatten(cfg), tags=run_tags(cfg, data)):
            result = train_and_track(cfg, data, tracker)
    except KeyboardInterrupt as err:  # the run is KILLED by now: say which one
        raise Interrupted(tracker.run_id) from err
    summary = {"run_id": tracker.run_id, "best_epoch": result.best_epoch,
               "best_val_rmse": result.best_val_rmse, "val_rmse": result.final_val_rmse,
               "test_rmse": result.final_test_rmse, "epochs": len(result.history)}
    _print_summary(cfg, summary)
    return summary


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a run, after its MLflow run (if any: `run_id`) was ended KILLED."""

    def __init__(self, run_id: Optional[str]):
        super().__init__(run_id)
        self.run_id = run_id


def _print_summary(cfg: Config, summary: dict) -> None:
    parts = [f"model={cfg.model.name}", f"epochs={summary['epochs']}", f"test_rmse={summary['test_rmse']:.4f}"]
    if summary["val_rmse"] is not None:
        parts.append(f"val_rmse={summary['val_rmse']:.4f}")
        if summary["best_epoch"] != summary["epochs"]:
            parts.append(f"(lowest val_rmse {summary['best_val_rmse']:.4f} at epoch {summary['best_epoch']})")
    print("done: " + "  ".join(parts))
    if cfg.tracking.enabled:
        print(f"MLflow run {summary['run_id']} in {tracking_uri()} (make ui): {run_link(summary['run_id'])}")


@dataclass
class FoldRun:
    """One fold's run: what it trained on and how it scored."""

    fold: str
    test_rmse: float
    val_rmse: Optional[float]
    epochs: int
    n_train: int
    n_val: int
    n_test: int
    wall_s: float
    run_id: Optional[str] = None


def fold_config(cfg: Config, fold: str) -> Config:
    """`cfg` on one fold: data.split=<fold>, a run name that says which."""
    name = f"{cfg.tracking.run_name}-{fold}" if cfg.tracking.run_name else None
    return replace(cfg, data=replace(cfg.data, split=fold), tracking=replace(cfg.tracking, run_name=name))


def cross_validate(cfg: Config) -> dict:
    """Train and evaluate `cfg` (validated, data.split=all) on each fold; print the table and the mean
    ± sd; returns the summary (per-fold runs, mean, sd, the parent run id)."""
    folds = fold_names(cfg.data)
    started = time.perf_counter()
    parent = Tracker(replace(cfg.tracking, log_model=False, system_metrics=False))
    tags = {**run_tags(cfg, cfg.data), FOLDS_TAG: ",".join(folds)}  # DataConfig: name, split=all
    runs: list[FoldRun] = []
    with parent.run(run_name=cfg.tracking.run_name or f"{cfg.model.name}-folds", params=flatten(cfg), tags=tags):
        for fold in folds:
            fcfg = fold_config(cfg, fold)
            data = load_dataset(fcfg.data)
            log.info("fold %s: train %d  val %d  test %d", fold, len(data.train), len(data.val), len(data.test))
            child = Tracker(fcfg.tracking)
            begun = time.perf_counter()
            with child.run(run_name=fcfg.tracking.run_name or f"{cfg.model.name}-{fold}",
                           params={**flatten(fcfg), "fold": fold}, tags={**run_tags(fcfg, data), FOLD_TAG: fold}):
                result = train_and_track(fcfg, data, child)
            runs.append(FoldRun(fold, result.final_test_rmse, result.final_val_rmse, len(result.history),
                                len(data.train), len(data.val), len(data.test), time.perf_counter() - begun,
                                child.run_id))
        summary = summarize(runs, time.perf_counter() - started)
        parent.log_metrics({k: v for k, v in summary.items() if isinstance(v, float)})
        parent.log_metrics({f"test_rmse_{r.fold}": r.test_rmse for r in runs})
    summary["run_id"], summary["folds"] = parent.run_id, runs
    print(fold_table(cfg, runs, summary))
    _print_link(cfg, parent.run_id)
    return summary


def summarize(runs: list[FoldRun], wall_s: float) -> dict:
    """The parent's figures: mean and sd of the folds' test RMSE (and of their holdout RMSE)."""
    mean, sd = mean_sd(r.test_rmse for r in runs)
    out = {"test_rmse_mean": mean, "test_rmse_sd": sd, "n_folds": float(len(runs)), "wall_time_s": wall_s}
    vals = [r.val_rmse for r in runs if r.val_rmse is not None]
    if len(vals) == len(runs):
        out["val_rmse_mean"], out["val_rmse_sd"] = mean_sd(vals)
    return out


def fold_table(cfg: Config, runs: list[FoldRun], summary: dict) -> str:
    """The per-fold table and the mean ± sd line, as the console shows them."""
    header = ["fold", "train", "val", "test", "epochs", "val RMSE", "test RMSE", "time"]
    rows = [header] + [[r.fold, f"{r.n_train:,}", f"{r.n_val:,}", f"{r.n_test:,}", str(r.epochs),
                        "—" if r.val_rmse is None else f"{r.val_rmse:.4f}", f"{r.test_rmse:.4f}",
                        f"{r.wall_s:.1f}s"] for r in runs]
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join([
        f"cross-validation: model={cfg.model.name} on {cfg.data.name}, {len(runs)} folds "
        f"(data.split=all), each fold's own holdout and features from its training part", *lines,
        f"test RMSE mean ± sd over {len(runs)} folds: {summary['test_rmse_mean']:.4f} ± "
        f"{summary['test_rmse_sd']:.4f} (sd with n−1)  [{summary['wall_time_s']:.0f}s]"])


def _print_link(cfg: Config, run_id: Optional[str]) -> None:
    if cfg.tracking.enabled:
        print(f"MLflow parent run {run_id} (one child run per fold) in {tracking_uri()} (make ui): "
              f"{run_link(run_id)}")
