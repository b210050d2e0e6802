"""The sweep from start to end: storage and studies, the parent MLflow run, the workers, each
model's best evaluated once on the test part, the report and the console summary."""
from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import replace

import optuna
from optuna.trial import TrialState

from mfexp.config import flatten, refits, trial_budget
from mfexp.data import load_dataset
from mfexp.errors import ConfigError
from mfexp.track.registry import register_sweep_best
from mfexp.sweep import once
from mfexp.sweep import storage as st
from mfexp.sweep.best import evaluate_best
from mfexp.sweep.ensemble import NAME, build_ensemble
from mfexp.sweep.folds import evaluate_folds
from mfexp.sweep.objective import DIRECTIONS, apply_params
from mfexp.sweep.once import evaluation_suffix
from mfexp.sweep.report import fold_summary, overall_best, run_description, summary_table, write_report
from mfexp.sweep.runner import (SweepPlan, best_config_path, outcome_of, populations_line, prepare, run_workers,
                                workers_line)
from mfexp.sweep.results import VAL_RMSE_ATTR, ModelOutcome
from mfexp.track.tracker import (BEST_MODEL_TAG, COMMAND_TAG, NOTE_TAG, SWEEP_TAG, Tracker, check_reachable,
                                 experiment_link_by_name, git_commit, tracking_uri)

log = logging.getLogger("mfexp.sweep")


def run_sweep(plan: SweepPlan) -> list[ModelOutcome]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.time()
    check_reachable(plan.tracking)  # before any storage is written or trial trained
    studies = prepare(plan)
    _check_objective(plan, studies)
    done = {m: st.counted_trials(s) for m, s in studies.items()}
    budgets = "".join(f", {m} {n}" for m, n in plan.sweep.model_trials.items() if m in plan.sweep.models)
    print(f"sweep {plan.sweep.name}: models {', '.join(plan.sweep.models)}, {plan.sweep.n_trials} trials each{budgets} "
          f"({', '.join(f'{m} {n} done' for m, n in done.items())}), sampler {plan.sweep.sampler}, "
          f"pruner {plan.sweep.pruner}{populations_line(plan)}, {workers_line(plan)}", flush=True)
    # the parent is a container: its trials and best runs carry the system metrics
    tracker = Tracker(replace(plan.tracking, log_model=False, system_metrics=False))
    sweep = {k: v for k, v in vars(plan.sweep).items() if k != "space"}
    sweep.update(samplers={plan.sweep.sampler: plan.sweep.samplers[plan.sweep.sampler]},  # the entries used only
                 pruners={plan.sweep.pruner: plan.sweep.pruners[plan.sweep.pruner]})
    params = flatten({"sweep": sweep})
    tags = {SWEEP_TAG: plan.sweep.name, "git_commit": git_commit(), COMMAND_TAG: plan.command}
    with tracker.run(run_name=f"sweep-{plan.sweep.name}", params=params, tags=tags, experiment=plan.experiment):
        if tracker.run_id:
            tracker.log_yaml({m: {"distributions": {k: repr(d) for k, d in s.distributions.items()},
                                  "fixed": s.fixed} for m, s in plan.spaces.items()}, "search_space.yaml")
        if plan.sweep.phase != "select":
            run_workers(plan, tracker.run_id)
        if plan.sweep.phase == "search":
            _search_done(plan, studies, time.time() - started)
            return []
        _unfinished(plan, studies)
        # one test evaluation and registry version per best trial, across all worker commands (once.py)
        with st.exclusive(plan.sweep, studies.storage):
            data_cfg, data, refit_data = _sweep_data(plan)
            outcomes = _evaluate(plan, studies, tracker, data_cfg, data, refit_data)
            if plan.sweep.ensemble and tracker.run_id:  # members are loaded back from their MLflow runs
                blend = _ensemble(plan, outcomes, studies, tracker.run_id, data_cfg, data, refit_data)
                outcomes += [blend] if blend else []
            if tracker.run_id:  # each model's best in the MLflow model registry, the val winner aliased champion
                register_sweep_best(plan.sweep.name, outcomes)
            if plan.sweep.folds:  # the choice on other folds: they report, they do not choose (sweep/folds.py)

                evaluate_folds(plan, outcomes, studies, data_cfg)
        wall = time.time() - started
        paths = _report(plan, outcomes, studies, wall)
        if tracker.run_id:
            tracker.set_tags({NOTE_TAG: run_description(plan.sweep.name, outcomes, wall, plan.command)})
            for path in paths:
                tracker.log_artifact(path, artifact_path="report")
            top = overall_best(outcomes)
            if top is not None:
                figures = {"best_val_rmse": top.best_val_rmse, "best_test_rmse": top.test_rmse,
                           "wall_time_s": wall, **{f"best_{k}": v for k, v in top.ranking.items()}}
                tracker.log_metrics({k: v for k, v in figures.items() if v is not None})
                tracker.set_tags({BEST_MODEL_TAG: top.model})
    _print_summary(plan, outcomes, paths, wall, tracking_uri() if plan.tracking.enabled else None)
    return outcomes


def _counts(plan: SweepPlan, studies: dict[str, optuna.Study]) -> dict[str, tuple[int, int, int]]:
    """model -> (counted trials, still running, budget)."""
    return {m: (st.counted_trials(s), len(s.get_trials(deepcopy=False, states=(TrialState.RUNNING,))),
                trial_budget(plan.sweep, m)) for m, s in studies.items()}


def _search_done(plan: SweepPlan, studies: dict[str, optuna.Study], wall: float) -> None:
    """sweep.phase=search ends here: what the studies hold, and the command that chooses."""
    counts = ", ".join(f"{m} {n}/{b}" + (f" ({r} running elsewhere)" if r else "")
                       for m, (n, r, b) in _counts(plan, studies).items())
    print(f"\nsweep {plan.sweep.name}: search phase done in {wall:.0f}s (trials counted: {counts}). Once every "
          f"command has finished, choose with the same command and sweep.phase=select (once).", flush=True)


def _unfinished(plan: SweepPlan, studies: dict[str, optuna.Study]) -> None:
    """The choice is made on what the studies hold: say so when a study is short of its budget (a
    search stopped by sweep.timeout, or sweep.phase=select while searches still run)."""
    for model, (n, running, budget) in _counts(plan, studies).items():
        if n < budget and (plan.sweep.phase == "select" or not running):  # running: another command ends it
            log.warning("%s: choosing among %d counted trials of its budget of %d%s", model, n, budget,
                        f" ({running} still running: a search is not finished)" if running else "")


def _check_objective(plan: SweepPlan, studies: dict[str, optuna.Study]) -> None:
    """A resumed sweep must keep its objective: Optuna reopens a study with its first direction."""
    for study in studies.values():
        if study.direction.name.lower() != DIRECTIONS[plan.sweep.objective]:
            raise ConfigError(f"study {study.study_name} was searched to {study.direction.name.lower()} its "
                              f"objective, but sweep.objective={plan.sweep.objective} needs "
                              f"{DIRECTIONS[plan.sweep.objective]}: start a new sweep (sweep.name=<new name>) "
                              "for another objective, or keep the sweep's own.")


def _sweep_data(plan: SweepPlan):
    """(DataConfig, Dataset, Dataset without a holdout or None) of the sweep: loaded once for the
    test evaluations and the blend; the third only when sweep.refit asks for it."""
    data_cfg = apply_params(plan.bases[plan.sweep.models[0]], {}).data
    refit = any(refits(plan.sweep, m) for m in plan.sweep.models)
    return data_cfg, load_dataset(data_cfg), load_dataset(replace(data_cfg, val_fraction=0.0)) if refit else None


def _evaluate(plan: SweepPlan, studies: dict[str, optuna.Study], tracker, data_cfg, data,
              refit_data=None) -> list[ModelOutcome]:
    tracker.log_datasets(data, data_cfg)  # the parent's row in the runs table: what the sweep used
    parent_run_id = tracker.run_id
    outcomes = []
    for model, study in studies.items():
        out = outcome_of(plan, model, study)
        if out.n_complete:
            best = study.best_trial  # outcome_of reads its value as val RMSE: the objective may be another
            out.objective, out.best_objective = plan.sweep.objective, best.value
            out.best_val_rmse = best.user_attrs.get(VAL_RMSE_ATTR, best.value if out.objective == "val_rmse" else None)
        if out.n_complete and not once.settled(plan, model, study, out, best_config_path(plan, model)):
            again = refits(plan.sweep, model)
            how = ("trained again on train + holdout for its best epoch count (sweep.refit)" if again else
                   "its network at its best epoch (as the search kept it, else replayed)")
            print(f"[{model:>7}] best trial {out.best_trial} ({out.objective} {best.value:.4f}): {how}, then one "
                  "evaluation on the test part", flush=True)
            evaluate_best(plan, model, study, data, parent_run_id, out, best_config_path(plan, model),
                          refit_data if again else None)
            once.record(plan, model, study, out)
        outcomes.append(out)
    return outcomes


def _ensemble(plan: SweepPlan, outcomes: list[ModelOutcome], studies, parent_run_id, data_cfg, data,
              refit_data=None):
    """The blend of the models' best runs, built once per set of best trials across worker
    commands (a record in the first model's study says it was, as once.py does per model)."""
    members = sorted(f"{o.model}:{o.best_trial}" for o in outcomes if o.best_run_id)
    holder = studies[plan.sweep.models[0]]

    key = "mfexp.ensemble." + ",".join(m + evaluation_suffix(plan, m.split(":")[0]) for m in members)
    record = holder.user_attrs.get(key)
    if record is not None:
        print(f"[{NAME:>7}] this blend was built and tested by {record['by']} (test_rmse "
              f"{record['test_rmse']:.4f}): not again", flush=True)
        return ModelOutcome(model=NAME, study_name="-", best_val_rmse=record["val_rmse"],
                            test_rmse=record["test_rmse"], best_run_id=record["run_id"],
                            best_params=record["weights"], n_complete=len(members))
    out = build_ensemble(plan, outcomes, data, data_cfg, parent_run_id, refit_data)
    if out is not None and out.best_run_id:
        holder.set_user_attr(key, {"run_id": out.best_run_id, "val_rmse": out.best_val_rmse,
                                   "test_rmse": out.test_rmse, "weights": out.best_params,
                                   "by": f"{socket.gethostname()}:{os.getpid()}"})
    return out


def _report(plan, outcomes, studies, wall):
    return write_report(st.sweep_dir(plan.sweep), plan.sweep.name, outcomes, studies, wall, plan.command)


def _print_summary(plan, outcomes, paths, wall, uri) -> None:
    print(f"\nsweep {plan.sweep.name} finished in {wall:.0f}s\n")
    print(summary_table(outcomes))
    if any(o.folds for o in outcomes):  # sweep.folds

        print("\n" + fold_summary(outcomes))
    print(f"\nreport: {paths[0]}" if paths else "")
    if uri:
        link = experiment_link_by_name(plan.experiment)
        where = f": {link}" if link else ""
        print(f"MLflow experiment {plan.experiment} in {uri} (make ui){where}")
    for o in outcomes:
        if o.best_config_path:
            print(f"replay {o.model}: python -m mfexp.run --config-dir {st.sweep_dir(plan.sweep)} "
                  f"--config-name best-{o.model}")
