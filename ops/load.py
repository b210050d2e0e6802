"""Section load: several `python -m mfexp.sweep` commands started at once on one sweep, many short
trials, on the two set-ups mfexp supports for that; then exact counts in Optuna and MLflow, the
workers' output searched for lock errors, trials per hour and the size of every store.

- journal: the embedded set-up. One sweep folder (same sweep.name and sweep.root for every
  command) with its Optuna journal file, as machines sharing a folder would; one MLflow SQLite
  store, created (migrated) once before the commands start: a fresh SQLite store created by
  several processes at once breaks. Each command gets its own sweep.seed, as docs/scaling.md
  says for invocations sharing a journal (their samplers would propose the same points).
- postgres: the team set-up. Optuna on PostgreSQL (sweep.storage=postgresql://...) and an
  `mlflow server` whose backend store is a second database on the same PostgreSQL server
  (a throwaway cluster, ops/pgserver.py); each command in a folder of its own, as on its own
  machine, all with the same command line.

Short trials: plain, adam, k 32, batch 1024, 2 epochs on ML-100K u1 (lr and reg sampled; about a
second of training each), no pruning, no early stopping, no blend. sweep.n_trials is the study's
budget shared by all the commands, so `--trials` is the total.

    python -m ops.load [--quick] [--backends journal postgres] [--trials 400] [--workers 4]
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence

from mlflow.tracking import MlflowClient
import optuna
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from bench import common
from ops import pgserver
from ops.pgserver import free_port
from mfexp.sweep.results import MLFLOW_GAP_ATTR, REFERENCE_ATTR, WORKER_ATTR

SECTION = "load"
BACKENDS = ("journal", "postgres")
MODEL = "plain"
TRIALS, QUICK_TRIALS, WORKERS, EPOCHS = 400, 12, 4, 2
SERVER_WORKERS, QUICK_SERVER_WORKERS = 4, 1  # `mlflow server`'s own default (make server) / a light one
SERVER_START_S = 300
# every trial does about the same (short) work; the command line wins over the space (lr, reg sampled)
# sweep.population=1: the load it measures is workers sharing trials one at a time (the default sweep's
# populations would hand a worker 16 trials at once)
OVERRIDES = [f"sweep.models=[{MODEL}]", "sweep.pruner=none", "sweep.ensemble=false", "sweep.timeout=null",
             "sweep.population=1", "train.patience=null", "train.batch_size=1024", "model.k=32", "train.progress=false"]
# what a lock problem looks like in a worker's output; "lock" as a word start, not "clock" or "block"
LOCK_PATTERNS = {"database is locked": r"database is locked", "deadlock": r"deadlock",
                 "OperationalError": r"OperationalError", "Traceback": r"Traceback",
                 "lock": r"(?<![a-z])lock"}
OTHER_PATTERNS = {"MLflow tracking failed": r"MLflow tracking failed", "mfexp: error": r"mfexp: error"}
SERVER_PATTERNS = {"Traceback": r"Traceback", "OperationalError": r"OperationalError", "deadlock": r"deadlock",
                   "lock": r"(?<![a-z])lock", "ERROR": r"\bERROR\b"}


# --- the stores -----------------------------------------------------------------------------------
def _size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder; 0 when absent."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


class MlflowServer:
    """`mlflow server` over a backend store, artifacts under `folder`, on 127.0.0.1:<free port>,
    in a process group of its own (uvicorn and its workers), stopped as a group."""

    def __init__(self, folder: Path, backend: str, workers: int):
        self.folder, self.backend, self.workers = folder, backend, workers
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / "mlflow-server.log"
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "MlflowServer":
        env = common.child_env(PYTHONWARNINGS="ignore:starlette.middleware.wsgi is deprecated",
                               MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", self.backend,
                 "--artifacts-destination", str(self.folder / "artifacts"), "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", str(self.workers)],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.folder, env=env, start_new_session=True)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                with opener.open(f"{self.uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer /health within {SERVER_START_S} s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log_path.read_text()[-3000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 30)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        self.proc = None


# --- the workers ----------------------------------------------------------------------------------
def worker_env(tracking_uri: str) -> dict[str, str]:
    env = common.child_env(threads=1, MLFLOW_TRACKING_URI=tracking_uri, PYTHONUNBUFFERED="1",
                           GIT_PYTHON_REFRESH="quiet", MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    for key in ("NO_PROXY", "no_proxy"):  # every server here is local, whatever proxy is set
        env[key] = ",".join(filter(None, [os.environ.get(key), "127.0.0.1,localhost"]))
    return env


def run_workers(folders: Sequence[Path], args: Sequence[Sequence[str]], env: dict, timeout: float) -> dict:
    """Start one `python -m mfexp.sweep ARGS` per folder at the same moment (each in its folder,
    output in worker.out / worker.err there); wait for all. Exit codes (None: killed at the
    timeout), pids, seconds from the start to each exit."""
    procs, files = [], []
    start = time.perf_counter()
    for folder, argv in zip(folders, args):
        folder.mkdir(parents=True, exist_ok=True)
        out, err = open(folder / "worker.out", "w"), open(folder / "worker.err", "w")
        files += [out, err]
        procs.append(subprocess.Popen([sys.executable, "-m", "mfexp.sweep", *argv], cwd=folder, env=env,
                                      stdout=out, stderr=err))
    ends: list[Optional[float]] = [None] * len(procs)
    deadline = start + timeout
    try:
        while any(e is None for e in ends) and time.perf_counter() < deadline:
            for i, p in enumerate(procs):
                if ends[i] is None and p.poll() is not None:
                    ends[i] = time.perf_counter() - start
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:  # past the timeout (or the bench itself interrupted)
                p.kill()
                p.wait(timeout=30)
        for f in files:
            f.close()
    return {"pids": [p.pid for p in procs], "exit_codes": [p.returncode if e is not None else None
                                                           for p, e in zip(procs, ends)],
            "exit_s": [round(e, 2) if e is not None else None for e in ends],
            "wall_s": round(max((e for e in ends if e is not None), default=time.perf_counter() - start), 2)}


_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \S+ \S+ \[\d+\] |^\d{4}/\d\d/\d\d \S+ ")
_VARYING = re.compile(r"0x[0-9a-f]+|\b\d+\b|\([^)]*\)=\([^)]*\)", re.I)


def scan_output(paths: Sequence[Path], patterns: dict[str, str]) -> dict:
    """Lines matching each pattern (case-insensitive) across `paths`; `lines`: how many lines
    match any; `examples`: the first few of those; `kinds`: the commonest of them with
    timestamps, numbers and key values blanked, and how often each came."""
    compiled = {name: re.compile(rx, re.I) for name, rx in patterns.items()}
    counts, lines, examples, kinds = Counter(), 0, [], Counter()
    for path in paths:
        if not Path(path).exists():
            continue
        for line in Path(path).read_text(errors="replace").splitlines():
            hits = [name for name, rx in compiled.items() if rx.search(line)]
            counts.update(hits)
            if hits:
                lines += 1
                kinds[_VARYING.sub("#", _PREFIX.sub("", line.strip()))[:200]] += 1
                if len(examples) < 5:
                    examples.append(f"{Path(path).parent.name}/{Path(path).name}: {line.strip()[:300]}")
    return {"lines": lines, "by_pattern": {name: counts.get(name, 0) for name in patterns}, "examples": examples,
            "kinds": [[kind, n] for kind, n in kinds.most_common(8)]}


# --- what the stores hold -------------------------------------------------------------------------
def optuna_facts(study, pids: Sequence[int]) -> dict:
    """Trial counts by state, numbering, who ran what, repeated configurations, timing."""
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    numbers = [t.number for t in trials]
    owner = {str(pid): i for i, pid in enumerate(pids)}
    per_worker = [0] * len(pids)
    unknown_owner = 0
    for t in trials:
        i = owner.get(str(t.user_attrs.get(WORKER_ATTR, ":")).rsplit(":", 1)[-1])
        if i is None:
            unknown_owner += 1
        else:
            per_worker[i] += 1
    sampled = [tuple(sorted(t.params.items())) for t in trials if REFERENCE_ATTR not in t.user_attrs]
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.datetime_complete]
    firsts: dict[Any, int] = {}
    for t in sorted(done, key=lambda t: t.datetime_start):
        firsts.setdefault(t.user_attrs.get(WORKER_ATTR), t.number)
    later = [t for t in done if t.number not in firsts.values()]

    def span(ts) -> float:
        return (max(t.datetime_complete for t in ts) - min(t.datetime_start for t in ts)).total_seconds()

    durations = [t.duration.total_seconds() for t in later or done]
    return {
        "trials": len(trials), "counted": states.get("COMPLETE", 0) + states.get("PRUNED", 0),
        "by_state": dict(sorted(states.items())), "numbers_unique": len(set(numbers)) == len(numbers),
        "numbers_contiguous": sorted(numbers) == list(range(len(numbers))),
        "per_worker": per_worker, "trials_of_unknown_worker": unknown_owner,
        "reference_trials": sum(REFERENCE_ATTR in t.user_attrs for t in trials),
        "repeated_configurations": len(sampled) - len(set(sampled)),
        "mlflow_gaps": sum(MLFLOW_GAP_ATTR in t.user_attrs for t in trials),
        "search_s": round(span(done), 2) if done else None,
        "steady_s": round(span(later), 2) if later else None, "steady_trials": len(later),
        "mean_trial_s": round(sum(durations) / len(durations), 3) if durations else None,
        "run_ids": {t.number: t.user_attrs.get("mlflow_run_id") for t in trials},
        "states": {t.number: t.state.name for t in trials},
    }


def _all_runs(client, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def mlflow_facts(tracking_uri: str, sweep_name: str, study_name: str, optuna: dict) -> dict:
    """The sweep's experiment: its trial runs against the Optuna trials, duplicates, runs left
    RUNNING, the parent and best runs, the registry."""
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(f"mfexp-sweep-{sweep_name}")
    runs = _all_runs(client, exp.experiment_id) if exp else []
    trial_runs = [r for r in runs if "optuna.trial_number" in r.data.tags and "mfexp.best" not in r.data.tags]
    best = [r for r in runs if r.data.tags.get("mfexp.best") == "true"]
    parents = [r for r in runs if r.info.run_name == f"sweep-{sweep_name}"]
    keys = Counter((r.data.tags.get("optuna.study_name"), r.data.tags["optuna.trial_number"]) for r in trial_runs)
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in trial_runs}
    want = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "KILLED"}
    wrong_status = sum(1 for n, state in optuna["states"].items()
                       if n in by_number and want.get(state) != by_number[n].info.status)
    mismatched = sum(1 for n, run_id in optuna["run_ids"].items()
                     if n not in by_number or by_number[n].info.run_id != run_id)
    try:
        versions = len(client.search_model_versions(f"name = 'mfexp-{sweep_name}-{MODEL}'"))
    except Exception:  # noqa: BLE001 - no registered model
        versions = 0
    return {
        "experiment_id": exp.experiment_id if exp else None, "runs": len(runs), "trial_runs": len(trial_runs),
        "duplicate_trial_runs": sum(n - 1 for n in keys.values() if n > 1),
        "other_study": sum(1 for (study, _n) in keys if study != study_name),
        "trials_without_run": sum(1 for n in optuna["states"] if n not in by_number),
        "runs_without_trial": sum(1 for n in by_number if n not in optuna["states"]),
        "running": sum(r.info.status == "RUNNING" for r in runs),
        "status_not_matching_state": wrong_status, "run_id_not_matching": mismatched,
        "parent_runs": len(parents), "parents_finished": sum(r.info.status == "FINISHED" for r in parents),
        "best_runs": len(best), "registry_versions": versions,
        "other_runs": len(runs) - len(trial_runs) - len(best) - len(parents),
        "artifact_location": exp.artifact_location if exp else None,
    }


# --- one backend ----------------------------------------------------------------------------------
def sweep_args(name: str, n_trials: int, epochs: int, root: Path, *extra: str) -> list[str]:
    return [*OVERRIDES, f"sweep.name={name}", f"sweep.root={root}", f"sweep.n_trials={n_trials}",
            f"sweep.model_trials={{{MODEL}:{n_trials}}}",  # over the default sweep's own budget for the model
            f"train.epochs={epochs}", *extra]


def run_journal(folder: Path, n_trials: int, workers: int, epochs: int, timeout: float) -> dict:
    name = f"load-journal-{os.getpid()}"
    db = folder / "mlflow.db"
    uri = f"sqlite:///{db}"
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its import set INFO: "Creating initial ... tables"
    MlflowClient(uri).search_experiments(max_results=1)  # created and migrated once, before the workers
    mlflow_empty = _size(db)
    root = folder / "sweeps"
    args = [sweep_args(name, n_trials, epochs, root, f"sweep.seed={i}") for i in range(workers)]
    ran = run_workers([folder / f"worker-{i}" for i in range(workers)], args, worker_env(uri), timeout)
    journal = root / name / "optuna.journal"
    study = _study(lambda: optuna.load_study(
        study_name=f"{name}-{MODEL}", storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal)))),
        ran, folder)
    facts = optuna_facts(study, ran["pids"])
    tracked = mlflow_facts(uri, name, f"{name}-{MODEL}", facts)
    artifacts = _artifact_folder(tracked["artifact_location"])
    sizes = {"optuna_store_bytes": _size(journal), "optuna_store": "journal file", "optuna_empty_bytes": 0,
             "mlflow_store_bytes": _size(db) + _size(Path(f"{db}-wal")), "mlflow_store": "SQLite file",
             "mlflow_empty_bytes": mlflow_empty,
             "artifacts_bytes": _size(artifacts) if artifacts else 0,
             "sweep_folders_bytes": _size(root) - _size(journal)}
    return {"backend": "journal", "sweep": name, "tracking": "sqlite (one file, shared)", **ran,
            "optuna": facts, "mlflow": tracked, "sizes": sizes,
            "output": scan_output(_outputs(folder, workers), LOCK_PATTERNS),
            "other_output": scan_output(_outputs(folder, workers), OTHER_PATTERNS)}


def _study(load, ran: dict, folder: Path):
    """The sweep's study; without one (every command failed before creating it) an error that
    shows why, from the first failed command's output."""
    try:
        return load()
    except (KeyError, OSError) as err:
        failed = [i for i, code in enumerate(ran["exit_codes"]) if code != 0] or [0]
        tail = (folder / f"worker-{failed[0]}" / "worker.err").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"no study after the workers (exit codes {ran['exit_codes']}; {type(err).__name__}: "
                           f"{err}); worker {failed[0]}'s stderr ends:\n{tail}") from err


def _artifact_folder(location: Optional[str]) -> Optional[Path]:
    if not location:
        return None
    if location.startswith("file://"):
        return Path(location[len("file://"):])
    return Path(location) if "://" not in location else None


def _outputs(folder: Path, workers: int) -> list[Path]:
    return [folder / f"worker-{i}" / f for i in range(workers) for f in ("worker.err", "worker.out")]


def run_postgres(folder: Path, n_trials: int, workers: int, epochs: int, timeout: float,
                 server_workers: int) -> dict:
    bindir = pgserver.find_bindir()
    if bindir is None:
        return {"backend": "postgres", "skipped": pgserver.NOT_INSTALLED}
    pg = pgserver.start(bindir)
    server = None
    try:
        empty = pg.database_size("template1")
        optuna_db, mlflow_db = "load_optuna", "load_mlflow"
        storage = pg.create_database(optuna_db)
        server = MlflowServer(folder, pg.create_database(mlflow_db), server_workers)
        started = time.perf_counter()
        server.start()
        server_start_s = round(time.perf_counter() - started, 1)
        name = f"load-pg-{os.getpid()}"
        # one command line for every machine, each in a folder of its own
        args = [sweep_args(name, n_trials, epochs, folder / f"worker-{i}" / "sweeps", f"sweep.storage={storage}")
                for i in range(workers)]
        os.environ.update({k: v for k, v in worker_env(server.uri).items() if k.lower() == "no_proxy"})
        ran = run_workers([folder / f"worker-{i}" for i in range(workers)], args, worker_env(server.uri), timeout)
        study = _study(lambda: optuna.load_study(study_name=f"{name}-{MODEL}", storage=storage), ran, folder)
        facts = optuna_facts(study, ran["pids"])
        tracked = mlflow_facts(server.uri, name, f"{name}-{MODEL}", facts)
        sizes = {"optuna_store_bytes": pg.database_size(optuna_db), "optuna_store": "PostgreSQL database",
                 "mlflow_store_bytes": pg.database_size(mlflow_db), "mlflow_store": "PostgreSQL database",
                 "optuna_empty_bytes": empty, "mlflow_empty_bytes": empty,
                 "artifacts_bytes": _size(folder / "artifacts"),
                 "sweep_folders_bytes": sum(_size(folder / f"worker-{i}" / "sweeps") for i in range(workers))}
        server_log = scan_output([server.log_path], SERVER_PATTERNS)
        pg_log = scan_output([pg.log], {"ERROR": r"\bERROR\b", "deadlock": r"deadlock"})
        if pg.log.exists():  # the cluster's folder goes with it
            shutil.copyfile(pg.log, folder / "postgres.log")
    finally:
        if server is not None:
            server.stop()
        pgserver.stop(pg)
    return {"backend": "postgres", "sweep": name, "tracking": f"mlflow server ({server_workers} workers) on "
                                                              "PostgreSQL", "server_start_s": server_start_s,
            **ran, "optuna": facts, "mlflow": tracked, "sizes": sizes,
            "output": scan_output(_outputs(folder, workers), LOCK_PATTERNS),
            "other_output": scan_output(_outputs(folder, workers), OTHER_PATTERNS),
            "server_log": server_log, "postgres_log": pg_log}


# Server-side errors that the writer expects and handles, as they appear in PostgreSQL's log
EXPECTED = {
    "ix_studies_study_name": "create_study(load_if_exists=True) of a study that exists: Optuna inserts, then loads it",
    "pg_type_typname_nsp_index": "Optuna's tables created by several commands at once: mfexp retries",
    "already exists": "Optuna's tables created by several commands at once: mfexp retries",
    "version_info": "Optuna's tables created by several commands at once: mfexp retries",
    "alembic_version": "Optuna's tables created by several commands at once: mfexp retries",
    "uq_experiments_workspace_name": "the sweep's MLflow experiment created by several commands at once: mfexp "
                                     "uses the one that won",
    "experiment_tag_pk": "the new sweep experiment's UI tag (mlflow.experimentKind) set by several commands at "
                         "once: mfexp keeps the one that won, the same value (tracking.set_experiment)",
    "dataset_pk": "the same data parts logged (mlflow.log_inputs) into the sweep's experiment by several commands "
                  "at once: MLflow checks, then inserts; mfexp retries and the retry finds the one that won",
    "metric_pk": "MLflow's log_model copies the run's metrics onto the logged model; MLflow skips those it has",
    # psycopg logs this when it closes a pipeline while an error raised inside it is already on its
    # way up: a second line for one of the errors above, which PostgreSQL's log names (and which
    # must be explained there too, as the checks ask)
    "error ignored terminating <psycopg.Pipeline": "psycopg closing its pipeline after one of the expected "
                                                    "errors above, already raised in it",
}


def explain(kind: str) -> Optional[str]:
    return next((why for key, why in EXPECTED.items() if key in kind), None)


# --- verdicts ---------------------------------------------------------------------------------------
def judge(row: dict, n_trials: int, workers: int) -> dict[str, bool]:
    """Each check of a backend's run, True when it holds. `optuna`: exactly the budget counted,
    no FAIL, nothing left RUNNING or WAITING, numbers unique and contiguous, every trial owned by
    one of the commands, the reference trial enqueued once, no sampled configuration proposed
    twice (commands whose samplers share a seed would); `mlflow`: one trial run per Optuna trial and no other, none duplicated or
    left RUNNING, status and run id matching, no tracking gaps, one finished parent run per
    command, the best run evaluated and registered once; `workers`: every command exited 0 and no
    lock error, traceback or mfexp error in their output."""
    o, m = row["optuna"], row["mlflow"]
    states = o["by_state"]
    optuna_ok = (o["counted"] == n_trials and states.get("FAIL", 0) == 0 and states.get("RUNNING", 0) == 0
                 and states.get("WAITING", 0) == 0 and o["trials"] == n_trials and o["numbers_unique"]
                 and o["numbers_contiguous"] and o["trials_of_unknown_worker"] == 0 and o["reference_trials"] == 1
                 and o["repeated_configurations"] == 0)
    mlflow_ok = (m["trial_runs"] == o["trials"] and m["duplicate_trial_runs"] == 0 and m["running"] == 0
                 and m["trials_without_run"] == 0 and m["runs_without_trial"] == 0 and m["other_study"] == 0
                 and m["status_not_matching_state"] == 0 and m["run_id_not_matching"] == 0
                 and o["mlflow_gaps"] == 0 and m["parent_runs"] == workers and m["parents_finished"] == workers
                 and m["best_runs"] == 1 and m["registry_versions"] == 1 and m["other_runs"] == 0)
    workers_ok = (len(row["exit_codes"]) == workers and all(c == 0 for c in row["exit_codes"])
                  and row["output"]["lines"] == 0 and row["other_output"]["lines"] == 0)
    return {"optuna": optuna_ok, "mlflow": mlflow_ok, "workers": workers_ok}


def rates(row: dict) -> dict:
    o = row["optuna"]
    per_h = lambda n, s: round(n / s * 3600, 1) if s else None  # noqa: E731
    return {"trials_per_hour": per_h(o["counted"], row["wall_s"]),
            "trials_per_hour_search": per_h(o["counted"], o["search_s"]),
            "trials_per_hour_steady": per_h(o["steady_trials"], o["steady_s"])}


def targets_of(row: dict, n_trials: int, workers: int) -> list[dict]:
    b = row["backend"]
    if row.get("skipped"):
        return [common.target(f"{b}: {what}", goal, None, unit, None, f"skipped: {row['skipped']}")
                for what, goal, unit in (("counted trials, 4 commands", f"= {n_trials}", "trials"),
                                         ("MLflow trial runs = Optuna trials", "equal, no duplicate", "runs"),
                                         ("lock errors in the workers' output", "0", "lines"))]
    ok, o, m = judge(row, n_trials, workers), row["optuna"], row["mlflow"]
    states = ", ".join(f"{k} {v}" for k, v in o["by_state"].items())
    return [
        common.target(f"{b}: Optuna trials counted (COMPLETE+PRUNED), {workers} commands", f"= {n_trials}, no FAIL, "
                      "none left RUNNING", o["counted"], "trials", ok["optuna"],
                      f"{states}; numbers unique and 0..{o['trials'] - 1}: {o['numbers_contiguous']}; per command "
                      f"{o['per_worker']}; reference trials {o['reference_trials']}; configurations proposed twice "
                      f"{o['repeated_configurations']}"),
        common.target(f"{b}: MLflow trial runs = Optuna trials, none duplicated or left RUNNING", "= Optuna's",
                      m["trial_runs"], "runs", ok["mlflow"],
                      f"Optuna {o['trials']}; duplicates {m['duplicate_trial_runs']}; RUNNING {m['running']}; "
                      f"tracking gaps {o['mlflow_gaps']}; parents {m['parents_finished']}/{m['parent_runs']} "
                      f"finished; best runs {m['best_runs']}, registry versions {m['registry_versions']}"),
        common.target(f"{b}: lock errors and tracebacks in the workers' output", "0, every command exits 0",
                      row["output"]["lines"], "lines", ok["workers"],
                      f"exit codes {row['exit_codes']}; tracking failures "
                      f"{row['other_output']['by_pattern']['MLflow tracking failed']}"),
        common.target(f"{b}: trials/h, {workers} commands on {common.machine()['cores']} cores", "report",
                      rates(row)["trials_per_hour"], "trials/h", None,
                      f"{o['counted']} trials in {row['wall_s']:.0f} s, first start to last exit"),
    ]


# --- the section ------------------------------------------------------------------------------------
def parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_TRIALS} trials in all (unless --trials)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--trials", type=int, help=f"the sweep's budget, shared by the commands (default {TRIALS})")
    parser.add_argument("--workers", type=int, default=WORKERS, help="worker commands started at once")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="per trial")
    parser.add_argument("--timeout", type=float, help="seconds per backend before the workers are killed "
                                                       "(default 6 per trial, at least 900)")
    parser.add_argument("--keep", action="store_true", help="keep the stores and the workers' output")
    args = parser.parse_args(argv)
    args.trials = args.trials or (QUICK_TRIALS if args.quick else TRIALS)
    # the workers' time limit: 6 s a trial (about 1-3 s is expected), so that both backends end well
    # inside `python -m bench --timeout 7200`, which would kill this process but not its children
    args.timeout = args.timeout or max(900.0, 6.0 * args.trials)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse(argv)
    common.quiet_logs()
    started = time.perf_counter()
    rows = []
    for backend in args.backends:
        folder = common.scratch() / f"load-{backend}-{os.getpid()}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        common.say(SECTION, f"{backend}: {args.workers} worker commands, {args.trials} trials in all, in {folder}")
        try:
            if backend == "journal":
                row = run_journal(folder, args.trials, args.workers, args.epochs, args.timeout)
            else:
                server_workers = QUICK_SERVER_WORKERS if args.quick else SERVER_WORKERS
                row = run_postgres(folder, args.trials, args.workers, args.epochs, args.timeout, server_workers)
        finally:
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
        if not row.get("skipped"):
            row.update(rates(row), checks=judge(row, args.trials, args.workers))
            o = row["optuna"]
            common.say(SECTION, f"{backend}: {o['counted']}/{args.trials} counted ({o['by_state']}), MLflow "
                                f"{row['mlflow']['trial_runs']} trial runs, exit codes {row['exit_codes']}, "
                                f"{row['output']['lines']} lock/traceback lines; {row['wall_s']:.0f} s, "
                                f"{row['trials_per_hour']:,.0f} trials/h; checks {row['checks']}")
        else:
            common.say(SECTION, f"{backend}: skipped ({row['skipped']})")
        for key in ("run_ids", "states"):  # per-trial detail: only for the checks above
            row.get("optuna", {}).pop(key, None)
        rows.append(row)
    targets = [t for row in rows for t in targets_of(row, args.trials, args.workers)]
    notes = [
        f"Each backend: {args.workers} `python -m mfexp.sweep` commands started at the same moment on one sweep "
        f"(sweep.n_trials={args.trials}: the study's budget, shared), model {MODEL}, {args.epochs} epoch(s) per "
        "trial, batch 1024, k 32, adam, lr and reg sampled, no pruning, no early stopping, no blend; ML-100K u1; "
        "MXNet and OpenMP 1 thread per command. The reference trial (the tutorial's own plain: sgd, batch 64, "
        "k 64) is trial 0 of each, as in every sweep.",
        "journal: one sweep folder and journal file for all the commands (sweep.seed 0..W-1, as docs/scaling.md "
        "asks of invocations sharing a journal), one MLflow SQLite file migrated before they start, artifacts "
        "beside it. postgres: a throwaway PostgreSQL 127.0.0.1 cluster (fsync off: the database's disk "
        "writes cost nothing here) holding the Optuna database and the `mlflow server` backend database; each "
        "command in its own folder with the same command line; artifacts proxied by the server.",
        "Checks (each target's verdict): Optuna: exactly the budget counted, no FAIL, none left RUNNING or "
        "WAITING, trial numbers unique and contiguous, the reference trial once, no configuration proposed "
        "twice; MLflow: one trial run (tag optuna.trial_number) per "
        "Optuna trial, no duplicate (study, number), none RUNNING, status and mlflow_run_id matching Optuna, no "
        "tracking gap, one FINISHED parent run per command, the best trial evaluated and registered once; "
        "every command exits 0 with no line matching 'database is locked', 'deadlock', 'OperationalError', "
        "'Traceback', 'lock', 'MLflow tracking failed' or 'mfexp: error' in its output.",
        "trials/h: counted trials / (first command's start to last command's exit: imports, data, the trials, "
        "the end-of-sweep evaluation); search: / (first trial's start to last trial's end); steady: each "
        "command's first trial left out. Store sizes are after the run; a PostgreSQL database starts at "
        "the empty database's size (template1); with few trials, the per-trial growth is mostly the first "
        "pages of each table and index.",
    ] + ([f"quick: {args.trials} trials in all"] if args.quick else [])
    common.write_result(args.out or common.RESULTS / f"{SECTION}.json", SECTION, args.quick, started,
                        {"n_trials": args.trials, "workers": args.workers, "epochs": args.epochs, "model": MODEL,
                         "overrides": OVERRIDES, "rows": rows}, targets, notes)
    return 0


def _mib(n: Optional[int]) -> str:
    return "-" if n is None else f"{n / 2 ** 20:,.2f} MiB"


def render(result: dict) -> list[str]:
    f = result["figures"]
    lines = [f"{f['workers']} worker commands at once, {f['n_trials']} trials in all ({f['model']}, {f['epochs']} "
             "epoch(s) each):", "",
             "| backend | counted / budget | trials by state | per command | MLflow trial runs | duplicates | "
             "RUNNING left | lock errors | exit codes | wall (s) | trials/h | search trials/h | steady trials/h |",
             "|---|---:|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in f["rows"]:
        if r.get("skipped"):
            lines.append(f"| {r['backend']} | skipped: {r['skipped']} |" + " |" * 11)
            continue
        o, m = r["optuna"], r["mlflow"]
        states = ", ".join(f"{k} {v}" for k, v in o["by_state"].items())
        rate = lambda v: f"{v:,.0f}" if v else "-"  # noqa: E731
        lines.append(f"| {r['backend']} | {o['counted']} / {f['n_trials']} | {states} | "
                     f"{' '.join(map(str, o['per_worker']))} | {m['trial_runs']} | {m['duplicate_trial_runs']} | "
                     f"{m['running']} | {r['output']['lines']} | {' '.join(map(str, r['exit_codes']))} | "
                     f"{r['wall_s']:.0f} | {rate(r['trials_per_hour'])} | {rate(r['trials_per_hour_search'])} | "
                     f"{rate(r['trials_per_hour_steady'])} |")
    lines += ["", "Store sizes after the run (per trial: the store's growth over its empty size / trials):", "",
              "| backend | Optuna store | MLflow store | per trial (Optuna / MLflow) | MLflow artifacts | "
              "sweep folders |", "|---|---|---|---|---:|---:|"]
    for r in f["rows"]:
        if r.get("skipped"):
            continue
        s, n = r["sizes"], max(r["optuna"]["trials"], 1)
        per = (f"{(s['optuna_store_bytes'] - s['optuna_empty_bytes']) / n / 1024:,.1f} / "
               f"{(s['mlflow_store_bytes'] - s['mlflow_empty_bytes']) / n / 1024:,.1f} KiB")
        lines.append(f"| {r['backend']} | {s['optuna_store']} {_mib(s['optuna_store_bytes'])} | {s['mlflow_store']} "
                     f"{_mib(s['mlflow_store_bytes'])} | {per} | {_mib(s['artifacts_bytes'])} | "
                     f"{_mib(s['sweep_folders_bytes'])} |")
    for r in f["rows"]:
        logs = [(what, r[key]) for what, key in (("the mlflow server's log", "server_log"),
                                                  ("PostgreSQL's log", "postgres_log")) if r.get(key)]
        for what, scan in logs:
            kinds = "; ".join(f"{n}x `{kind}` ({explain(kind) or '**not explained**'})" for kind, n in scan["kinds"])
            said = f"{r['backend']}: {what} has {scan['lines']} error line(s)"
            lines += ["", said + (f": {kinds}." if kinds else ".")]
    empties = [f"{r['backend']}: Optuna {_mib(r['sizes']['optuna_empty_bytes'])}, MLflow "
               f"{_mib(r['sizes']['mlflow_empty_bytes'])}" for r in f["rows"] if not r.get("skipped")]
    if empties:
        lines += ["", f"Empty stores before the run (a new PostgreSQL database is a copy of template1; the MLflow "
                      f"SQLite file is migrated): {'; '.join(empties)}."]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
