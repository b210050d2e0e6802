"""MLflow tracking for one run: params, per-epoch metrics, artifacts, a truthful status.

Knows MLflow, and of models only "a folder to log". Honours MLFLOW_TRACKING_URI; the default
store is MLflow's own (sqlite:///mlflow.db in the working directory).
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Optional
from urllib.parse import urlsplit

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.types.schema import ColSpec, Schema
import yaml

from mfexp import interrupt
from mfexp.config import TrackingConfig
from mfexp.errors import ConfigError, clause
from mfexp.track.datasets import mlflow_inputs
from mfexp.pyfunc import MFModel

log = logging.getLogger("mfexp.track.tracker")
PACKAGE = Path(__file__).resolve().parents[1]  # mfexp/: the code every logged model carries

# The MLflow tags mfexp writes and reads, in one place: a trial's run links to its Optuna trial by the
# first three (as optuna's MLflowCallback names them); the rest are mfexp's own.
STUDY_TAG, TRIAL_TAG, STATE_TAG = "optuna.study_name", "optuna.trial_number", "optuna.trial_state"
FAIL_REASON_TAG = "mfexp.fail_reason"  # why a trial's run failed (redacted)
PRUNED_AT_TAG = "mfexp.pruned_at_epoch"
POPULATION_TAG = "mfexp.population"  # how many trials trained together with this one
MODEL_TAG = "mfexp.model"  # the model's name (conf/model/<name>.yaml)
BEST_TAG = "mfexp.best"  # "true" on the run of a sweep's chosen configuration, evaluated on the test part
REFIT_TAG = "mfexp.refit"  # "true" when that run was trained again on train + holdout
SWEEP_TAG = "mfexp.sweep"  # the sweep's name, on its parent run and registry versions
COMMAND_TAG = "mfexp.command"  # the command line (redacted)
BEST_MODEL_TAG = "mfexp.best_model"  # on the parent: the model with the lowest val RMSE
DEVICE_TAG = "mfexp.device"  # what train.device resolved to
AVERAGE_SEEDS_TAG = "mfexp.average_seeds"
FOLD_TAG = "mfexp.fold"  # the fold of a run trained on one fold of a cross-validation
FOLDS_TAG = "mfexp.folds"  # on the parent: the folds it averages, comma-separated
ERROR_TAG = "mfexp.error"  # what ended a run with an error (redacted)
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: nests a run under another
NOTE_TAG = "mlflow.note.content"  # MLflow's own: the run's description in the UI

# A URL's password: scheme://[user]:PASSWORD@host, the user name possibly empty (redis://:pw@host).
# The password runs to the last '@' of the authority (urllib reads `a:p@ss@host` as password
# 'p@ss'), so it stops only at what ends an authority: '/', '?', '#' or whitespace.
_SECRET = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)[^/?#\s]+@")
# ... or a password given in the query string (libpq's ?password=..., some drivers' &pwd=...)
_SECRET_PARAM = re.compile(r"(?P<head>[?&;](?:password|passwd|pwd)=)[^&#\s]+", re.IGNORECASE)
HIDDEN = "***"  # what a password is replaced with
MAX_PARAM_LEN = 6000
# MLflow 3's UI opens an experiment on its GenAI side (traces) unless told this is model training:
# the experiment tag decides when one is opened from the list, the URL parameter always.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
UI_QUERY = "workflowType=machine_learning"
DEFAULT_UI = "http://127.0.0.1:5000"  # where `make ui` serves a local store
_warned_psutil: list[bool] = []
RETRY_S = 10.0  # see retry_seconds()


def redact(text: str) -> str:
    """`text` with the password of every URL in it hidden, wherever the URL stands (a command line,
    an error message): postgresql://user:secret@host/db, redis://:secret@host/0,
    postgresql://host/db?password=secret. Everything else stays, the user name included."""
    text = _SECRET.sub(lambda m: f"{m['head']}{HIDDEN}@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m['head']}{HIDDEN}", text)


def redacted(value: Any) -> Any:
    """`value` with redact() applied to every string in it (nested dicts, lists and tuples)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redacted(v) for v in value)
    return value


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PACKAGE, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def configure(cfg: TrackingConfig) -> None:
    # MLflow's database store logs each error with its traceback before raising it; the Tracker
    # (or check_reachable) says it in one line instead.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    # With a tracking server MLflow prints "View run ... at: <tracking URI>/#/..." at each run's end,
    # the URI's password included (MLflow 3.17); mfexp prints its own link, without user or password.
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    if cfg.uri:
        mlflow.set_tracking_uri(cfg.uri)


def tracking_uri() -> str:
    return redact(mlflow.get_tracking_uri())


def ui_base(uri: Optional[str] = None) -> str:
    """The MLflow UI that shows `uri` (default: the current tracking URI): a tracking server
    serves its own UI; a local store is shown by `make ui` on 127.0.0.1:5000."""
    uri = uri if uri is not None else mlflow.get_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return DEFAULT_UI
    return re.sub(r"^(https?://)[^/?#@\s]*@", r"\1", uri).rstrip("/")  # a link to open: no user, no password


def experiment_link(experiment_id: str, base: Optional[str] = None, run_id: Optional[str] = None) -> str:
    """The page of an experiment's runs (or of one run) in the MLflow UI, on the training side."""
    path = f"#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    return f"{redact((base or ui_base()).rstrip('/'))}/{path}?{UI_QUERY}"


def experiment_link_by_name(name: str) -> Optional[str]:
    """experiment_link of the experiment called `name`; None when the store has none of that name."""
    exp = mlflow.get_experiment_by_name(name)
    return experiment_link(exp.experiment_id) if exp else None


def download(run_id: str, artifact_path: str, dst: str) -> str:
    """A run's artifact (a file or a folder) copied into `dst`; returns its local path."""
    return mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{artifact_path}", dst_path=dst)


def use_store(uri: str) -> None:
    """Read and write runs in the tracking store at `uri` from now on (a command's tracking.uri=)."""
    mlflow.set_tracking_uri(uri)


def run_link(run_id: Optional[str]) -> str:
    """The page of the runs of `run_id`'s experiment, or a note when the store cannot say."""
    try:
        return experiment_link(mlflow.get_run(run_id).info.experiment_id)
    except Exception:  # noqa: BLE001 -- no run (the store failed mid-run): no link, not an error
        return "(no link: the tracking store did not record this run)"


def set_experiment(name: str):
    """mlflow.set_experiment, tagging the experiment as model training (once) for the UI."""
    exp = mlflow.set_experiment(name)
    if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        try:
            mlflow.tracking.MlflowClient().set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        except MlflowException:
            # two processes tagging a new experiment at once: the other one's tag is the same
            # (PostgreSQL answers the second insert with a unique violation); the tag is only for the UI
            log.debug("experiment %s: tag %s set by another process", name, EXPERIMENT_KIND_TAG)
    return exp


def params_of(flat: dict[str, Any]) -> dict[str, str]:
    """A run's params as MLflow stores them: strings, no password (sweep.storage, tracking.uri)."""
    return {k: redact(str(v))[:MAX_PARAM_LEN] for k, v in flat.items()}


def check_reachable(cfg: TrackingConfig) -> None:
    """Fail before any training when the tracking store cannot be used, naming what to fix."""
    if not cfg.enabled:
        return
    configure(cfg)
    try:
        mlflow.tracking.MlflowClient().search_experiments(max_results=1)
    except Exception as err:
        errno = re.search(r"\[Errno -?\d+\][^'\")\]]+", str(err))  # the cause, under urllib3's wrapping
        detail = errno.group(0).strip() if errno else f"{type(err).__name__}: {clause(redact(str(err)))}"
        raise ConfigError(f"cannot use the MLflow tracking store {tracking_uri()}: {detail}. Start the tracking server, fix "
                          "MLFLOW_TRACKING_URI or tracking.uri, or run with tracking.enabled=false.") from err


class Tracker:
    """One MLflow run, or nothing at all when tracking is disabled.

    Tracking never stops training: when the store fails mid-run (a tracking server going away,
    a full disk under it), the failure is logged once and the calls after it are skipped, but
    at most for `retry_seconds()`: then the next call tries again, and when the store answers
    (the server restarted, space freed) the run is recorded again. `gaps` lists each call that
    was missed (metrics with their epoch), `gap_summary()` says it in one line; Optuna's storage
    stays the source of truth for sweeps. No password reaches the store: params, tags (and so the
    run's description) and YAML artifacts pass through redact()."""

    def __init__(self, cfg: TrackingConfig):
        self.cfg = cfg
        self.run_id: Optional[str] = None
        self.gaps: list[str] = []
        self._missed: list[tuple[str, Optional[int]]] = []
        self._missed_keys: dict[int, list[str]] = {}  # epoch -> the metric keys of its missed log_metrics
        self._down_since: Optional[float] = None  # monotonic time of the last failed call

    def _safe(self, what: str, call, *args, **kwargs):
        if not self.cfg.enabled:
            return None
        step = kwargs.get("step")
        if (self._down_since is not None and what != "end_run"
                and time.monotonic() - self._down_since < retry_seconds()):
            self._miss(what, step)
            return None
        try:
            result = _with_retries(call, *args, **kwargs)
        except Exception as err:  # the store, not the training, failed
            if self._down_since is None:
                log.warning("MLflow tracking failed at %s (%s: %s); training goes on, the run's record "
                            "has a gap until the store answers again", what, type(err).__name__, _reason(err))
            self._down_since = time.monotonic()
            self._miss(what, step)
            if what == "log_metrics" and args and step is not None:
                self._missed_keys.setdefault(step, list(args[0]))
            return None
        if self._down_since is not None:
            self._down_since = None
            self._reconcile()
            log.warning("MLflow tracking is back (at %s); missed until then: %s", what, self.gap_summary())
        return result

    def _reconcile(self) -> None:
        """A call whose answer was lost (the store went away just after carrying it out) may be on
        record although it failed here: ask the store which missed epochs' metrics it has, and keep
        only what it lacks in the gaps."""
        steps = [step for what, step in self._missed if what == "log_metrics" and step in self._missed_keys]
        if not steps or self.run_id is None:
            return
        try:
            client = mlflow.tracking.MlflowClient()
            have = {m.step for m in client.get_metric_history(self.run_id, self._missed_keys[steps[0]][0])}
        except Exception:  # noqa: BLE001 -- without an answer the gaps stay as they are (an over-count at worst)
            return
        recorded = {s for s in steps if s in have}  # an epoch's metrics are one call: all on record, or none
        self._missed = [(w, s) for w, s in self._missed if not (w == "log_metrics" and s in recorded)]
        self.gaps = [g for g in self.gaps if not any(g == f"log_metrics epoch {s}" for s in recorded)]

    def _miss(self, what: str, step: Optional[int]) -> None:
        self._missed.append((what, step))
        self.gaps.append(what if step is None else f"{what} epoch {step}")

    def gap_summary(self) -> str:
        """What this run's record lacks, e.g. 'log_metrics at epochs 4-6, 9; set_tags'."""
        steps: dict[str, list[int]] = {}
        without_step: set[str] = set()
        for what, step in self._missed:
            steps.setdefault(what, [])
            if step is None:
                without_step.add(what)
            else:
                steps[what].append(step)
        parts = []
        for what, found in steps.items():
            at = f" at epochs {_ranges(found)}" if found else ""
            parts.append(f"{what}{at}{' and without an epoch' if found and what in without_step else ''}")
        return "; ".join(parts)

    @contextlib.contextmanager
    def run(self, *, run_name: Optional[str], params: dict[str, Any], tags: dict[str, str],
            experiment: Optional[str] = None, nested: bool = False,
            killed_on: tuple[type[BaseException], ...] = ()) -> Iterator["Tracker"]:
        """An MLflow run around the block: FINISHED, FAILED on an error, KILLED on Ctrl-C or on
        one of `killed_on` (a pruned trial)."""
        if not self.cfg.enabled:
            yield self
            return
        configure(self.cfg)
        active = self._safe("start_run", self._start, run_name, redacted(tags), experiment or self.cfg.experiment,
                            nested, self._system_metrics())
        self.run_id = active.info.run_id if active is not None else None
        if self.run_id is None:  # no run to record anything in: one entry says it all
            self._missed, self.gaps, self._missed_keys = [], [], {}
            self._miss("the whole run", None)
        try:
            if self.run_id is not None:
                self._safe("log_params", mlflow.log_params, params_of(params))
            yield self
        except (KeyboardInterrupt, *killed_on):
            self._end("KILLED")
            raise
        except BaseException as err:
            self._safe("set_tag", mlflow.set_tag, ERROR_TAG, redact(str(err))[:5000])
            self._end("FAILED")
            raise
        else:
            self._end("FINISHED")

    @contextlib.contextmanager
    def reopen(self, run_id: Optional[str]) -> Iterator["Tracker"]:
        """An ended run (a sweep's best run) made the active run again, to add figures to it and
        nest new runs under it: MLflow names a new run's parent after the active run, whatever
        tag it is given. It ends FINISHED again, also when a run nested in it fails (that run
        carries its own FAILED status)."""
        if not self.cfg.enabled or run_id is None:
            yield self
            return
        configure(self.cfg)
        active = self._safe("reopen_run", mlflow.start_run, run_id=run_id, nested=True)
        self.run_id = active.info.run_id if active is not None else None
        try:
            yield self
        finally:
            self._end("FINISHED")

    def _system_metrics(self) -> bool:
        """Whether this run records MLflow's system metrics; sets their sampling interval."""
        if not self.cfg.system_metrics:
            return False

        if importlib.util.find_spec("psutil") is None:
            if not _warned_psutil:
                _warned_psutil.append(True)
                log.warning("tracking.system_metrics needs the psutil package (pip install psutil, part of "
                            "make install); runs go on without system metrics")
            return False
        mlflow.set_system_metrics_sampling_interval(self.cfg.system_metrics_interval)
        return True

    @staticmethod
    def _start(run_name, tags, experiment, nested, system_metrics=False):
        # experiment_id explicitly: when two processes create the experiment at once, MLflow 3.17's
        # set_experiment can return it without making it active (the run would land in Default)
        exp = set_experiment(experiment)
        nested = nested or mlflow.active_run() is not None  # a trial inside the sweep's own process
        return mlflow.start_run(run_name=run_name, experiment_id=exp.experiment_id, nested=nested, tags=tags,
                                log_system_metrics=system_metrics)

    def _end(self, status: str) -> None:
        """The run's status by its id (retried on a locked store), then the run made inactive.
        mlflow.end_run() is not retried: MLflow 3.17's pops the active-run stack before it writes the
        status, so a retry after a "database is locked" would end the run below ours (a sweep's parent
        run, when a trial runs in the sweep's own process) with our status and leave ours RUNNING
        (tests/test_visibility.py)."""
        if self.run_id is None:
            return
        self._safe("end_run", self._terminate, self.run_id, status)
        active = mlflow.active_run()
        if active is not None and active.info.run_id == self.run_id:
            try:  # pops our run and stops its system-metrics sampler; its own status write repeats ours
                mlflow.end_run(status)
            except Exception:  # noqa: BLE001 -- the store is gone or locked: the status is ours to record (above)
                pass

    @staticmethod
    def _terminate(run_id: str, status: str) -> None:
        mlflow.tracking.MlflowClient().set_terminated(run_id, status)

    def log_metrics(self, metrics: dict[str, float], step: Optional[int] = None) -> None:
        if self.run_id is not None:
            self._safe("log_metrics", mlflow.log_metrics, metrics, step=step)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.run_id is not None:
            self._safe("set_tags", mlflow.set_tags, redacted(tags))

    def log_datasets(self, data, data_cfg, test: bool = True) -> None:
        """mlflow.log_input for the train part, the validation holdout and (when `test`) the test part."""
        if self.run_id is not None:
            self._safe("log_inputs", self._log_datasets, data, data_cfg, test)

    @staticmethod
    def _log_datasets(data, data_cfg, test: bool) -> None:
        datasets, contexts = mlflow_inputs(data, data_cfg, test)
        if datasets:
            mlflow.log_inputs(datasets=datasets, contexts=contexts, tags_list=[None] * len(datasets))

    def log_yaml(self, data: dict, name: str) -> None:
        if self.run_id is not None:
            self._safe("log_text", mlflow.log_text, yaml.safe_dump(redacted(data), sort_keys=False), name)

    def log_artifact(self, path, artifact_path: Optional[str] = None) -> None:
        if self.run_id is not None:
            self._safe("log_artifact", mlflow.log_artifact, str(path), artifact_path=artifact_path)

    def log_model(self, save_to_folder, example, code_paths: tuple[str, ...] = ()) -> None:
        """Log a model as MLflow pyfunc at artifact path `model`; `save_to_folder(path)` writes it.
        `code_paths`: packages besides mfexp the model needs when loaded elsewhere (a plugin's)."""
        if self.run_id is not None and self.cfg.log_model:
            self._safe("log_model", self._log_model, save_to_folder, example, code_paths)

    @staticmethod
    def _log_model(save_to_folder, example, code_paths: tuple[str, ...] = ()) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            folder = save_to_folder(Path(tmp) / "mfexp_model")
            model = MFModel()
            model.load_context(type("Ctx", (), {"artifacts": {"mfexp_model": str(folder)}})())
            signature = infer_signature(example, model.predict(None, example))
            # an optional rating time (unix seconds) for models that read the day; absent: each
            # user's last training day

            signature.inputs = Schema([*signature.inputs.inputs, ColSpec("long", "timestamp", required=False)])
            mlflow.pyfunc.log_model(
                name="model", python_model=str(PACKAGE / "pyfunc_entry.py"), artifacts={"mfexp_model": str(folder)},
                signature=signature, input_example=example,
                code_paths=[str(PACKAGE), *code_paths],
                pip_requirements=_requirements())


def _reason(err: Exception) -> str:
    """The telling line of a store error (SQLAlchemy puts its autoflush note before the cause)."""
    lines = [line for line in redact(str(err)).splitlines() if line.strip()]
    telling = [line for line in lines if not line.startswith("(raised as a result of")]
    return (telling or lines or [""])[0][:300]


# Store errors that another process's write at the same moment causes, and that the same call
# retried a moment later does not meet: SQLite's writer lock, and MLflow's get-or-create of a
# dataset (two commands logging the same data set at once: one insert loses with IntegrityError,
# seen once in 400 trials of four commands on one SQLite store, `python -m bench --only load`).
# Each store call is one transaction, rolled back on the error, so trying it again is safe.
TRANSIENT = ("database is locked", "UNIQUE constraint failed", "duplicate key value violates unique constraint")
RETRY_DELAYS_S = (0.1, 0.3, 1.0, 3.0)


def _with_retries(call, *args, **kwargs):
    # a database store's call runs whole: a Ctrl-C / SIGTERM inside its transaction would leave the
    # connection holding the lock, and the next call (the trial's FAIL, the run's KILLED) would wait on
    # it for ever; it stops the process as soon as the call returns (a second signal at once)
    database = _database_store()
    for delay in (*RETRY_DELAYS_S, None):
        try:
            with interrupt.deferred(second_at_once=True) if database else contextlib.nullcontext():
                return call(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 -- re-raised unless it is a race another try survives
            if delay is None or not any(t in str(err) for t in TRANSIENT):
                raise
            time.sleep(delay)


DATABASES = ("sqlite", "postgresql", "mysql", "mssql")  # MLflow's SQLAlchemy store; `dialect+driver://` too


def _database_store() -> bool:
    """True when MLflow tracks into a database (its SQLAlchemy store), not a server or a folder."""
    return urlsplit(mlflow.get_tracking_uri()).scheme.split("+")[0] in DATABASES


def retry_seconds() -> float:
    """After a failed call, how long a run skips the store before it tries again (default 10 s;
    MFEXP_TRACKING_RETRY_S overrides). Each try against a server that is down costs its time-out."""
    raw = os.environ.get("MFEXP_TRACKING_RETRY_S", "").strip()
    try:
        return max(float(raw), 0.0) if raw else RETRY_S
    except ValueError:
        raise ConfigError(f"MFEXP_TRACKING_RETRY_S must be a number of seconds, got {raw!r}.") from None


def _ranges(steps: list[int]) -> str:
    """[3, 4, 5, 9] -> '3-5, 9'."""
    out: list[str] = []
    ordered = sorted(set(steps))
    start = prev = ordered[0]
    for step in [*ordered[1:], None]:
        if step is not None and step == prev + 1:
            prev = step
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if step is not None:
            start = prev = step
    return ", ".join(out)


def _requirements() -> list[str]:
    """The logged model's pip requirements: the installed MXNet build (mxnet or mxnet-cu112, the
    same module, never both), numpy, pandas and mlflow at their installed versions."""
    def pinned(dist: str):
        try:
            return f"{dist}=={importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            return None

    mxnet = pinned("mxnet-cu112") or pinned("mxnet") or "mxnet==1.9.1"
    return [mxnet, pinned("numpy") or "numpy<1.24", pinned("pandas") or "pandas", pinned("mlflow") or "mlflow"]


def ui_links(base: str) -> list[str]:
    """One line per mfexp experiment in the store: its name and the page of its runs under `base`.
    Experiments recorded before mfexp tagged them get the tag now, so the list opens them right."""
    client = mlflow.tracking.MlflowClient()
    lines = []
    for exp in client.search_experiments(filter_string="name LIKE 'mfexp%'", order_by=["last_update_time DESC"]):
        if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        lines.append(f"  {exp.name}: {experiment_link(exp.experiment_id, base)}")
    return lines


def kill_trial_run(study_name: str, number: int, params: dict, reason: str, *, run_id: Optional[str] = None,
                   headed: Optional[dict] = None) -> None:
    """Mark the MLflow run of Optuna trial `number` of `study_name`, whose worker died, as that trial
    now is: tags optuna.trial_state FAIL and the reason, status KILLED. Also when the worker died after
    ending the run (FINISHED, or KILLED with the PRUNED tag of a pruned trial) but before Optuna
    recorded the trial, which is FAIL now and retried: the run must not pass for a finished or pruned
    trial. A run that failed on its
    own (status FAILED, or the FAIL tag of an interrupted trial) keeps its reason. Without `run_id`
    (its worker died before it recorded one) the run is looked for where it was `headed` ({experiment,
    run_name, parent}), and recorded there, KILLED, if it was never started. MLflow errors are logged,
    never raised: the sweep goes on."""
    if not run_id and not headed:
        return  # nowhere to look (nor a tracking store to open)
    try:
        client = mlflow.tracking.MlflowClient()
        if not run_id:  # its worker died before it recorded a run: look where the run was headed
            experiment = client.get_experiment_by_name(headed["experiment"])
            if experiment is None:
                return
            run_id = _started_run(client, experiment.experiment_id, number, study_name)
            if not run_id:
                _record_lost_member(client, experiment.experiment_id, headed, number, params, reason, study_name)
                return
        run = client.get_run(run_id)
        if run.info.status == "FAILED" or run.data.tags.get(STATE_TAG) == "FAIL":
            return  # it failed on its own: its own end said more
        client.set_tag(run_id, STATE_TAG, "FAIL")
        client.set_tag(run_id, FAIL_REASON_TAG, reason)
        if run.info.status in ("RUNNING", "FINISHED"):
            client.set_terminated(run_id, "KILLED")
    except Exception as err:  # noqa: BLE001 - an unreachable tracking server must not stop the sweep
        log.warning("could not mark the MLflow run of trial %d KILLED: %s: %s", number,
                    type(err).__name__, redact(str(err)).splitlines()[0] if str(err) else "")


def _started_run(client, experiment_id: str, number: int, study_name: str) -> Optional[str]:
    """The run a worker started for a trial before it could record the run's id on the trial (it died
    in between), found by the trial's tags in the experiment the trial was headed for; else None."""
    runs = client.search_runs([experiment_id], max_results=1, filter_string=(
        f"tags.`{STUDY_TAG}` = '{study_name}' and tags.`{TRIAL_TAG}` = '{number}'"))
    return runs[0].info.run_id if runs else None


def _record_lost_member(client, experiment_id: str, pending: dict, number: int, params: dict, reason: str,
                        study_name: str) -> None:
    """A trial whose worker died before it started the trial's MLflow run (a population member writes
    its run as it leaves the population): record one, KILLED, with the trial's params and the reason,
    where the run was headed (`pending`), so that every trial Optuna knows has its run."""
    try:
        tags = {STUDY_TAG: study_name, TRIAL_TAG: str(number), STATE_TAG: "FAIL",
                FAIL_REASON_TAG: reason}
        if pending.get("parent"):
            tags[PARENT_TAG] = pending["parent"]
        run = client.create_run(experiment_id, tags=tags, run_name=pending["run_name"])
        for name, value in params.items():
            client.log_param(run.info.run_id, name, value)
        client.set_terminated(run.info.run_id, "KILLED")
    except Exception as err:  # noqa: BLE001 - an unreachable tracking server must not stop the sweep
        log.warning("could not record the MLflow run of trial %d, lost with its worker: %s: %s", number,
                    type(err).__name__, redact(str(err)).splitlines()[0] if str(err) else "")

