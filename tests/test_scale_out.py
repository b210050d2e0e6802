"""Scaling out for real: separate `python -m mfexp.sweep` processes joining one sweep by name on a
PostgreSQL storage (a throwaway cluster, tests/pg.py), tracked by a real `mlflow server` whose
backend store is a second PostgreSQL database.

- two workers started at once on a budget of 4 trials for each of two models: exactly 4 counted
  trials each, numbers unique, none lost, each trial exactly once in MLflow; each model's best
  evaluated on the test part and registered once, by one of the two commands;
- one of them SIGKILLed mid-trial: its trial does not stay RUNNING (the heartbeat fails it, or
  the other's dead-pid check if that one was still starting; a retry is enqueued and run, its
  MLflow run is KILLED) and the budget is still met;
- several workers creating the same fresh database at the same moment do not collide;
- a trial left RUNNING by a dead worker on another host is failed and retried when a sweep starts;
- workers starting at once enqueue the reference trial once (prepare() holds storage.exclusive()).

Heartbeats are shortened with MFEXP_HEARTBEAT_S=1 (grace period 2 s) to keep the kill test short.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from optuna.trial import TrialState

from conftest import join_all, wait_for
from pg import free_port, pg_database, postgres_server  # noqa: F401 - fixtures

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

N_TRIALS = 8
DUO_MODELS, DUO_TRIALS = ("biased", "plain"), 4  # the two-worker sweep: 4 trials of each model
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
WORKER_TIMEOUT_S = 420
SERVER_START_TIMEOUT_S = 180
LOCAL = "127.0.0.1,localhost"
NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def ratings_path(tmp_path_factory):
    from conftest import write_ratings_file

    return write_ratings_file(tmp_path_factory.mktemp("scale-out-data") / "ratings.tsv")


@pytest.fixture(scope="module")
def mlflow_server(postgres_server, tmp_path_factory):  # noqa: F811
    """`mlflow server` on 127.0.0.1:<free port>, PostgreSQL backend store, artifacts in tmp."""
    backend = postgres_server.create_database("mlflow_server")
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "server",
                             "--backend-store-uri", backend, "--artifacts-destination", str(folder / "artifacts"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"

    def healthy():
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited ({proc.returncode}):\n{(folder / 'server.log').read_text()[-3000:]}")
        try:
            with NO_PROXY_OPENER.open(f"{uri}/health", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    try:
        started = time.monotonic()
        wait_for(healthy, SERVER_START_TIMEOUT_S, "mlflow server /health", every=0.5)
        print(f"mlflow server healthy after {time.monotonic() - started:.1f}s")
        yield uri
    finally:
        _stop_group(proc)
        log.close()


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (uvicorn and its workers), SIGKILL what is left after 5 s:
    a throwaway server needs no graceful end."""
    for sig, wait_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue


class Worker:
    """One `python -m mfexp.sweep` process, as started on its own machine (own folder)."""

    def __init__(self, index: int, folder: Path, args: list[str], env: dict[str, str]):
        self.folder = folder / f"worker-{index}"
        self.folder.mkdir(parents=True)
        self.out = open(self.folder / "out.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "mfexp.sweep", *args, f"sweep.root={self.folder / 'sweeps'}"],
                                     stdout=self.out, stderr=subprocess.STDOUT, cwd=self.folder, env=env)
        self.pid = self.proc.pid

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=WORKER_TIMEOUT_S)
        finally:
            self.out.close()

    def log(self, tail: int = 4000) -> str:
        """The worker's output: its last `tail` characters (for failure messages), 0 for all of it."""
        text = (self.folder / "out.log").read_text()
        return text[-tail:] if tail else text

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.out.close()


def _start_workers(n, tmp_path, ratings_path, name, storage, tracking_uri, heartbeat_s=None, models=("biased",),
                   n_trials=N_TRIALS, extra=()):
    args = ["data=file", f"data.path={ratings_path}", "sweep=smoke", f"sweep.name={name}",
            f"sweep.storage={storage}", f"sweep.models=[{','.join(models)}]", f"sweep.n_trials={n_trials}",
            "train.epochs=3", "train.batch_size=256", *extra]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "MXNET_CPU_WORKER_NTHREADS": "1",
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for key in ("NO_PROXY", "no_proxy"):  # the tracking server is local, whatever proxy CI sets
        env[key] = ",".join(filter(None, [os.environ.get(key), LOCAL]))
    if heartbeat_s:
        env["MFEXP_HEARTBEAT_S"] = str(heartbeat_s)
    return [Worker(i, tmp_path, args, env) for i in range(n)]


def _study(url, name, model="biased"):
    import optuna

    return optuna.load_study(study_name=f"{name}-{model}", storage=optuna.storages.RDBStorage(url))


def _mlflow_trial_runs(tracking_uri, name):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(f"mfexp-sweep-{name}")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    trials = [r for r in runs if "optuna.trial_number" in r.data.tags and "mfexp.best" not in r.data.tags]
    parents = [r for r in runs if r.info.run_name == f"sweep-{name}"]
    return trials, parents


def _assert_no_point_proposed_twice(trials) -> None:
    """Processes joining one study each seed their sampler differently: no configuration is trained
    twice, except a retry of a killed trial. The tutorial's reference trial is enqueued once."""
    from mfexp.sweep.results import REFERENCE_ATTR

    first_tries = [t for t in trials if "failed_trial" not in t.system_attrs]
    reference = [t.number for t in first_tries if REFERENCE_ATTR in t.user_attrs]
    assert reference, "no reference trial"
    assert len(reference) == 1, f"the reference trial was enqueued {len(reference)} times ({reference})"
    # (a population member killed after it was asked, before it drew its params, has none: it trained nothing)
    points = [tuple(sorted(t.params.items())) for t in first_tries if REFERENCE_ATTR not in t.user_attrs and t.params]
    assert len(points) == len(set(points)), [t.params for t in trials]


def _by_worker(trials) -> dict[str, int]:
    pids = [t.user_attrs.get("worker", "?:?").rsplit(":", 1)[1] for t in trials]
    return {pid: pids.count(pid) for pid in sorted(set(pids))}


def _check_each_trial_once_in_mlflow(trials, tracking_uri, name, model="biased"):
    runs, _ = _mlflow_trial_runs(tracking_uri, name)
    runs = [r for r in runs if r.data.tags["optuna.study_name"] == f"{name}-{model}"]
    logged = sorted(int(r.data.tags["optuna.trial_number"]) for r in runs)
    assert logged == sorted(t.number for t in trials), [  # each trial exactly once, none missing
        (r.data.tags["optuna.trial_number"], r.info.run_name, r.info.status, r.data.tags.get("mlflow.parentRunId"))
        for r in runs]
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in runs}
    for t in trials:
        run = by_number[t.number]
        if "mlflow_run_id" not in t.user_attrs:  # lost with its worker before the run's id was on the trial:
            from mfexp.sweep.population import PENDING_RUN_ATTR  # the run its worker started, or one recorded for it

            assert t.state == TrialState.FAIL, (t.number, t.user_attrs)  # where its run went: on the trial, or
            assert PENDING_RUN_ATTR in t.user_attrs or "before it was marked" in t.user_attrs["fail_reason"]  # the killer's
            assert {k: str(v) for k, v in t.params.items()}.items() <= run.data.params.items()
        else:
            assert run.info.run_id == t.user_attrs["mlflow_run_id"]
        assert run.info.status == {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED",
                                   TrialState.FAIL: "KILLED"}[t.state], (t.number, t.state, run.info.status)
    return by_number


@pytest.fixture(scope="module")
def duo(postgres_server, mlflow_server, ratings_path, tmp_path_factory):  # noqa: F811
    """Two worker commands (two machines: own folders) started at once on one sweep of biased and
    plain on a fresh PostgreSQL storage, tracked by the mlflow server; run once for the two tests
    that read it."""
    storage = postgres_server.create_database("duo_optuna")  # fresh: both workers create its tables at once
    workers = _start_workers(2, tmp_path_factory.mktemp("duo"), ratings_path, "duo", storage, mlflow_server,
                             models=DUO_MODELS, n_trials=DUO_TRIALS)
    try:
        codes = [w.wait() for w in workers]
    finally:
        for w in workers:
            w.stop()
    return SimpleNamespace(storage=storage, workers=workers, codes=codes)


def _both_exited_cleanly(duo) -> None:
    for w, code in zip(duo.workers, duo.codes):
        assert code == 0, f"worker {w.pid} exited {code}:\n{w.log()}"


def test_two_workers_started_at_once_share_the_budget(duo, mlflow_server):
    _both_exited_cleanly(duo)
    pids = set()
    for model in DUO_MODELS:
        trials = _study(duo.storage, "duo", model).get_trials(deepcopy=False)
        numbers = [t.number for t in trials]
        assert numbers == list(range(len(numbers))), model  # unique, no gaps
        assert all(t.state in COUNTED for t in trials), [(model, t.number, t.state) for t in trials]  # none lost
        assert len(trials) == DUO_TRIALS, model  # counted and started under the sweep's lock: never one more
        pids |= {t.user_attrs["worker"].rsplit(":", 1)[1] for t in trials}
        _assert_no_point_proposed_twice(trials)
        print(f"duo {model}: {len(trials)} trials, by worker {_by_worker(trials)}")
        _check_each_trial_once_in_mlflow(trials, mlflow_server, "duo", model)
    assert pids == {str(w.pid) for w in duo.workers}  # both workers trained
    # One sweep run per worker, in the sweep's experiment. The worker that loses MLflow's race to
    # create the experiment gets it back from mlflow.set_experiment without it being made active
    # (mlflow 3.17, fluent.set_experiment returns early): its next start_run lands in "Default"
    # unless Tracker passes experiment_id to start_run.
    runs, parents = _mlflow_trial_runs(mlflow_server, "duo")
    assert sorted(p.info.status for p in parents) == ["FINISHED", "FINISHED"], [
        (p.info.run_name, p.info.status, p.data.tags.get("mfexp.command")) for p in parents]
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} <= {p.info.run_id for p in parents}


def test_two_worker_commands_evaluate_and_register_each_best_trial_once(duo, mlflow_server):
    """Each command ends by evaluating each model's best on the test part and registering it: across
    the two, that happens once per best trial (and once for their blend), by one of them."""
    from mlflow.tracking import MlflowClient

    _both_exited_cleanly(duo)
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("mfexp-sweep-duo")
    best_runs = [r for r in client.search_runs([exp.experiment_id], max_results=1000)
                 if r.data.tags.get("mfexp.best") == "true"]
    by_model = {}
    for model in DUO_MODELS:
        study = _study(duo.storage, "duo", model)
        runs = [r for r in best_runs if r.data.tags.get("optuna.study_name") == f"duo-{model}"]
        assert [r.data.tags["optuna.trial_number"] for r in runs] == [str(study.best_trial.number)], \
            [(r.data.tags["optuna.trial_number"], r.info.run_id) for r in runs]
        versions = client.search_model_versions(f"name = 'mfexp-duo-{model}'")
        assert [v.run_id for v in versions] == [runs[0].info.run_id]  # one registry version, of that run
        by_model[model] = runs[0].info.run_id
    blend = [r.info.run_id for r in best_runs if "optuna.study_name" not in r.data.tags]
    assert len(blend) == 1  # the blend of the two models (sweep.ensemble is on): once too
    champion = client.search_model_versions("name = 'mfexp-duo-champion'")
    assert len(champion) == 1 and champion[0].run_id in [*by_model.values(), *blend]
    # both commands report the same test RMSE for each model: the one evaluation, shared
    for w in duo.workers:
        assert (w.folder / "sweeps" / "duo" / "best-biased.yaml").exists()
    # each model's best was evaluated by one command; the other said why it did not
    said = [w.log(tail=0) for w in duo.workers]
    for model in DUO_MODELS:
        lines = [[line for line in out.splitlines() if line.startswith(f"[{model:>7}] ")] for out in said]
        evaluated = [any(line.endswith("then one evaluation on the test part") for line in ls) for ls in lines]
        assert evaluated.count(True) == 1, (model, lines)
        other = lines[evaluated.index(False)]
        assert any(line.endswith(": not again") or line.endswith("the last one to finish evaluates the best on "
                                                                     "the test part") for line in other), (model, lines)


@pytest.mark.parametrize("population", [1, 4], ids=["one trial at a time", "populations of 4"])
def test_a_worker_killed_mid_trial_has_its_trial_failed_and_retried(pg_database, mlflow_server, ratings_path,  # noqa: F811
                                                                    tmp_path, population):
    """A worker SIGKILLed mid-trial: its RUNNING trials (with populations, every member of the population
    it was training) are failed by the survivor's heartbeat check and each retried once, with the same
    params; the counts stay exactly the budget."""
    storage, name = pg_database("optuna"), f"killed{population}"  # a sweep (MLflow experiment) of its own
    # Heartbeat 1 s: a dead worker's trial is stale after the 2 s grace period.
    workers = _start_workers(2, tmp_path, ratings_path, name, storage, mlflow_server, heartbeat_s=1,
                             extra=[f"sweep.population={population}"])
    victim, survivor = workers

    def survivor_started(trials):
        return any(t.user_attrs.get("worker", "").endswith(f":{survivor.pid}") for t in trials)

    def of_victim(trials):
        return [t for t in trials if t.user_attrs.get("worker", "").endswith(f":{victim.pid}")]

    try:
        def victim_running():
            try:
                study = _study(storage, name)
            except Exception:  # tables or study not created yet
                return None
            trials = study.get_trials(deepcopy=False)
            by_victim = of_victim(trials)
            # A survivor still starting would find the victim's dead pid itself (runner._fail_orphans,
            # the same FAIL and retry); past its start only the heartbeat can: wait for that, unless
            # the victim is about to take the whole budget. A lone trial is caught once its MLflow run
            # exists; a population's members write theirs as they leave, so any RUNNING member will do.
            if survivor_started(trials) or len(by_victim) >= N_TRIALS // 2:
                running = [t for t in by_victim if t.state == TrialState.RUNNING
                           and (population > 1 or "mlflow_run_id" in t.user_attrs)]
                if running:
                    return running
            if victim.proc.poll() is not None or survivor.proc.poll() is not None:
                pytest.fail(f"a worker ended before the victim ran a trial:\n{victim.log()}\n{survivor.log()}")
            return None

        for _ in range(10):
            wait_for(victim_running, 240, "a RUNNING trial of the victim worker", every=0.05)
            # Frozen at once: a trial takes about a second, and its RUNNING state was seen a poll ago
            victim.proc.send_signal(signal.SIGSTOP)
            # read before the kill: a survivor that starts after it may find the dead pid
            frozen = _study(storage, name).get_trials(deepcopy=False)
            # the victim's RUNNING trials: a member it had just asked may not carry its pid yet (only the
            # survivor's RUNNING trials go on and finish)
            survivors = {t.number for t in frozen if t.user_attrs.get("worker", "").endswith(f":{survivor.pid}")}
            killed_numbers = [t.number for t in frozen if t.state == TrialState.RUNNING and t.number not in survivors]
            if killed_numbers:
                break
            # the trial finished between the look and the stop (CI under load, 1 run in ~20): look again
            victim.proc.send_signal(signal.SIGCONT)
        by_heartbeat = survivor_started(frozen)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=30)
        assert killed_numbers, "the kill did not land mid-trial"
        code = survivor.wait()
    finally:
        for w in workers:
            w.stop()
    assert code == 0, f"the surviving worker exited {code}:\n{survivor.log()}"

    trials = _study(storage, name).get_trials(deepcopy=False)
    # a trial the survivor had just asked when the victim was frozen was not marked as the survivor's yet
    killed_numbers = [n for n in killed_numbers if not trials[n].user_attrs.get("worker", "").endswith(f":{survivor.pid}")]
    assert killed_numbers, "the kill did not land mid-trial"
    for number in killed_numbers:
        killed = trials[number]
        assert killed.state == TrialState.FAIL, number  # not left RUNNING: failed by the heartbeat check
        retries = [t for t in trials if t.system_attrs.get("failed_trial") == number]
        assert len(retries) == 1 and retries[0].system_attrs["retry_history"] == [number]
        assert retries[0].state in COUNTED
        # the retry trains the same configuration; a population member killed while it was being asked (CI saw
        # it) drew some or none of its params: its retry draws the rest, keeping the population's shared values
        drawn = {**killed.system_attrs.get("fixed_params", {}), **killed.params}
        assert drawn.items() <= retries[0].params.items(), (drawn, retries[0].params)
        assert retries[0].user_attrs["worker"].endswith(f":{survivor.pid}")
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert [t.number for t in trials] == list(range(len(trials)))
    counted = [t for t in trials if t.state in COUNTED]
    assert len(counted) == N_TRIALS  # the killed trials do not count, their retries do: exactly the budget
    _assert_no_point_proposed_twice(trials)
    assert [t.number for t in trials if t.state == TrialState.FAIL] == killed_numbers
    if population > 1:  # the workers trained populations, not one trial at a time
        from mfexp.sweep.population import POPULATION_ATTR

        assert max(t.user_attrs.get(POPULATION_ATTR, 1) for t in trials) > 1, [t.user_attrs for t in trials]
    print(f"killed: trials {killed_numbers} killed, each retried; {len(counted)} counted of "
          f"{len(trials)} trials, by worker {_by_worker(trials)}; found by "
          f"{'the heartbeat' if by_heartbeat else 'the heartbeat or the dead pid (survivor still starting)'}")
    runs = _check_each_trial_once_in_mlflow(trials, mlflow_server, name)
    assert runs[killed.number].data.tags["optuna.trial_state"] == "FAIL"
    reason = runs[killed.number].data.tags["mfexp.fail_reason"]
    # on one host the survivor may find the dead pid before the heartbeat goes stale (it looks while it
    # waits for the last RUNNING trials too): either way the same FAIL and retry
    assert "no heartbeat" in reason or "worker died" in reason, reason
    if "no heartbeat" in reason:
        assert "lost its worker" in survivor.log(tail=0)  # anywhere in it


def test_workers_creating_a_fresh_storage_at_once_do_not_collide(pg_database):  # noqa: F811
    """Optuna's table creation races (UniqueViolation on pg_type, duplicate version row) when several
    processes open a fresh database at the same moment; open_storage retries until one has won."""
    from mfexp.config import SweepConfig
    from mfexp.sweep.storage import open_storage

    url = pg_database("race")
    barrier, errors = threading.Barrier(4), []

    def open_it():
        barrier.wait()
        try:
            open_storage(SweepConfig(name="race", storage=url))
        except Exception as err:  # noqa: BLE001
            errors.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    join_all(threads, 120, "threads opening the storage")
    assert errors == []


def test_a_trial_left_running_by_a_dead_worker_elsewhere_is_failed_and_retried_on_start(pg_database,  # noqa: F811
                                                                                         monkeypatch):
    """A worker on another host died (its pid cannot be checked from here): when a sweep starts,
    the stale heartbeat alone fails its trial and enqueues one retry."""
    import optuna

    from mfexp.config import SweepConfig
    from mfexp.sweep import runner
    from mfexp.sweep.storage import open_storage

    monkeypatch.setenv("MFEXP_HEARTBEAT_S", "1")
    storage = open_storage(SweepConfig(name="stale", storage=pg_database("stale")))
    study = optuna.create_study(study_name="stale-biased", storage=storage)
    trial_id = storage.create_new_trial(study._study_id)
    storage.set_trial_param(trial_id, "x", 0.5, optuna.distributions.FloatDistribution(0, 1))
    storage.set_trial_user_attr(trial_id, "worker", "elsewhere.example:4242")
    storage.record_heartbeat(trial_id)
    time.sleep(3.2)  # grace period: 2 heartbeats
    runner._fail_orphans(storage, study)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[1].system_attrs["failed_trial"] == 0 and trials[1].params == {"x": 0.5}


def test_workers_preparing_a_sweep_at_once_enqueue_the_reference_trial_once(pg_database, tmp_path):  # noqa: F811
    import optuna

    from mfexp.sweep import runner
    from mfexp.sweep.plan import build_plan
    from mfexp.sweep.storage import open_storage

    ratings = tmp_path / "ratings.tsv"
    ratings.write_text("".join(f"{u}\t{i}\t{1 + (u * i) % 5}\t0\n" for u in range(1, 30) for i in range(1, 30)))
    url = pg_database("prepare")
    args = ["data=file", f"data.path={ratings}", "sweep=smoke", f"sweep.storage={url}", f"sweep.root={tmp_path}"]
    open_storage(build_plan(args).sweep)  # tables exist: the workers race on the studies only
    duplicated = []
    for rep in range(4):
        plan = build_plan([*args, f"sweep.name=prep{rep}", "sweep.models=[biased,plain]"])
        barrier = threading.Barrier(3)

        errors = []

        def prepare():
            barrier.wait()
            try:
                runner.prepare(plan)
            except Exception as err:  # noqa: BLE001
                errors.append(f"{type(err).__name__}: {err}")

        threads = [threading.Thread(target=prepare) for _ in range(3)]
        for t in threads:
            t.start()
        join_all(threads, 120, "threads preparing the sweep")
        assert errors == [], rep
        for model in plan.sweep.models:
            trials = optuna.load_study(study_name=f"prep{rep}-{model}", storage=url).trials
            n = sum(runner.REFERENCE_ATTR in t.user_attrs for t in trials)
            if n != 1:
                duplicated.append((rep, model, n))
    assert duplicated == []
