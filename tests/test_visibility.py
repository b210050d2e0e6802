"""What a user sees of a run and a sweep: the MLflow UI link and experiment kind, the datasets,
system metrics, descriptions, the optuna-dashboard, the sweep console."""
from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest

from mfexp.config import TrackingConfig
from mfexp.track.tracker import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, Tracker, experiment_link, ui_base, ui_links


ROOT = Path(__file__).resolve().parent.parent  # subprocesses import this checkout's mfexp


def _run_once(experiment: str) -> str:
    tracker = Tracker(TrackingConfig(experiment=experiment, log_model=False))
    with tracker.run(run_name="r", params={}, tags={}):
        pass
    return tracker.run_id


# --- 2. the UI opens on the training runs --------------------------------------------------------
def test_experiments_mfexp_creates_are_tagged_as_model_training(mlflow_uri):
    run_id = _run_once("mfexp-kind")
    exp = mlflow.get_experiment(mlflow.get_run(run_id).info.experiment_id)
    assert exp.name == "mfexp-kind" and exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"


def test_links_open_the_runs_of_the_experiment():
    assert experiment_link("7", "http://127.0.0.1:5000") == \
        "http://127.0.0.1:5000/#/experiments/7?workflowType=machine_learning"
    assert ui_base("sqlite:///mlflow.db") == "http://127.0.0.1:5000"  # what make ui serves
    assert ui_base("http://tracker:5002/") == "http://tracker:5002"  # a server shows its own UI
    assert experiment_link("3", "http://u:pw@tracker:5002").startswith("http://u:***@tracker:5002/#/")
    assert ui_base("http://u:pw@tracker:5002/") == ui_base("http://:pw@tracker:5002") == "http://tracker:5002"  # a link to open


def test_make_ui_links_tag_older_experiments_and_name_each(mlflow_uri, capsys):
    from mfexp.track.__main__ import main

    old = mlflow.create_experiment("mfexp-sweep-old")  # recorded before mfexp tagged experiments
    mlflow.create_experiment("someone-else")
    assert main(["links", "http://0.0.0.0:5999"]) == 0
    out = capsys.readouterr().out
    assert f"mfexp-sweep-old: http://127.0.0.1:5999/#/experiments/{old}?workflowType=machine_learning" in out
    assert "someone-else" not in out
    assert mlflow.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert ui_links("http://x") == [f"  mfexp-sweep-old: http://x/#/experiments/{old}?workflowType=machine_learning"]


def test_a_run_prints_the_link_to_its_experiment(cfg, tiny_data, mlflow_uri, capsys):
    from mfexp.experiment import run

    cfg.tracking.log_model = False
    summary = run(cfg, data=tiny_data)
    exp_id = mlflow.get_run(summary["run_id"]).info.experiment_id
    assert f"/#/experiments/{exp_id}?workflowType=machine_learning" in capsys.readouterr().out


# --- 3. datasets ---------------------------------------------------------------------------------
def _inputs(run_id: str) -> dict[str, object]:
    inputs = mlflow.get_run(run_id).inputs.dataset_inputs
    return {next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset for d in inputs}


def test_every_run_logs_its_train_validation_and_test_parts(cfg, tiny_data, mlflow_uri):
    import json
    from dataclasses import replace

    from mfexp.experiment import train_and_track

    cfg.tracking.log_model = False
    tracker = Tracker(cfg.tracking)
    with tracker.run(run_name="single", params={}, tags={}):
        train_and_track(cfg, tiny_data, tracker)
    logged = _inputs(tracker.run_id)
    assert set(logged) == {"train", "validation", "test"}
    for context, part in (("train", tiny_data.train), ("validation", tiny_data.val), ("test", tiny_data.test)):
        assert json.loads(logged[context].profile)["num_rows"] == len(part)
        assert json.loads(logged[context].source)["uri"]  # where the part comes from
    assert len({d.digest for d in logged.values()}) == 3

    trial = Tracker(cfg.tracking)  # a sweep trial never looks at the test part
    with trial.run(run_name="trial", params={}, tags={}):
        train_and_track(cfg, tiny_data, trial, eval_test=False, final_test=False)
    assert set(_inputs(trial.run_id)) == {"train", "validation"}
    assert _inputs(trial.run_id)["train"].digest == logged["train"].digest  # same rows, same digest

    changed = replace(tiny_data, train=replace(tiny_data.train, ratings=tiny_data.train.ratings[::-1].copy()))
    other = Tracker(cfg.tracking)
    with other.run(run_name="changed", params={}, tags={}):
        other.log_datasets(changed, cfg.data, test=False)
    assert _inputs(other.run_id)["train"].digest != logged["train"].digest


def test_dataset_sources_name_the_grouplens_fold_or_the_file(tiny_data):
    from dataclasses import replace

    from mfexp.config import DataConfig
    from mfexp.track.datasets import dataset_parts

    ml = replace(tiny_data, name="ml100k", split="u3")
    parts = {c: (name, source) for c, name, source, _ in dataset_parts(ml, DataConfig(split="u3"), test=True)}
    assert parts == {"train": ("ml-100k u3.base (train)", "ml-100k u3.base minus the 10% holdout, seed 0"),
                     "validation": ("ml-100k u3.base (holdout)", "ml-100k u3.base (10% holdout, seed 0)"),
                     "test": ("ml-100k u3.test", "ml-100k u3.test (GroupLens)")}
    f = dataset_parts(replace(tiny_data, name="file"), DataConfig(name="file", path="/d/r.csv"), test=False)
    assert [(c, n) for c, n, _, _ in f] == [("train", "r.csv (train)"), ("validation", "r.csv (holdout)")]
    assert f[0][2].startswith("/d/r.csv (80%/20% split")
    no_holdout = replace(tiny_data, val=tiny_data.val.take(np.zeros(0, dtype=np.int64)))
    assert [c for c, *_ in dataset_parts(no_holdout, DataConfig(), test=True)] == ["train", "test"]


# --- 4. system metrics ---------------------------------------------------------------------------
def _monitors():
    """MLflow's system-metrics sampler threads alive now (mlflow 3: one thread per run, this name)."""
    import threading

    return [t for t in threading.enumerate() if t.name == "SystemMetricsMonitor" and t.is_alive()]


def test_runs_record_system_metrics_by_default(mlflow_uri):
    from conftest import wait_for

    assert TrackingConfig().system_metrics  # on by default
    assert _monitors() == []
    runs = {}
    for on in (True, False):
        tracker = Tracker(TrackingConfig(experiment="mfexp-sys", log_model=False, system_metrics=on,
                                         system_metrics_interval=0.2))
        with tracker.run(run_name=f"sys-{on}", params={}, tags={}):
            # on: a sampler thread runs, and its first sample reaches the store while the run is open;
            # off: no sampler thread at all (so none could log later either)
            assert len(_monitors()) == (1 if on else 0)
            if on:
                wait_for(lambda: "system/cpu_utilization_percentage" in mlflow.get_run(tracker.run_id).data.metrics,
                         60, "the first system metrics sample in the store")
        assert _monitors() == []  # the run's end stopped and joined its sampler
        runs[on] = mlflow.get_run(tracker.run_id).data.metrics
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(runs[True])
    assert not [k for k in runs[False] if k.startswith("system/")]


def test_system_metrics_interval_is_validated(cfg):
    from mfexp.models import validate
    from mfexp.errors import ConfigError

    cfg.tracking.system_metrics_interval = 0
    with pytest.raises(ConfigError, match="tracking.system_metrics_interval"):
        validate(cfg)


# --- one small sweep, looked at from every side (5, 7, 8) -----------------------------------------
@pytest.fixture
def swept(in_smoke_store):
    """The session's smoke sweep of biased (conftest.py): (plan, outcomes, console output, runs)."""
    return in_smoke_store.plan, in_smoke_store.outcomes, in_smoke_store.console, in_smoke_store.runs


def test_the_parent_run_describes_the_comparison_and_best_runs_say_what_they_are(swept):
    plan, outcomes, console, runs = swept
    parent = next(r for r in runs if r.data.tags.get("mfexp.sweep") == "smoke")
    note = parent.data.tags["mlflow.note.content"]
    assert "| model | best val RMSE | test RMSE |" in note
    row = next(line for line in note.splitlines() if line.startswith("| biased |"))
    assert f"| {outcomes[0].best_val_rmse:.4f} | {outcomes[0].test_rmse:.4f} |" in row
    assert "Best overall (by validation RMSE): `biased`" in note
    best = next(r for r in runs if r.data.tags.get("mfexp.best") == "true")
    text = best.data.tags["mlflow.note.content"]
    assert f"trial {outcomes[0].best_trial} of study `smoke-biased`" in text
    assert "evaluated **once** on the test part" in text and f"{outcomes[0].test_rmse:.4f}" in text
    assert f"/#/experiments/{parent.info.experiment_id}?workflowType=machine_learning" in console


# --- 6. optuna-dashboard -------------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_serves_the_studies_of_a_sweeps_journal(tmp_path):
    import json
    import subprocess
    import sys
    import time
    import urllib.request

    import optuna
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / "sweeps" / "demo" / "optuna.journal"
    journal.parent.mkdir(parents=True)
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))  # as a sweep writes it
    for model, n in (("plain", 3), ("biased", 2)):
        study = optuna.create_study(study_name=f"demo-{model}", storage=storage)
        study.enqueue_trial({}, user_attrs={"mfexp.reference": "tutorial"})
        study.optimize(lambda t: 1.0 if not t.params and t.number == 0 else t.suggest_float("x", 0, 1), n_trials=n)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mfexp.sweep.dashboard", "--root", str(tmp_path / "sweeps"),
                             "--sweep", "demo", "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        def get(path: str):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                return json.load(resp)

        deadline, studies = time.time() + 60, None
        while time.time() < deadline and proc.poll() is None:
            try:
                studies = get("/api/studies")["study_summaries"]
                break
            except OSError:
                time.sleep(0.3)
        assert studies is not None, proc.stdout.read() if proc.poll() is not None else "no answer in 60 s"
        trials = {s["study_name"]: len(get(f"/api/studies/{s['study_id']}")["trials"]) for s in studies}
        assert trials == {"demo-plain": 3, "demo-biased": 2}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_dashboard_without_a_storage_says_what_to_do(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "mfexp.sweep.dashboard", "--root", str(tmp_path), "--sweep", "nope"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "nope/optuna.journal does not exist" in out.stderr and "make sweep" in out.stderr


# --- 7. the sweep console ------------------------------------------------------------------------
def test_each_trial_is_followed_by_the_sweeps_progress(swept):
    _, outcomes, console, _ = swept
    lines = console.splitlines()
    trials = [i for i, line in enumerate(lines) if line.startswith("[ biased] trial")]
    assert len(trials) == 2
    for n, i in enumerate(trials, start=1):
        assert lines[i + 1].startswith(f"  progress {n}/2: biased {n}/2 | best biased ")
        assert " elapsed, " in lines[i + 1]
    assert lines[trials[-1] + 1].endswith("elapsed, done")


SPARSE_STEP = """
import mxnet as mx
from mxnet import autograd, gluon
{quiet}
emb = gluon.nn.Embedding(5, 2, sparse_grad=True)
emb.initialize()
trainer = gluon.Trainer(emb.collect_params(), "adam", {{"learning_rate": 0.01}})
with autograd.record():
    loss = emb(mx.nd.array([1, 3])).sum()
loss.backward()
trainer.step(2)
mx.nd.waitall()
print("stepped")
"""


@pytest.mark.parametrize("quiet", [False, True])
def test_mxnet_lazy_update_note_is_kept_out_of_the_console(quiet):
    import subprocess
    import sys

    code = SPARSE_STEP.format(quiet="from mfexp.train import quiet_mxnet; quiet_mxnet()" if quiet else "")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0 and "stepped" in out.stdout, out.stderr
    assert ("lazy_update = True detected" in out.stderr) is not quiet  # a C++ LOG(INFO) on stderr, once


# --- 8. ranking quality --------------------------------------------------------------------------
def test_each_best_reports_its_top10_quality_on_the_test_part(swept):
    plan, outcomes, _, runs = swept
    best = next(r for r in runs if r.data.tags.get("mfexp.best") == "true")
    names = ("test_precision_at_10", "test_recall_at_10", "test_ndcg_at_10", "test_coverage_at_10")
    assert set(names) <= set(best.data.metrics) and set(outcomes[0].ranking) == set(names)
    for name in names:
        assert 0.0 <= best.data.metrics[name] <= 1.0
        assert best.data.metrics[name] == pytest.approx(outcomes[0].ranking[name])
    assert best.data.metrics["test_coverage_at_10"] > 0
    report = (Path(plan.sweep.root) / "smoke" / "report.md").read_text()
    assert "| NDCG@10 |" in report and f"{outcomes[0].ranking['test_ndcg_at_10']:.4f}" in report
    trials = [r for r in runs if "optuna.trial_number" in r.data.tags and "mfexp.best" not in r.data.tags]
    assert trials and not any(k.startswith("test_") for r in trials for k in r.data.metrics)


def test_ranking_on_the_holdout_leaves_only_training_items_out(tiny_data, monkeypatch):
    """On the holdout ("val") only the train part's items are left out of a user's top 10; on the
    test part the train part's and the holdout's both are. Hits: the part's items rated >= 4."""
    import mfexp.sweep.objective
    from mfexp.sweep.objective import ranking_on

    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(tiny_data.n_users, 3)), rng.normal(size=(tiny_data.n_items, 3))
    scored = []  # the scorer recommend uses, on made-up user and item vectors
    monkeypatch.setattr(mfexp.sweep.objective, "towers", lambda trained: None)  # where ranking_on looks them up
    monkeypatch.setattr(mfexp.sweep.objective, "score_all",
                        lambda trained, u, tw=None: scored.append(u) or items @ users[u])
    asked = []  # what ranking_on hands the ranking: the (user, item) pairs left out, and the hits
    real = mfexp.sweep.objective.ranking_quality

    def recording(scores_for, n_users, n_items, seen, relevant, **kw):
        asked.append(tuple({(u, i) for u, i in zip(us.tolist(), its.tolist())} for us, its in (seen, relevant)))
        return real(scores_for, n_users, n_items, seen, relevant, **kw)

    monkeypatch.setattr(mfexp.sweep.objective, "ranking_quality", recording)  # where ranking_on looks it up

    def pairs(*parts, liked=False):
        return {(u, i) for p in parts for u, i, r in zip(p.users.tolist(), p.items.tolist(), p.ratings.tolist())
                if r >= 4 or not liked}

    train, holdout, test_part = tiny_data.train, tiny_data.val, tiny_data.test
    val = ranking_on(object(), tiny_data, "val", coverage=False)
    liked_val_users = set(holdout.users[holdout.ratings >= 4].tolist())
    assert val.users == len(liked_val_users) and val.coverage is None  # only users with a liked holdout item
    assert set(scored) == liked_val_users
    test = ranking_on(object(), tiny_data, "test")
    assert test.coverage is not None and len(set(scored)) == tiny_data.n_users  # coverage: everyone's top 10
    (val_seen, val_hits), (test_seen, test_hits) = asked
    assert val_seen == pairs(train) and val_hits == pairs(holdout, liked=True)
    assert test_seen == pairs(train, holdout) and test_hits == pairs(test_part, liked=True)


def _objective_plan(tmp_path, ratings, *extra):
    from mfexp.sweep.plan import build_plan

    return build_plan(["data=file", f"data.path={ratings}", "sweep=smoke", f"sweep.root={tmp_path / 'sweeps'}",
                       "sweep.models=[biased]", "train.epochs=2", "train.batch_size=256", "sweep.ensemble=false",
                       "tracking.enabled=false", *extra])


def test_sweep_objective_val_ndcg_is_maximised_and_chooses_the_best(tmp_path, ratings_file, capsys):
    import optuna

    from mfexp.errors import ConfigError
    from mfexp.sweep.orchestrate import run_sweep
    from mfexp.sweep.storage import open_storage

    plan = _objective_plan(tmp_path, ratings_file, "sweep.objective=val_ndcg_at_10", "sweep.n_trials=3")
    outcomes = run_sweep(plan)
    study = optuna.load_study(study_name="smoke-biased", storage=open_storage(plan.sweep))
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3
    for t in done:
        assert t.value == t.user_attrs["val_ndcg_at_10"] and 0.0 <= t.value <= 1.0
        assert t.intermediate_values == {}  # nothing reported per epoch: val RMSE does not prune it
        assert t.user_attrs["val_rmse"] > 0
    top = max(done, key=lambda t: t.value)
    (out,) = outcomes
    assert (out.objective, out.best_trial, out.best_objective) == ("val_ndcg_at_10", top.number, top.value)
    assert out.best_val_rmse == top.user_attrs["val_rmse"] and out.ranking["test_ndcg_at_10"] >= 0
    assert "best val NDCG@10" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="sweep.objective=val_rmse needs minimize"):
        run_sweep(_objective_plan(tmp_path, ratings_file, "sweep.n_trials=4"))  # resumed, other objective
    with pytest.raises(ConfigError, match="sweep.objective must be one of val_rmse, val_ndcg_at_10"):
        _objective_plan(tmp_path, ratings_file, "sweep.objective=ndcg")


# --- 9. warm start -------------------------------------------------------------------------------
def test_warm_start_enqueues_the_earlier_sweeps_best_configurations(tmp_path, ratings_file, capsys):
    import optuna

    from mfexp.errors import ConfigError
    from mfexp.sweep.orchestrate import run_sweep
    from mfexp.sweep.storage import open_storage
    from mfexp.sweep.warm import ATTR, top_trials

    first = _objective_plan(tmp_path, ratings_file, "sweep.n_trials=4", "sweep.name=first", "sweep.pruner=none")
    run_sweep(first)
    earlier = optuna.load_study(study_name="first-biased", storage=open_storage(first.sweep))
    best2 = top_trials(earlier, 2)
    ranked = sorted((t for t in earlier.trials if t.params and t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert [t.number for t in best2] == [t.number for t in ranked[:2]] and all(t.params for t in best2)

    args = ("sweep.name=second", "sweep.warm_start=first", "sweep.warm_start_top_k=2", "sweep.enqueue_tutorial=false")
    second = _objective_plan(tmp_path, ratings_file, "sweep.n_trials=2", *args)
    run_sweep(second)
    assert "warm start from sweep first: enqueued its best 2 biased configuration(s)" in capsys.readouterr().out
    study = optuna.load_study(study_name="second-biased", storage=open_storage(second.sweep))
    assert [t.params for t in study.trials] == [t.params for t in best2]  # the earlier best, best first
    assert study.trials[0].user_attrs[ATTR] == f"first-biased trial {best2[0].number} ({best2[0].value:.4f})"
    run_sweep(_objective_plan(tmp_path, ratings_file, "sweep.n_trials=3", *args))  # resumed: not again
    study = optuna.load_study(study_name="second-biased", storage=open_storage(second.sweep))
    assert len(study.trials) == 3 and ATTR not in study.trials[2].user_attrs
    with pytest.raises(ConfigError, match="sweep.warm_start=nope: there is no such sweep"):
        run_sweep(_objective_plan(tmp_path, ratings_file, "sweep.name=third", "sweep.warm_start=nope"))


def test_warm_start_carries_only_what_the_new_space_searches():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from mfexp.sweep.warm import fitting

    space = {"train.lr": FloatDistribution(1e-3, 1e-2, log=True), "model.k": CategoricalDistribution([16, 32])}
    assert fitting({"train.lr": 5e-3, "model.k": 32, "train.reg": 0.1}, space) == {"train.lr": 5e-3, "model.k": 32}
    assert fitting({"train.lr": 0.5, "model.k": 64}, space) == {}  # outside the new ranges: sampled afresh
    stepped = {"model.k": IntDistribution(8, 64, step=8), "train.reg": FloatDistribution(0.0, 1.0, step=0.25),
               "model.flag": CategoricalDistribution([True, False])}
    assert fitting({"model.k": 24, "train.reg": 0.75, "model.flag": False}, stepped) == {
        "model.k": 24, "train.reg": 0.75, "model.flag": False}
    assert fitting({"model.k": 20, "train.reg": 0.3, "model.flag": 0}, stepped) == {}  # off the step; 0 is no bool


def test_the_sweeps_own_row_shows_the_data_it_used(swept):
    _, _, _, runs = swept
    parent = next(r for r in runs if r.data.tags.get("mfexp.sweep") == "smoke")
    contexts = {t.value for d in parent.inputs.dataset_inputs for t in d.tags if t.key == "mlflow.data.context"}
    assert contexts == {"train", "validation", "test"}
    assert parent.data.tags["mlflow.note.content"].startswith("**Best overall")  # what the UI shows first


def test_a_resumed_sweep_reports_the_ranking_of_bests_evaluated_before(swept, capsys):
    from mfexp.sweep.orchestrate import run_sweep

    plan, outcomes, _, _ = swept
    again = run_sweep(plan)  # nothing left to search; the best was evaluated already
    assert "evaluated on the test part by" in capsys.readouterr().out
    assert again[0].ranking == outcomes[0].ranking and again[0].ranking


def test_a_locked_store_at_a_trials_end_never_ends_the_sweeps_parent_run(mlflow_uri, monkeypatch):
    """A trial nested in the sweep's parent run (one worker, one process) ends while SQLite is locked:
    the retry must end the trial's run, not pop and end the parent with the trial's status."""
    from mlflow import MlflowClient

    from mfexp.track import tracker as tracking

    monkeypatch.setattr(tracking, "RETRY_DELAYS_S", (0.0, 0.0))
    real = MlflowClient.set_terminated
    locked = []

    def set_terminated(self, run_id, status=None, end_time=None):
        if not locked:  # the first try meets another process's write
            locked.append(run_id)
            raise mlflow.exceptions.MlflowException("(sqlite3.OperationalError) database is locked")
        return real(self, run_id, status, end_time)

    parent = Tracker(TrackingConfig(experiment="mfexp-locked", log_model=False, system_metrics=False))
    with parent.run(run_name="sweep", params={}, tags={}):
        monkeypatch.setattr(MlflowClient, "set_terminated", set_terminated)
        trial = Tracker(TrackingConfig(experiment="mfexp-locked", log_model=False, system_metrics=False))
        with pytest.raises(RuntimeError):
            with trial.run(run_name="trial", params={}, tags={}, nested=True):
                raise RuntimeError("the trial failed")
        monkeypatch.setattr(MlflowClient, "set_terminated", real)
        assert locked == [trial.run_id]
        assert mlflow.get_run(trial.run_id).info.status == "FAILED"
        assert mlflow.get_run(parent.run_id).info.status == "RUNNING"
        assert mlflow.active_run().info.run_id == parent.run_id  # the parent is still the active run
    assert mlflow.get_run(parent.run_id).info.status == "FINISHED" and mlflow.active_run() is None
