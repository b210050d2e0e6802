"""The fault-and-input matrix: bad input gets one clear message and a non-zero exit before any
training; faults during runs and sweeps lose nothing and leave nothing RUNNING."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import optuna
import pytest
from conftest import fresh_mlflow_store, wait_for
from optuna.trial import TrialState
from test_sweep import _args

from mfexp.errors import ConfigError
from mfexp.sweep.plan import build_plan
from mfexp.sweep.orchestrate import run_sweep
from mfexp.sweep.runner import SweepStopped
from mfexp.sweep.storage import open_storage, study_name
from pg import pg_database, postgres_server  # noqa: F401 - fixtures


def _as_from_a_terminal() -> None:
    """A child started from a terminal has SIGINT at its default; one started from a process that
    ignores it (as something earlier in a long pytest session may) inherits SIG_IGN, and Python then
    never turns Ctrl-C into KeyboardInterrupt: the interrupt tests would hang."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _sweep_cli(args, cwd, **kw):
    env = {**kw.pop("env", os.environ), "PYTHONFAULTHANDLER": "1"}  # SIGABRT dumps every thread's stack
    return subprocess.Popen([sys.executable, "-m", "mfexp.sweep", *args], cwd=cwd, text=True, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_as_from_a_terminal, **kw)


@pytest.fixture
def sweep_cli():
    """Starts `python -m mfexp.sweep` as _sweep_cli does; a process a failed test left running is
    killed at teardown, not left training."""
    started = []

    def start(args, cwd, **kw):
        started.append(_sweep_cli(args, cwd, **kw))
        return started[-1]

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


def _communicate(proc, timeout):
    """proc.communicate, but a process that hangs is made to show where: its threads' stacks are in
    the failure message."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"the sweep did not end within {timeout}s; its stderr, with its stacks:\n{err[-12000:]}")


def _study(plan, model="biased"):
    return optuna.load_study(study_name=study_name(plan.sweep, model), storage=open_storage(plan.sweep))


def _training(plan, model="biased"):
    """The trials that are training now (RUNNING, their MLflow run started); none before the study exists."""
    try:
        trials = _study(plan, model).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    except KeyError:
        return []
    return [t for t in trials if "mlflow_run_id" in t.user_attrs]


def test_unreachable_tracking_server_is_refused_before_training(ratings_file, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-m", "mfexp.run", "data=file", f"data.path={ratings_file}"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "tracking store http://127.0.0.1:9: [Errno 111] Connection refused. Start" in out.stderr
    assert "Traceback" not in out.stderr and "epoch" not in out.stdout
    assert "Retrying" not in out.stdout + out.stderr and out.stderr.count("\n") == 1, out.stderr  # no urllib3 noise


def test_unreachable_storage_url_is_refused_and_its_password_never_shown(ratings_file, tmp_path, mlflow_uri):
    secret = "hunter2-" + os.urandom(4).hex()
    args = _args(ratings_file, tmp_path, f"sweep.storage=postgresql://bob:{secret}@127.0.0.1:9/optuna")
    out = subprocess.run([sys.executable, "-m", "mfexp.sweep", *args], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "cannot open sweep.storage=postgresql://bob:***@127.0.0.1:9/optuna" in out.stderr
    assert secret not in out.stdout + out.stderr
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.fixture
def redis_with_password(tmp_path_factory):
    """A real redis-server on 127.0.0.1:<free port> that asks for a password: the default user's
    (`--requirepass`, URL redis://:PASSWORD@...) and user alice's (an ACL user, redis://alice:PASSWORD@...).
    Yields (port, password); no persistence, stopped after the test."""
    import shutil
    import socket

    if shutil.which("redis-server") is None:
        message = "redis-server is not installed: run tests/ensure_servers.sh (apt-get install redis-server)"
        if os.environ.get("CI"):  # CI installs it (make test): missing there is a broken set-up
            pytest.fail(message)
        pytest.skip(message)
    redis = pytest.importorskip("redis", reason="the redis client is not installed: make install (redis extra)")
    password = "hunter2-" + os.urandom(6).hex()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = tmp_path_factory.mktemp("redis")  # outside the command's folder, which is searched
    log = open(folder / "redis.log", "w")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(folder), "--requirepass", password,
                             "--user", "alice", "on", f">{password}", "~*", "&*", "+@all"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                redis.Redis(port=port, password=password, socket_connect_timeout=1).ping()
                break
            except redis.RedisError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not answer: {(folder / 'redis.log').read_text()[-2000:]}")
                time.sleep(0.1)
        yield port, password
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.mark.slow
@pytest.mark.parametrize("form", ["password only", "user and password"])
def test_a_password_in_a_url_reaches_nothing_a_sweep_writes(form, redis_with_password, ratings_file, tmp_path,
                                                            request):
    """A one-trial-per-model sweep on Redis storage that asks for a password, given on the command
    line. Password only: redis://:PASSWORD@host (and MLflow on SQLite). User and password: Redis's ACL
    user, and the MLflow store a PostgreSQL URL with the same password (the throwaway server trusts
    127.0.0.1 and ignores it, but it is in the URL as a real one would be): it is in every trial's
    params, config.yaml artifacts and best-<model>.yaml. Then everything the sweep wrote is searched."""
    from leaks import places_holding

    port, secret = redis_with_password
    user = "" if form == "password only" else "alice"
    storage = f"redis://{user}:{secret}@127.0.0.1:{port}/0"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    if form == "password only":
        uri, tracking = fresh_mlflow_store(tmp_path / "mlflow.db"), []
        env["MLFLOW_TRACKING_URI"] = uri
    else:
        uri = request.getfixturevalue("pg_database")("sweep").replace("postgresql://postgres@",
                                                                      f"postgresql://postgres:{secret}@")
        tracking = [f"tracking.uri={uri}"]
    args = ["data=file", f"data.path={ratings_file}", "sweep=smoke", "sweep.name=secret",
            f"sweep.root={tmp_path / 'sweeps'}", "sweep.models=[plain,biased]", "sweep.n_trials=1",
            "train.epochs=2", "train.batch_size=256", f"sweep.storage={storage}", *tracking]
    out = subprocess.run([sys.executable, "-m", "mfexp.sweep", *args], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    # it ran where the URLs said, and recorded itself: the search below is over something
    from mfexp.config import SweepConfig

    for model in ("plain", "biased"):
        study = optuna.load_study(study_name=f"secret-{model}", storage=open_storage(SweepConfig(name="secret",
                                                                                                storage=storage)))
        assert [t.state for t in study.get_trials(deepcopy=False)] == [TrialState.COMPLETE]
    report = (tmp_path / "sweeps" / "secret" / "report.md").read_text()
    assert f"sweep.storage=redis://{user}:***@127.0.0.1:{port}/0" in report  # the command, its password hidden
    parent = mlflow.tracking.MlflowClient(uri).search_runs(
        [mlflow.tracking.MlflowClient(uri).get_experiment_by_name("mfexp-sweep-secret").experiment_id],
        filter_string="tags.`mfexp.sweep` = 'secret'")
    assert len(parent) == 1 and parent[0].data.params["sweep.storage"] == storage.replace(secret, "***")
    found = places_holding(secret, root=tmp_path, tracking_uri=uri,
                           outputs={"stdout": out.stdout, "stderr": out.stderr}, redis_url=storage)
    assert not found, "the password is in:\n" + "\n".join(found)


def test_unwritable_sweeps_folder_is_a_clear_error(ratings_file, tmp_path, mlflow_uri):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    plan = build_plan(_args(ratings_file, tmp_path, f"sweep.root={blocker}"))
    with pytest.raises(ConfigError, match="cannot write the sweep's storage"):
        run_sweep(plan)


def test_malformed_space_expression_shows_the_grammar(ratings_file, tmp_path):
    with pytest.raises(ConfigError) as err:
        build_plan(_args(ratings_file, tmp_path, "model.k=choice(1,2"))
    said = str(err.value)
    assert "'model.k=choice(1,2'" in said  # the override it could not read
    for form in ("choice(a,b,...)", "range(start,stop[,step])", "interval(low,high)", "tag(log, interval(low,high))"):
        assert form in said, form  # every form of the grammar, not one word of it


def test_diverging_trials_fail_with_a_reason_and_max_failures_stops_the_sweep(ratings_file, tmp_path, mlflow_uri):
    plan = build_plan(_args(ratings_file, tmp_path, "sweep.enqueue_tutorial=false", "sweep.max_failures=2",
                            "train.optimizer=choice(sgd)", "train.lr=tag(log, interval(1e5, 1e6))",
                            "sweep.n_trials=5"))
    with pytest.raises(SweepStopped, match="sweep.max_failures=2") as err:
        run_sweep(plan)
    assert "diverged" in str(err.value) and "train.lr too high" in str(err.value)
    trials = _study(plan).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert all("diverged" in t.user_attrs["fail_reason"] for t in trials)
    runs = mlflow.search_runs(experiment_names=["mfexp-sweep-smoke"], output_format="list")
    trial_runs = [r for r in runs if "optuna.trial_number" in r.data.tags]
    assert {(r.info.status, r.data.tags["optuna.trial_state"]) for r in trial_runs} == {("FAILED", "FAIL")}
    assert all("diverged" in r.data.tags["mfexp.fail_reason"] for r in trial_runs)
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_max_failures_names_the_real_cause_and_blames_train_lr_only_for_a_divergence(ratings_file, tmp_path,
                                                                                    mlflow_uri, monkeypatch):
    import mfexp.sweep.objective

    def broken(*args, **kwargs):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(mfexp.sweep.objective, "train_and_track", broken)  # where a trial looks it up
    # one trial at a time: a population's members do not train through train_and_track
    plan = build_plan(_args(ratings_file, tmp_path, "sweep.enqueue_tutorial=false", "sweep.max_failures=2",
                            "sweep.population=1"))
    with pytest.raises(SweepStopped) as err:
        run_sweep(plan)
    message = str(err.value)
    assert "the last: TypeError: unsupported operand type(s) for +: 'int' and 'str'. Fix the cause," in message
    assert "train.lr" not in message and ".." not in message


def _store_goes_away_after(n_calls, monkeypatch):
    """MLflow's log_metrics works n_calls times, then the store is gone for good."""
    calls = {"n": 0}
    real = mlflow.log_metrics

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n_calls:
            raise mlflow.exceptions.MlflowException("tracking server went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(mlflow, "log_metrics", flaky)


def test_tracking_failure_mid_run_does_not_stop_training(cfg, tiny_data, mlflow_uri, monkeypatch, caplog):
    import logging

    from mfexp.experiment import run

    cfg.train.epochs = 5
    _store_goes_away_after(2, monkeypatch)  # epochs 1 and 2 are logged; the store fails at epoch 3 of 5
    # mfexp.train's own level too: a sweep run earlier in this process sets it to WARNING
    with caplog.at_level(logging.INFO), caplog.at_level(logging.INFO, logger="mfexp.train"):
        summary = run(cfg, data=tiny_data)
    assert summary["epochs"] == 5 and summary["test_rmse"] is not None
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [e.split()[1] for e in epochs] == ["1/5", "2/5", "3/5", "4/5", "5/5"]  # training went on
    assert sum("has a gap" in r.getMessage() for r in caplog.records) == 1  # said once, not per epoch
    logged = mlflow.tracking.MlflowClient().get_metric_history(summary["run_id"], "val_rmse")
    assert [m.step for m in logged] == [1, 2]  # the gap is real: nothing after the store went away
    assert mlflow.active_run() is None


def test_a_trial_whose_store_goes_away_completes_and_records_mlflow_gap(tiny_data, tmp_path, mlflow_uri,
                                                                         monkeypatch):
    from omegaconf import OmegaConf

    from mfexp.config import Config, TrackingConfig
    from mfexp.models.plugins import named
    from mfexp.sweep.objective import Objective
    from mfexp.sweep.space import parse_space

    base = OmegaConf.structured(Config(model=named("biased", k=8)))
    base.train.epochs, base.train.progress, base.train.batch_size = 5, False, 256
    objective = Objective("biased", base, parse_space({"train.lr": "choice(0.01)"}), tiny_data,
                          study_name="gap", experiment="mfexp-gap", parent_run_id=None,
                          tracking_cfg=TrackingConfig(log_model=False))
    _store_goes_away_after(2, monkeypatch)
    study = optuna.create_study()
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [1, 2, 3, 4, 5]  # Optuna saw every epoch: training went on
    assert trial.user_attrs["mlflow_gap"].startswith("log_metrics")
    run = mlflow.get_run(trial.user_attrs["mlflow_run_id"])
    assert [m.step for m in mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "val_rmse")] == [1, 2]


def test_a_trial_whose_holdout_predictions_cannot_be_written_still_completes(tiny_data, tmp_path, mlflow_uri,
                                                                             caplog):
    """Keeping a trial's holdout predictions (for the blend) and network (for the test evaluation) is a
    saving, not part of its result: where they cannot be written (a full disk; here a file stands where
    their folder should be) the trial completes, says so once, and the select phase would train the
    choice again."""
    import logging

    from omegaconf import OmegaConf

    from mfexp.config import Config, TrackingConfig
    from mfexp.models.plugins import named
    from mfexp.sweep.objective import Objective
    from mfexp.sweep.space import parse_space

    base = OmegaConf.structured(Config(model=named("biased", k=8)))
    base.train.epochs, base.train.progress, base.train.batch_size, base.train.patience = 2, False, 256, 1
    blocker = tmp_path / "val_predictions"
    blocker.write_text("not a folder")
    objective = Objective("biased", base, parse_space({"train.lr": "choice(0.01)"}), tiny_data,
                          study_name="keep", experiment="mfexp-keep", parent_run_id=None,
                          tracking_cfg=TrackingConfig(log_model=False),
                          predictions=lambda number: blocker / f"biased-{number}.npy",
                          networks=lambda number: blocker / f"biased-{number}.params")
    study = optuna.create_study()
    with caplog.at_level(logging.WARNING, logger="mfexp.sweep"):
        study.optimize(objective, n_trials=1)
    assert study.trials[0].state == TrialState.COMPLETE
    assert [r.getMessage() for r in caplog.records if "not kept" in r.getMessage()][0].startswith(
        "trial 0: its holdout predictions or network were not kept")
    assert blocker.read_text() == "not a folder"


def test_a_trial_whose_network_cannot_be_written_still_completes_and_leaves_no_partial_file(tiny_data, tmp_path,
                                                                                            mlflow_uri, caplog):
    """MXNet's own writer fails with MXNetError, not OSError (here a file name longer than the file system
    allows): the trial still completes, says so, and leaves neither a partial nor a kept file."""
    import logging

    from omegaconf import OmegaConf

    from mfexp.config import Config, TrackingConfig
    from mfexp.models.plugins import named
    from mfexp.sweep.objective import Objective
    from mfexp.sweep.space import parse_space

    base = OmegaConf.structured(Config(model=named("biased", k=8)))
    base.train.epochs, base.train.progress, base.train.batch_size, base.train.patience = 2, False, 256, 1
    folder = tmp_path / "networks"
    objective = Objective("biased", base, parse_space({"train.lr": "choice(0.01)"}), tiny_data,
                          study_name="keep", experiment="mfexp-keep", parent_run_id=None,
                          tracking_cfg=TrackingConfig(log_model=False),
                          networks=lambda number: folder / f"{'x' * 300}-{number}.params")
    study = optuna.create_study()
    with caplog.at_level(logging.WARNING, logger="mfexp.sweep"):
        study.optimize(objective, n_trials=1)
    assert study.trials[0].state == TrialState.COMPLETE
    assert any(r.getMessage().startswith("trial 0: its holdout predictions or network were not kept")
               for r in caplog.records)
    assert list(folder.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_fails_the_trial_kills_its_runs_exits_130_and_resumes(sig, ratings_file, tmp_path, mlflow_uri,
                                                                       sweep_cli):
    args = _args(ratings_file, tmp_path, "sweep.n_trials=2", "train.epochs=400", "train.patience=null",
                 "train.batch_size=16", "sweep.pruner=none")
    proc = sweep_cli(args, tmp_path)
    plan = build_plan(args)
    wait_for(lambda: _training(plan), 120, "the first trial to train", proc, every=0.5)
    time.sleep(2)
    started = time.time()
    proc.send_signal(sig)
    _, err = _communicate(proc, 60)
    assert proc.returncode == 130, err
    assert time.time() - started < 30
    assert "run the same command again" in err.lower()
    trials = _study(plan).get_trials(deepcopy=False)
    assert trials[-1].state == TrialState.FAIL and trials[-1].user_attrs["fail_reason"] == "interrupted"
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    runs = mlflow.search_runs(experiment_names=["mfexp-sweep-smoke"], output_format="list")
    assert runs and {r.info.status for r in runs} == {"KILLED"}
    # Resume with a short budget: the FAIL trial does not count.
    resumed = subprocess.run([sys.executable, "-m", "mfexp.sweep", *args[:-4], "train.epochs=2"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    trials = _study(plan).get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 2
    _assert_reference_ran_again(trials, interrupted=0)


def _assert_reference_ran_again(trials, interrupted):
    """The interrupted trial was the reference; the resumed sweep ran the reference once more."""
    assert trials[interrupted].user_attrs.get("mfexp.reference") == "tutorial"
    again = [t for t in trials[interrupted + 1:] if t.user_attrs.get("mfexp.reference") == "tutorial"]
    assert len(again) == 1 and again[0].state in (TrialState.COMPLETE, TrialState.PRUNED)


def test_an_interrupted_reference_trial_is_enqueued_again_on_resume_a_diverged_one_is_not(ratings_file, tmp_path):
    from mfexp.sweep.runner import REFERENCE_ATTR, prepare

    plan = build_plan(_args(ratings_file, tmp_path))
    study = prepare(plan)["biased"]

    def run_reference(state, reason=None):
        trial = study.ask()
        assert REFERENCE_ATTR in trial.user_attrs  # the enqueued reference comes first
        if reason:
            trial.set_user_attr("fail_reason", reason)
        study.tell(trial, 0.9 if state == TrialState.COMPLETE else None, state=state)

    def waiting():
        return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.WAITING]

    assert len(waiting()) == 1
    run_reference(TrialState.FAIL, "interrupted")
    prepare(plan)
    assert len(waiting()) == 1 and REFERENCE_ATTR in waiting()[0].user_attrs
    prepare(plan)
    assert len(waiting()) == 1  # enqueued once, however often the sweep starts
    run_reference(TrialState.FAIL, "TrainingDiverged: the loss became nan")
    prepare(plan)
    assert waiting() == []  # deterministic training would diverge again


@pytest.mark.slow
def test_a_killed_workers_trial_does_not_stay_running(ratings_file, tmp_path, mlflow_uri, sweep_cli):
    args = _args(ratings_file, tmp_path, "sweep.n_trials=2", "train.epochs=400", "train.patience=null",
                 "train.batch_size=16", "sweep.pruner=none")
    proc = sweep_cli(args, tmp_path)
    plan = build_plan(args)
    running = wait_for(lambda: _training(plan), 120, "the first trial to train", proc, every=0.5)
    proc.kill()
    proc.communicate(timeout=30)
    orphan = running[0]
    assert _study(plan).trials[orphan.number].state == TrialState.RUNNING  # left behind by kill -9
    resumed = subprocess.run([sys.executable, "-m", "mfexp.sweep", *args[:-4], "train.epochs=2"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    trials = _study(plan).get_trials(deepcopy=False)
    assert trials[orphan.number].state == TrialState.FAIL
    assert "worker died" in trials[orphan.number].user_attrs["fail_reason"]
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 2
    _assert_reference_ran_again(trials, interrupted=orphan.number)
    run = mlflow.get_run(orphan.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"


def test_a_dead_local_workers_trial_is_failed_and_retried_once_like_a_stale_heartbeat(tmp_path):
    """A sweep starting after a worker on this host was killed finds its RUNNING trial by the dead
    pid: FAIL and one retry, the same outcome as the heartbeat path on RDB storage (whichever
    notices first). The retry carries the params, not the dead worker's identity or MLflow run."""
    import socket

    from mfexp.sweep.runner import _fail_orphans

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j")))
    study = optuna.create_study(study_name="orphans", storage=storage)
    dist = optuna.distributions.FloatDistribution(0, 1)
    for x, owner in ((0.25, f"{socket.gethostname()}:{dead.pid}"), (0.5, f"{socket.gethostname()}:{os.getpid()}")):
        trial_id = storage.create_new_trial(study._study_id)
        storage.set_trial_param(trial_id, "x", x, dist)
        storage.set_trial_user_attr(trial_id, "worker", owner)
        storage.set_trial_user_attr(trial_id, "mlflow_run_id", "not-a-run")  # MLflow errors are only logged
        storage.set_trial_user_attr(trial_id, "mfexp.reference", "tutorial")

    _fail_orphans(storage, study)
    _fail_orphans(storage, study)  # a second start (or worker) neither fails it again nor retries twice
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert "worker died" in trials[0].user_attrs["fail_reason"]
    retry = trials[2]
    assert retry.params == {"x": 0.25}
    assert retry.system_attrs["failed_trial"] == 0 and retry.system_attrs["retry_history"] == [0]
    assert retry.user_attrs == {"mfexp.reference": "tutorial"}  # retried as the reference, nobody's yet

    storage.set_trial_state_values(storage.get_trial_id_from_study_id_trial_number(study._study_id, 2),
                                   TrialState.RUNNING)
    storage.set_trial_user_attr(retry._trial_id, "worker", f"{socket.gethostname()}:{dead.pid}")
    _fail_orphans(storage, study)  # the retry's worker died too: failed, not retried a second time
    assert [t.state for t in study.get_trials(deepcopy=False)] == [TrialState.FAIL, TrialState.RUNNING,
                                                                  TrialState.FAIL]


@pytest.mark.slow
def test_sigterm_to_a_multi_worker_sweeps_own_process_stops_its_workers_cleanly(ratings_file, tmp_path, mlflow_uri,
                                                                               sweep_cli):
    """`kill PID` (or a scheduler) signals the sweep's process alone, not its worker processes:
    they must stop as on their own SIGTERM (trials FAIL, runs KILLED), not train on orphaned."""
    args = _args(ratings_file, tmp_path, "sweep.n_trials=3", "sweep.n_workers=2", "train.epochs=400",
                 "train.patience=null", "train.batch_size=16", "sweep.pruner=none", "sweep.enqueue_tutorial=false")
    proc = sweep_cli(args, tmp_path)
    plan = build_plan(args)
    wait_for(lambda: len(_training(plan)) == 2, 180, "both workers to train", proc, every=0.5)
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    _, err = _communicate(proc, 90)
    assert proc.returncode == 130, err
    assert "run the same command again" in err.lower()
    trials = _study(plan).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert {t.user_attrs["fail_reason"] for t in trials} == {"interrupted"}
    runs = mlflow.search_runs(experiment_names=["mfexp-sweep-smoke"], output_format="list")
    assert len([r for r in runs if "optuna.trial_number" in r.data.tags]) == 2  # and the sweep's parent run
    assert {r.info.status for r in runs} == {"KILLED"}


def test_a_dead_workers_run_is_killed_also_when_it_had_just_finished(mlflow_uri):
    """A worker can die between ending its trial's MLflow run (FINISHED, or KILLED with the PRUNED tag
    of a pruned trial) and Optuna recording the trial: the trial is FAIL and retried, so its run must
    not pass for a finished or pruned trial (CI: the PostgreSQL killed-worker test, the kill in that
    window). A run that failed on its own (FAILED, or interrupted: KILLED with its FAIL tag) keeps
    its status and reason."""
    from optuna.trial import create_trial

    from mfexp.sweep.storage import kill_mlflow_run

    mlflow.set_experiment("dead")
    statuses = {}
    ended = {"PRUNED": ("KILLED", {"optuna.trial_state": "PRUNED"}),
             "INTERRUPTED": ("KILLED", {"optuna.trial_state": "FAIL", "mfexp.fail_reason": "interrupted"})}
    for status in ("RUNNING", "FINISHED", "FAILED", "PRUNED", "INTERRUPTED"):
        run = mlflow.start_run()
        if status in ended:
            mlflow.set_tags(ended[status][1])
            mlflow.end_run(ended[status][0])
        elif status != "RUNNING":
            mlflow.end_run(status)
        else:
            mlflow.end_run()  # leave the fluent stack clean; put the run back to RUNNING below
            mlflow.tracking.MlflowClient().update_run(run.info.run_id, "RUNNING")
        trial = create_trial(state=TrialState.FAIL, user_attrs={"mlflow_run_id": run.info.run_id})
        kill_mlflow_run(trial, "worker lost (no heartbeat)", "s")
        statuses[status] = mlflow.get_run(run.info.run_id)
    assert {k: r.info.status for k, r in statuses.items()} == {"RUNNING": "KILLED", "FINISHED": "KILLED",
                                                               "FAILED": "FAILED", "PRUNED": "KILLED",
                                                               "INTERRUPTED": "KILLED"}
    for status in ("RUNNING", "FINISHED", "PRUNED"):
        assert statuses[status].data.tags["mfexp.fail_reason"] == "worker lost (no heartbeat)"
        assert statuses[status].data.tags["optuna.trial_state"] == "FAIL"
    assert statuses["INTERRUPTED"].data.tags["mfexp.fail_reason"] == "interrupted"
    assert "mfexp.fail_reason" not in statuses["FAILED"].data.tags


def test_a_dead_workers_run_whose_id_it_never_recorded_is_found_not_doubled(mlflow_uri):
    """A worker can die after starting a trial's MLflow run and before recording the run's id on the
    trial (CI: the populations killed-worker test, a run twice for one trial). Whoever fails the trial
    finds that run by the trial's tags and kills it; a member that had no run yet gets one, once."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    from mfexp.sweep.results import PENDING_RUN_ATTR
    from mfexp.sweep.storage import kill_mlflow_run

    experiment = mlflow.set_experiment("lost")
    pending = {"experiment": "lost", "run_name": "biased-trial-{n}", "parent": None}
    with mlflow.start_run(run_name="biased-trial-0", tags={"optuna.study_name": "s-biased", "optuna.trial_number": "0",
                                                           "optuna.trial_state": "RUNNING"}) as started:
        pass
    mlflow.tracking.MlflowClient().update_run(started.info.run_id, "RUNNING")  # as the dead worker left it
    for n in (0, 1):  # trial 0: its run started, id unrecorded; trial 1: no run yet (a population member)
        trial = create_trial(state=TrialState.FAIL, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
                             user_attrs={PENDING_RUN_ATTR: {**pending, "run_name": f"biased-trial-{n}"}})
        trial.number = n
        kill_mlflow_run(trial, "worker lost (no heartbeat)", "s-biased")
    runs = mlflow.search_runs([experiment.experiment_id], output_format="list")
    by_trial = sorted((r.data.tags["optuna.trial_number"], r.info.status, r.data.tags["optuna.trial_state"]) for r in runs)
    assert by_trial == [("0", "KILLED", "FAIL"), ("1", "KILLED", "FAIL")]
    assert mlflow.get_run(started.info.run_id).data.tags["mfexp.fail_reason"] == "worker lost (no heartbeat)"
