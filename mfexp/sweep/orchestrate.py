"""The sweep from start to end: storage and studies, the parent MLflow run, the workers, each
model's best evaluated once on the test part, the report and the console summary."""
from __future__ import annotations

import logging
import time
from dataclasses import replace

import mlflow
import optuna

from mfexp.config import flatten
from mfexp.registry import register_sweep_best
from mfexp.sweep import storage as st
from mfexp.sweep.best import evaluate_best
from mfexp.sweep.runner import SweepPlan, best_config_path, outcome_of, prepare, run_workers, workers_line
from mfexp.sweep.results import ModelOutcome

log = logging.getLogger("mfexp.sweep")


def run_sweep(plan: SweepPlan) -> list[ModelOutcome]:
    from mfexp.tracking import Tracker, check_reachable, git_commit, tracking_uri

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.time()
    check_reachable(plan.tracking)  # before any storage is written or trial trained
    studies = prepare(plan)
    done = {m: st.counted_trials(s) for m, s in studies.items()}
    print(f"sweep {plan.sweep.name}: models {', '.join(plan.sweep.models)}, {plan.sweep.n_trials} trials each "
          f"({', '.join(f'{m} {n} done' for m, n in done.items())}), sampler {plan.sweep.sampler}, "
          f"pruner {plan.sweep.pruner}, {workers_line(plan)}", flush=True)
    tracker = Tracker(replace(plan.tracking, log_model=False))
    params = flatten({"sweep": {k: v for k, v in vars(plan.sweep).items() if k != "space"}})
    tags = {"mfexp.sweep": plan.sweep.name, "git_commit": git_commit(), "mfexp.command": plan.command}
    with tracker.run(run_name=f"sweep-{plan.sweep.name}", params=params, tags=tags, experiment=plan.experiment):
        if tracker.run_id:
            tracker.log_yaml({m: {"distributions": {k: repr(d) for k, d in s.distributions.items()},
                                  "fixed": s.fixed} for m, s in plan.spaces.items()}, "search_space.yaml")
        run_workers(plan, tracker.run_id)
        outcomes = _evaluate(plan, studies, tracker.run_id)
        if plan.sweep.ensemble and tracker.run_id:  # members are loaded back from their MLflow runs
            blend = _ensemble(plan, outcomes, tracker.run_id)
            outcomes += [blend] if blend else []
        if tracker.run_id:  # each model's best in the MLflow model registry, the val winner aliased champion
            register_sweep_best(plan.sweep.name, outcomes)
        wall = time.time() - started
        paths = _report(plan, outcomes, studies, wall)
        if tracker.run_id:
            for path in paths:
                mlflow.log_artifact(str(path), artifact_path="report")
            best = [o for o in outcomes if o.best_val_rmse is not None]
            if best:
                top = min(best, key=lambda o: o.best_val_rmse)
                tracker.log_metrics({"best_val_rmse": top.best_val_rmse, "wall_time_s": wall,
                                     **({"best_test_rmse": top.test_rmse} if top.test_rmse is not None else {})})
                tracker.set_tags({"mfexp.best_model": top.model})
    _print_summary(plan, outcomes, paths, wall, tracking_uri() if plan.tracking.enabled else None)
    return outcomes


def _evaluate(plan: SweepPlan, studies: dict[str, optuna.Study], parent_run_id) -> list[ModelOutcome]:
    from mfexp.data import load_dataset
    from mfexp.sweep.objective import apply_params

    data = load_dataset(apply_params(plan.bases[plan.sweep.models[0]], {}).data)
    outcomes = []
    for model, study in studies.items():
        out = outcome_of(plan, model, study)
        if out.n_complete:
            print(f"[{model:>7}] best trial {out.best_trial} (val_rmse {out.best_val_rmse:.4f}): replayed to its "
                  "best epoch, then one evaluation on the test part", flush=True)
            evaluate_best(plan, model, study, data, parent_run_id, out, best_config_path(plan, model))
        outcomes.append(out)
    return outcomes


def _ensemble(plan: SweepPlan, outcomes: list[ModelOutcome], parent_run_id):
    from mfexp.data import load_dataset
    from mfexp.sweep.ensemble import build_ensemble
    from mfexp.sweep.objective import apply_params

    data_cfg = apply_params(plan.bases[plan.sweep.models[0]], {}).data
    return build_ensemble(plan, outcomes, load_dataset(data_cfg), data_cfg, parent_run_id)


def _report(plan, outcomes, studies, wall):
    from mfexp.sweep.report import write_report

    return write_report(st.sweep_dir(plan.sweep), plan.sweep.name, outcomes, studies, wall, plan.command)


def _print_summary(plan, outcomes, paths, wall, uri) -> None:
    from mfexp.sweep.report import summary_table

    print(f"\nsweep {plan.sweep.name} finished in {wall:.0f}s\n")
    print(summary_table(outcomes))
    print(f"\nreport: {paths[0]}" if paths else "")
    if uri:
        print(f"MLflow experiment mfexp-sweep-{plan.sweep.name} in {uri}: browse it with make ui")
    for o in outcomes:
        if o.best_config_path:
            print(f"replay {o.model}: python -m mfexp.run --config-dir {st.sweep_dir(plan.sweep)} "
                  f"--config-name best-{o.model}")
