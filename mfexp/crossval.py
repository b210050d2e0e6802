"""`python -m mfexp.run data.split=all`: one configuration trained and evaluated on each fold in turn
(a user's `cross_validate`): ML-100K's u1..u5, or a ratings file's k random folds (data.folds=k).

Each fold is a data set of its own, loaded as `data.split=<fold>` loads it: its holdout carved out of
its own training part, implicit feedback and every other derived feature built from that training
part only, the test part seen once by the trained network. MLflow: one run per fold (the fold as a
param and a tag) under a parent run that carries the mean and the sd of the folds' test RMSE.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Optional

from mfexp.config import Config, fold_names, flatten
from mfexp.metrics import mean_sd
from mfexp.tracking import FOLD_TAG, FOLDS_TAG

log = logging.getLogger("mfexp.run")


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
    from mfexp.data import load_dataset
    from mfexp.experiment import run_tags, train_and_track
    from mfexp.tracking import Tracker

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
        from mfexp.tracking import run_link, tracking_uri

        print(f"MLflow parent run {run_id} (one child run per fold) in {tracking_uri()} (make ui): "
              f"{run_link(run_id)}")
