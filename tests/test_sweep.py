"""Sweeps end to end on a tiny ratings file: pruning, resume, nesting in MLflow, workers."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from conftest import join_all
from mfexp.sweep.plan import build_plan, split_overrides
from mfexp.sweep.orchestrate import run_sweep
from mfexp.sweep.storage import open_storage, study_name, trial_id


def _args(ratings_file, tmp_path, *extra):
    return ["data=file", f"data.path={ratings_file}", "sweep=smoke", f"sweep.root={tmp_path / 'sweeps'}",
            "sweep.models=[biased]", "train.epochs=3", "train.batch_size=256", *extra]


def _trials(plan, model="biased"):
    study = optuna.load_study(study_name=study_name(plan.sweep, model), storage=open_storage(plan.sweep))
    return study.get_trials(deepcopy=False)


def test_space_expressions_on_the_command_line_edit_the_space(ratings_file, tmp_path):
    plain, space = split_overrides(["train.epochs=3", "model.k=choice(8,12)", "train.momentum=interval(0.5,0.9)"])
    assert plain == ["train.epochs=3"] and len(space) == 2
    plan = build_plan(_args(ratings_file, tmp_path, "model.k=choice(8,12)", "train.momentum=interval(0.5,0.9)"))
    dists = plan.spaces["biased"].distributions
    assert dists["model.k"].choices == (8, 12)
    assert (dists["train.momentum"].low, dists["train.momentum"].high) == (0.5, 0.9)


def test_a_plain_override_wins_over_the_space_and_says_so(ratings_file, tmp_path, caplog):
    """sweep=smoke fixes train.optimizer=adam and searches train.lr in its space: the command line wins."""
    import logging

    from mfexp.sweep.objective import apply_params

    with caplog.at_level(logging.INFO, logger="mfexp.sweep"):
        plan = build_plan(_args(ratings_file, tmp_path, "train.optimizer=sgd", "train.lr=0.02",
                                "train.momentum=interval(0.5,0.99)"))
    space = plan.spaces["biased"]
    assert "train.optimizer" not in space.fixed and "train.lr" not in space.distributions
    assert "train.momentum" in space.distributions
    trial = optuna.create_study().ask()
    cfg = apply_params(plan.bases["biased"], space.suggest(trial))  # what a sampled trial trains with
    assert (cfg.train.optimizer, cfg.train.lr) == ("sgd", 0.02) and 0.5 <= cfg.train.momentum <= 0.99
    lines = [r.getMessage() for r in caplog.records if "from the command line replaces" in r.getMessage()]
    assert lines[1:] == ["train.optimizer=sgd from the command line replaces the search space's train.optimizer in "
                     "biased (adam): every sampled trial uses sgd.",
                     "train.lr=0.02 from the command line replaces the search space's train.lr in "
                     "biased (tag(log, interval(1e-3, 1e-2))): every sampled trial uses 0.02."]
    assert lines[0].startswith("train.batch_size=256")  # _args sets it, and smoke's space fixes 512


def test_unknown_space_key_is_refused_before_training(ratings_file, tmp_path):
    from mfexp.errors import ConfigError

    with pytest.raises(ConfigError, match="model.kk is not a config key"):
        build_plan(_args(ratings_file, tmp_path, "model.kk=choice(1,2)"))


def test_sweep_trials_are_nested_runs_with_optuna_tags_and_best_is_tested_once(in_smoke_store):
    plan, outcomes, runs = in_smoke_store.plan, in_smoke_store.outcomes, in_smoke_store.runs  # conftest.py
    trials = _trials(plan)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 2
    parent = [r for r in runs if r.data.tags.get("mfexp.sweep") == "smoke"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    children = [r for r in runs if "optuna.trial_number" in r.data.tags and "mfexp.best" not in r.data.tags]
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == [t.number for t in trials]
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parent[0].info.run_id
        assert run.data.tags["optuna.study_name"] == "smoke-biased"
        state = run.data.tags["optuna.trial_state"]
        assert (state, run.info.status) in {("COMPLETE", "FINISHED"), ("PRUNED", "KILLED")}
        assert run.data.params["model.name"] == "biased"
        assert "test_rmse" not in run.data.metrics  # the test part is never looked at during search
    reference = [r for r in children if r.data.tags["optuna.trial_number"] == "0"][0]
    assert trials[0].user_attrs["mfexp.reference"] == "tutorial" and trials[0].params == {}
    assert (reference.data.params["train.optimizer"], reference.data.params["train.batch_size"],
            reference.data.params["train.lr"], reference.data.params["train.wd"]) == ("sgd", "64", "0.05", "0.0001")
    best = [r for r in runs if r.data.tags.get("mfexp.best") == "true"]
    assert len(best) == 1 and best[0].data.metrics["test_rmse"] == pytest.approx(outcomes[0].test_rmse)
    assert best[0].data.params["data.val_fraction"] == "0.1"  # the trial's own data: its best checkpoint
    assert best[0].data.metrics["final_val_rmse"] == pytest.approx(outcomes[0].best_val_rmse, abs=1e-5)
    report = (in_smoke_store.folder / "sweeps" / "smoke" / "report.md").read_text()
    assert f"| biased | {outcomes[0].best_val_rmse:.4f} | {outcomes[0].test_rmse:.4f} |" in report  # its row


def test_pruning_stops_a_trial_early(ratings_file, tmp_path, mlflow_uri, monkeypatch):
    """The runner stops a trial at the epoch its pruner says so, and records it PRUNED there. The
    pruner is a stand-in that prunes every trial once its warm-up (2 epochs) is over, whatever
    sweep.pruner says, so the count is certain; the sweep's own pruners are the next test's."""
    from mfexp.sweep import runner

    plan = build_plan(_args(ratings_file, tmp_path, "sweep.n_trials=5", "train.epochs=6",
                            "sweep.enqueue_tutorial=false", "train.patience=null", "model.k=choice(2,4,8,16,32,64)"))
    monkeypatch.setattr(runner, "make_pruner",
                        lambda sweep, epochs: optuna.pruners.ThresholdPruner(upper=0.0, n_warmup_steps=2))
    run_sweep(plan)
    trials = _trials(plan)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert len(pruned) == 5
    assert all(max(t.intermediate_values) == 2 for t in pruned)  # stopped at epoch 2 of 6
    assert all(t.user_attrs["pruned_at_epoch"] == 2 for t in pruned)


GOOD, BAD = 0.02, 1e-6  # Adam's lr: learns in a few epochs / stays at the global mean


@pytest.mark.parametrize("pruner", ["median", "forecast", "successive-halving", "hyperband"])
def test_the_real_pruners_prune_bad_trials_and_pruned_trials_count(pruner, ratings_file, tmp_path, mlflow_uri):
    """The sweep's own pruners (search.make_pruner), not a stand-in: 3 good trials, then bad ones, one
    at a time (in a population, members are judged against trials already finished, and in the first
    population none has: tests/test_population.py prunes members)."""
    args = _args(ratings_file, tmp_path, f"sweep.pruner={pruner}", "sweep.enqueue_tutorial=false",
                 "sweep.n_trials=7", "train.epochs=8", "train.patience=null", f"train.lr=choice({GOOD},{BAD})",
                 "sweep.population=1")
    plan = build_plan(args)
    from mfexp.sweep.runner import prepare

    study = prepare(plan)["biased"]
    lrs = [GOOD, GOOD, GOOD, BAD, BAD, GOOD, BAD]
    for lr in lrs:
        study.enqueue_trial({"train.lr": lr, "model.k": 16, "train.reg": 0.01})
    outcome = run_sweep(plan)[0]
    trials = _trials(plan)
    pruned = [t.number for t in trials if t.state == TrialState.PRUNED]
    bad = [n for n, lr in enumerate(lrs) if lr == BAD]
    assert pruned and set(pruned) <= set(bad)  # only bad trials are pruned ...
    if pruner != "hyperband":  # ... and every bad one (hyperband's brackets may leave one alone)
        assert pruned == bad
    for t in trials:
        if t.state == TrialState.PRUNED:
            assert max(t.intermediate_values) == t.user_attrs["pruned_at_epoch"] < 8  # stopped early
    assert outcome.n_pruned == len(pruned) and outcome.n_complete == 7 - len(pruned)
    run_sweep(build_plan(args))  # resume: pruned trials count toward sweep.n_trials, nothing new runs
    assert len(_trials(plan)) == 7


def test_resume_makes_up_failed_trials(ratings_file, tmp_path, mlflow_uri):
    plan = build_plan(_args(ratings_file, tmp_path, "sweep.n_trials=2"))
    run_sweep(plan)
    assert len(_trials(plan)) == 2
    study = optuna.load_study(study_name="smoke-biased", storage=open_storage(plan.sweep))
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    plan = build_plan(_args(ratings_file, tmp_path, "sweep.n_trials=3"))
    run_sweep(plan)
    states = [t.state for t in _trials(plan)]
    assert states.count(TrialState.FAIL) == 1
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 3
    assert len(states) == 4  # exactly one new trial: the FAIL one did not count


def test_a_sweep_in_two_phases_searches_then_chooses_once(ratings_file, tmp_path, mlflow_uri, capsys):
    """sweep.phase=search trains the budget and chooses nothing (no best run, replay file or report);
    sweep.phase=select trains no trial and makes the choice: one test evaluation per model, the
    report; a second select evaluates nothing again."""
    search = build_plan(_args(ratings_file, tmp_path, "sweep.n_trials=2", "sweep.phase=search"))
    assert run_sweep(search) == []
    out = capsys.readouterr().out
    assert "search phase done" in out and "biased 2/2" in out and "sweep.phase=select" in out
    folder = tmp_path / "sweeps" / "smoke"
    assert not (folder / "best-biased.yaml").exists() and not (folder / "report.md").exists()
    best_runs = lambda: mlflow.search_runs(experiment_names=[search.experiment], output_format="list",  # noqa: E731
                                           filter_string="tags.`mfexp.best` = 'true'")
    assert best_runs() == []
    trials = _trials(search)

    select = build_plan(_args(ratings_file, tmp_path, "sweep.n_trials=2", "sweep.phase=select"))
    (outcome,) = run_sweep(select)
    assert [t.number for t in _trials(select)] == [t.number for t in trials]  # no trial trained
    assert outcome.test_rmse is not None and (folder / "best-biased.yaml").exists() and (folder / "report.md").exists()
    assert "then one evaluation on the test part" in capsys.readouterr().out
    assert len(best_runs()) == 1
    run_sweep(select)  # again: nothing evaluated twice
    assert "then one evaluation on the test part" not in capsys.readouterr().out
    assert len(best_runs()) == 1


def test_choosing_before_a_search_has_its_budget_says_so(ratings_file, tmp_path, mlflow_uri, caplog):
    run_sweep(build_plan(_args(ratings_file, tmp_path, "sweep.n_trials=1", "sweep.phase=search")))
    select = build_plan(_args(ratings_file, tmp_path, "sweep.n_trials=3", "sweep.phase=select"))
    with caplog.at_level("WARNING", logger="mfexp.sweep"):
        run_sweep(select)
    assert len(_trials(select)) == 1  # select trains nothing, even short of the budget
    assert "biased: choosing among 1 counted trials of its budget of 3" in caplog.text


def test_workers_that_count_at_the_same_moment_never_run_more_trials_than_the_budget(ratings_file, tmp_path,
                                                                                   monkeypatch):
    """Counting the trials and starting one are a single step under storage.exclusive(): workers
    that finish together and count at the same instant cannot all take the last open slot. The
    window between count and start is widened here (0.1 s), so without the lock every worker took
    it (8 counted trials of a budget of 6)."""
    import threading
    import time

    from mfexp.sweep import runner

    plan = build_plan(_args(ratings_file, tmp_path, "sweep.n_trials=6", "sweep.enqueue_tutorial=false",
                            "sweep.pruner=none", "sweep.name=race"))
    runner.prepare(plan)
    counted = runner._next_model

    def slow_count(*args):
        model = counted(*args)
        time.sleep(0.1)  # another worker counts meanwhile
        return model

    class Trivial:  # a trial in 20 ms, no training: only the counting is under test
        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, trial):
            time.sleep(0.02)
            return trial.suggest_float("x", 0.0, 1.0)

    monkeypatch.setattr(runner, "_next_model", slow_count)
    monkeypatch.setattr(runner, "Objective", Trivial)
    monkeypatch.setattr(runner, "load_dataset", lambda cfg: None)  # where the worker looks it up
    errors = []

    def worker(index):
        try:
            runner.work(plan, index, None, None)
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    join_all(threads, 120, "workers")
    assert errors == []
    trials = _trials(plan)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6, [(t.number, t.state) for t in trials]


@pytest.mark.slow
def test_two_workers_share_a_study_without_losing_or_repeating_a_trial(ratings_file, tmp_path, mlflow_uri):
    plan = build_plan(_args(ratings_file, tmp_path, "sweep.n_trials=6", "sweep.n_workers=2"))
    run_sweep(plan)
    trials = _trials(plan)
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(numbers)))
    counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(counted) == 6  # counted and started as one step: no overshoot
    assert len(counted) == len(trials)  # no FAIL, nothing left RUNNING: the workers did not trip over each other
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    exp = mlflow.get_experiment_by_name("mfexp-sweep-smoke")
    runs = mlflow.search_runs([exp.experiment_id], output_format="list")
    logged = sorted(int(r.data.tags["optuna.trial_number"]) for r in runs
                    if "optuna.trial_number" in r.data.tags and "mfexp.best" not in r.data.tags)
    assert logged == numbers  # each trial in MLflow exactly once


@pytest.mark.slow
def test_smoke_sweep_through_the_cli(ratings_file, tmp_path, mlflow_uri):
    out = subprocess.run([sys.executable, "-m", "mfexp.sweep", *_args(ratings_file, tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "report:" in out.stdout
    # one line per trial as it ends (not just the header, which also says "trials")
    assert re.search(r"^\[ *biased\] trial +0  val_rmse \d\.\d{4} .*the tutorial's own configuration \(reference\)$",
                     out.stdout, re.M), out.stdout
    assert re.search(r"^\[ *biased\] trial +1  (val_rmse \d\.\d{4}|pruned at epoch \d) .*k=\d+", out.stdout, re.M)
    assert (tmp_path / "sweeps" / "smoke" / "best-biased.yaml").exists()
    replay = subprocess.run([sys.executable, "-m", "mfexp.run", "--config-dir", str(tmp_path / "sweeps" / "smoke"),
                             "--config-name", "best-biased", "train.progress=false"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert replay.returncode == 0, replay.stderr
    header = (tmp_path / "sweeps" / "smoke" / "best-biased.yaml").read_text().splitlines()[0]
    tested = re.search(r"test RMSE (\d\.\d{4})", header).group(1)
    assert f"test_rmse={tested}" in replay.stdout


def test_one_worker_per_gpu_each_on_its_device(ratings_file, tmp_path, monkeypatch):
    import mxnet as mx

    from mfexp.errors import ConfigError
    from mfexp.sweep.runner import _on_device, worker_device

    monkeypatch.setattr(mx.context, "num_gpus", lambda: 4)
    plan = build_plan(_args(ratings_file, tmp_path, "sweep.devices=[1,3]"))
    assert plan.sweep.n_workers == 2
    assert [worker_device(plan.sweep, w) for w in range(2)] == ["gpu:1", "gpu:3"]
    moved = _on_device(plan.bases, "gpu:3")
    assert moved["biased"].train.device == "gpu:3" and plan.bases["biased"].train.device == "auto"
    monkeypatch.setattr(mx.context, "num_gpus", lambda: 0)
    with pytest.raises(ConfigError, match="MXNet sees 0 GPU"):
        build_plan(_args(ratings_file, tmp_path, "sweep.devices=[0]"))


@pytest.mark.slow
def test_a_two_model_sweep_gives_equal_budgets_one_report_row_each_and_the_real_champion(ratings_file, tmp_path,
                                                                                         mlflow_uri):
    """sweep.timeout cuts a sweep with a budget it cannot finish: the models take turns."""
    from mlflow.tracking import MlflowClient

    from mfexp.track.registry import registered_name

    plan = build_plan(_args(ratings_file, tmp_path, "sweep.models=[plain,biased]", "sweep.n_trials=1000",
                            "sweep.timeout=20", "train.epochs=2"))
    outcomes = {o.model: o for o in run_sweep(plan)}
    studies = {m: _trials(plan, m) for m in ("plain", "biased")}
    sizes = [len(t) for t in studies.values()]
    assert min(sizes) >= 2 and max(sizes) - min(sizes) <= 1, sizes  # equal budgets, however the timeout fell
    for model, trials in studies.items():
        values = [t.value for t in trials if t.state == TrialState.COMPLETE]
        assert outcomes[model].best_val_rmse == min(values)  # the outcome is the study's real best
        assert outcomes[model].n_complete + outcomes[model].n_pruned + outcomes[model].n_failed == len(trials)
    report = (tmp_path / "sweeps" / "smoke" / "report.md").read_text()
    for model in ("plain", "biased"):
        assert len(re.findall(rf"^\| {model} \|", report, re.M)) == 1, model
    winner = min(outcomes.values(), key=lambda o: o.best_val_rmse)
    champion = MlflowClient().get_model_version_by_alias(registered_name("smoke", "champion"), "champion")
    assert champion.run_id == winner.best_run_id


def test_start_center_enqueues_the_middle_of_the_space_once_after_the_reference(ratings_file, tmp_path):
    from mfexp.sweep.objective import mark_worker
    from mfexp.sweep.runner import REFERENCE_ATTR, START_ATTR, prepare

    plan = build_plan(_args(ratings_file, tmp_path, "sweep.start=center"))
    study = prepare(plan)["biased"]
    prepare(plan)  # a resumed sweep, or a second worker command: nothing more
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert [REFERENCE_ATTR in t.user_attrs for t in waiting] == [True, False]
    assert waiting[1].user_attrs[START_ATTR] == "center of the space"
    assert waiting[1].system_attrs["fixed_params"] == plan.spaces["biased"].center()  # Optuna: params when asked
    for taken in (study.ask(), study.ask()):  # both taken (by a live worker, as every worker marks its trials):
        mark_worker(taken)                    # the sweep never enqueues the center again
    prepare(plan)
    assert not study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    other = build_plan(_args(ratings_file, tmp_path, "sweep.start=sampler", "sweep.name=other"))
    assert [START_ATTR in t.user_attrs for t in prepare(other)["biased"].get_trials(deepcopy=False)] == [False]


def test_an_unknown_start_is_refused(ratings_file, tmp_path):
    from mfexp.errors import ConfigError

    with pytest.raises(ConfigError, match="sweep.start must be one of center, sampler, got 'middle'"):
        build_plan(_args(ratings_file, tmp_path, "sweep.start=middle"))


def _work_trivially(plan, monkeypatch) -> float:
    """runner.work on `plan` with a one-line objective (x drawn in [0, 1]) and no data, its deadline a
    minute away; returns the seconds it took."""
    import time

    from mfexp.sweep import runner

    class Trivial:
        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, trial):
            return trial.suggest_float("x", 0.0, 1.0)

    monkeypatch.setattr(runner, "Objective", Trivial)
    monkeypatch.setattr(runner, "load_dataset", lambda cfg: None)  # where the worker looks it up
    started = time.time()
    runner.work(plan, 0, None, started + 60)
    return time.time() - started


def test_a_worker_does_not_leave_while_a_dead_workers_trial_may_still_go_stale(ratings_file, tmp_path, monkeypatch):
    """RDB storage with heartbeats: a worker that finds every slot taken, one of them by a trial whose
    worker died moments ago (heartbeat not yet stale), waits for the heartbeat check instead of
    leaving that trial RUNNING and the budget short; then runs its retry (CI: the PostgreSQL
    killed-worker test, the kill just before the survivor's last count)."""
    from mfexp.sweep import runner

    monkeypatch.setenv("MFEXP_HEARTBEAT_S", "1")
    plan = build_plan(_args(ratings_file, tmp_path, "sweep.n_trials=2", "sweep.enqueue_tutorial=false",
                            "sweep.pruner=none", "sweep.name=dead", f"sweep.storage=sqlite:///{tmp_path}/optuna.db"))
    studies = runner.prepare(plan)
    study = studies["biased"]
    dead = study.ask()
    dead.set_user_attr("worker", "elsewhere.example:4242")  # marked, as every worker marks its trials, on
    dead.suggest_float("x", 0.0, 1.0)                        # another host: only its heartbeat can tell
    studies.storage.record_heartbeat(trial_id(studies.storage, study, dead.number))  # then its worker dies: no more heartbeats
    done = study.ask()
    study.tell(done, done.suggest_float("x", 0.0, 1.0))

    assert _work_trivially(plan, monkeypatch) < 30
    trials = _trials(plan)
    assert trials[dead.number].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == trials[dead.number].params
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_a_trial_whose_worker_died_right_after_asking_it_is_failed_not_waited_for(ratings_file, tmp_path,
                                                                                   mlflow_uri, monkeypatch):
    """A worker killed between Optuna's ask and its trial's first heartbeat leaves a RUNNING trial
    that no heartbeat check will ever find stale and no pid names (CI: the PostgreSQL killed-worker
    test with populations hung 420 s). Every trial is marked with its worker before the sweep's lock
    is released, so one found unmarked under the lock is an orphan: failed and retried, not waited for."""
    from mfexp.sweep import runner

    monkeypatch.setenv("MFEXP_HEARTBEAT_S", "1")
    plan = build_plan(_args(ratings_file, tmp_path, "sweep.n_trials=2", "sweep.enqueue_tutorial=false",
                            "sweep.pruner=none", "sweep.name=unmarked", f"sweep.storage=sqlite:///{tmp_path}/optuna.db"))
    mlflow.set_experiment(plan.experiment)  # as the sweep's command creates it before its workers start
    studies = runner.prepare(plan)
    study = studies["biased"]
    dead = study.ask()  # then its worker is killed: no heartbeat, no worker mark
    dead.suggest_float("x", 0.0, 1.0)
    done = study.ask()
    study.tell(done, done.suggest_float("x", 0.0, 1.0))

    assert _work_trivially(plan, monkeypatch) < 30
    trials = _trials(plan)
    assert trials[dead.number].state == TrialState.FAIL
    assert "before it was marked" in trials[dead.number].user_attrs["fail_reason"]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == trials[dead.number].params
    assert retries[0].user_attrs["worker"].endswith(f":{os.getpid()}")
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # its MLflow run is recorded where its worker would have put it, KILLED with the reason
    runs = mlflow.search_runs(experiment_names=[plan.experiment], output_format="list",
                              filter_string=f"tags.`optuna.trial_number` = '{dead.number}'")
    assert [(r.info.run_name, r.info.status, r.data.tags["optuna.trial_state"]) for r in runs] == [
        (f"biased-trial-{dead.number}", "KILLED", "FAIL")]


def test_a_trial_started_by_optimize_carries_its_worker_before_the_lock_is_released():
    """The other half of that rule: study.optimize's trial is marked before _started releases the lock."""
    import contextlib

    from mfexp.sweep import runner

    study = optuna.create_study()
    seen = {}

    class Gate(contextlib.ExitStack):
        def close(self):
            trial = study.get_trials(deepcopy=False)[-1]
            seen.setdefault("worker", trial.user_attrs.get("worker"))
            super().close()

    study.optimize(runner._started(lambda trial: 0.5, Gate()), n_trials=1)
    assert seen["worker"] and seen["worker"].endswith(f":{os.getpid()}")


def test_a_best_trial_stopped_by_its_own_epoch_budget_is_flagged_whatever_the_budget():
    """budget_exhausted: the best epoch is the last one run and the trial's own train.epochs (a
    reference may bring more than the sweep's) ran out; a trial that stopped on patience is not."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from mfexp.sweep.runner import outcome_of

    plan = SimpleNamespace(bases={"biased": OmegaConf.create({"train": {"epochs": 30}})})

    def outcome(**attrs):
        study = optuna.create_study()
        study.add_trial(optuna.trial.create_trial(value=0.9, user_attrs=attrs))
        return outcome_of(plan, "biased", study)

    assert outcome(best_epoch=30, epochs_run=30).budget_exhausted  # trials from before epochs_budget was kept
    assert outcome(best_epoch=60, epochs_run=60, epochs_budget=60).budget_exhausted
    assert not outcome(best_epoch=30, epochs_run=30, epochs_budget=60).budget_exhausted  # it had 30 more
    assert not outcome(best_epoch=27, epochs_run=30, epochs_budget=30).budget_exhausted  # patience stopped it


def test_a_winning_reference_trial_reports_its_label_and_fixed_values():
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from mfexp.sweep.runner import REFERENCE_ATTR, outcome_of

    plan = SimpleNamespace(bases={"biased": OmegaConf.create({"train": {"epochs": 30}})})
    study = optuna.create_study()
    fixed = {"train.optimizer": "sgd", "train.lr": 0.05, "train.epochs": 60}
    study.add_trial(optuna.trial.create_trial(value=0.9, user_attrs={REFERENCE_ATTR: "tutorial", "overrides": fixed}))
    study.add_trial(optuna.trial.create_trial(value=0.95, params={"train.lr": 0.01},
                                              distributions={"train.lr": optuna.distributions.FloatDistribution(1e-3, 1)}))
    out = outcome_of(plan, "biased", study)
    assert (out.best_trial, out.best_reference, out.best_params) == (0, "tutorial", fixed)
    study.add_trial(optuna.trial.create_trial(value=0.85, params={"train.lr": 0.02},
                                              distributions={"train.lr": optuna.distributions.FloatDistribution(1e-3, 1)}))
    out = outcome_of(plan, "biased", study)
    assert (out.best_trial, out.best_reference, out.best_params) == (2, None, {"train.lr": 0.02})


def test_biased_mfs_reference_trial_gets_twice_the_sweeps_epochs_the_others_their_own(ratings_file, tmp_path):
    from mfexp.models.base import TUTORIAL_TRAIN
    from mfexp.sweep.runner import reference_trial

    plan = build_plan(_args(ratings_file, tmp_path, "sweep.models=[biased,plain]", "train.epochs=7"))
    label, biased = reference_trial(plan, "biased")
    assert label == "tutorial" and biased == {**TUTORIAL_TRAIN, "model.k": 64, "train.epochs": 14}
    assert "train.epochs" not in reference_trial(plan, "plain")[1]  # the sweep's own 7


def test_plain_mfs_trials_get_twice_the_sweeps_epochs_and_its_pruner_that_horizon(ratings_file, tmp_path):
    from mfexp.sweep.runner import _open_studies, epoch_budget

    base = ["data=file", f"data.path={ratings_file}", f"sweep.root={tmp_path / 'sweeps'}", "sweep.models=[plain,biased]"]
    plan = build_plan(base)  # the default sweep: train.epochs 30
    assert plan.spaces["plain"].fixed["train.epochs"] == 60 and "train.epochs" not in plan.spaces["biased"].fixed
    assert (epoch_budget(plan, "plain"), epoch_budget(plan, "biased")) == (60, 30)
    studies = _open_studies(plan, 0)
    assert (studies["plain"].pruner.max_epochs, studies["biased"].pruner.max_epochs) == (60, 30)
    # train.epochs on the command line is every model's, as any value given there
    given = build_plan([*base, "train.epochs=3", "sweep.name=given"])
    assert "train.epochs" not in given.spaces["plain"].fixed and epoch_budget(given, "plain") == 3
    # a searched train.epochs: the pruner looks as far as its highest value
    searched = build_plan([*base, "sweep.name=searched", "train.epochs=choice(10,20)"])
    assert epoch_budget(searched, "plain") == 20


def test_hooks_see_every_epoch_prune_on_request_and_a_spent_clock_starts_no_trial(ratings_file, tmp_path):
    """runner.Hooks (what bench's sweep_efficiency uses instead of patching the sweep): on_report sees
    every epoch of lone trials and of population members before the pruner, and may prune; a clock
    past the deadline starts no trial."""
    from mfexp.sweep.runner import Hooks, prepare, run_workers

    seen = []

    def on_report(trial, report):
        seen.append((trial.number, report.epoch))
        if trial.number == 1 and report.epoch == 2:
            raise optuna.TrialPruned("the hook's call")

    for population in (1, 3):
        seen.clear()
        plan = build_plan(_args(ratings_file, tmp_path, "sweep.n_trials=3", "sweep.enqueue_tutorial=false",
                                "sweep.pruner=none", f"sweep.population={population}", f"sweep.name=hooks{population}",
                                "tracking.enabled=false"))
        prepare(plan)
        run_workers(plan, None, Hooks(on_report=on_report))
        trials = sorted(_trials(plan), key=lambda t: t.number)
        assert sorted(seen) == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (2, 1), (2, 2), (2, 3)], population
        assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]
        if population == 3:
            assert all(t.user_attrs.get("population") == 3 for t in trials)
    plan = build_plan(_args(ratings_file, tmp_path, "sweep.n_trials=3", "sweep.timeout=60", "sweep.name=spent",
                            "tracking.enabled=false"))
    prepare(plan)
    run_workers(plan, None, Hooks(clock=lambda: float("inf")))
    assert [t for t in _trials(plan) if t.state != TrialState.WAITING] == []
