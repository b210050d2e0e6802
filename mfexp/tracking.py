"""MLflow tracking for one run: params, per-epoch metrics, artifacts, a truthful status.

Knows MLflow, and of models only "a folder to log". Honours MLFLOW_TRACKING_URI; the default
store is MLflow's own (sqlite:///mlflow.db in the working directory).
"""
from __future__ import annotations

import contextlib
import logging
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

import mlflow
import yaml

from mfexp.config import TrackingConfig
from mfexp.errors import ConfigError, clause

log = logging.getLogger("mfexp.tracking")

_SECRET = re.compile(r"(://[^:/@\s]+:)([^@\s]+)(@)")
MAX_PARAM_LEN = 6000


def redact(text: str) -> str:
    """Hide the password of a URL such as postgresql://user:secret@host/db."""
    return _SECRET.sub(r"\1***\3", text)


def git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def configure(cfg: TrackingConfig) -> None:
    if cfg.uri:
        mlflow.set_tracking_uri(cfg.uri)


def tracking_uri() -> str:
    return redact(mlflow.get_tracking_uri())


def params_of(flat: dict[str, Any]) -> dict[str, str]:
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

    Tracking never stops training: when the store fails mid-run (a tracking server going away),
    the failure is logged once, later calls for this run are skipped, and `gaps` records what
    was lost; Optuna's storage stays the source of truth for sweeps."""

    def __init__(self, cfg: TrackingConfig):
        self.cfg = cfg
        self.run_id: Optional[str] = None
        self.gaps: list[str] = []

    def _safe(self, what: str, call, *args, **kwargs):
        if not self.cfg.enabled or (self.gaps and what != "end_run"):
            if self.gaps:
                self.gaps.append(what)
            return None
        try:
            return call(*args, **kwargs)
        except Exception as err:  # the store, not the training, failed
            if not self.gaps:
                log.warning("MLflow tracking failed at %s (%s: %s); training goes on, the run's record "
                            "has a gap", what, type(err).__name__, redact(str(err)).splitlines()[0][:200])
            self.gaps.append(what)
            return None

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
        active = self._safe("start_run", self._start, run_name, tags, experiment or self.cfg.experiment, nested)
        self.run_id = active.info.run_id if active is not None else None
        if self.run_id is None:
            self.gaps.append("the whole run")
        try:
            self._safe("log_params", mlflow.log_params, params_of(params))
            yield self
        except (KeyboardInterrupt, *killed_on):
            self._end("KILLED")
            raise
        except BaseException as err:
            self._safe("set_tag", mlflow.set_tag, "mfexp.error", redact(str(err))[:5000])
            self._end("FAILED")
            raise
        else:
            self._end("FINISHED")

    @staticmethod
    def _start(run_name, tags, experiment, nested):
        # experiment_id explicitly: when two processes create the experiment at once, MLflow 3.17's
        # set_experiment can return it without making it active (the run would land in Default)
        exp = mlflow.set_experiment(experiment)
        nested = nested or mlflow.active_run() is not None  # a trial inside the sweep's own process
        return mlflow.start_run(run_name=run_name, experiment_id=exp.experiment_id, nested=nested, tags=tags)

    def _end(self, status: str) -> None:
        if self.run_id is not None:
            if self._safe("end_run", mlflow.end_run, status) is None and self.gaps:
                # the store is gone: still leave the process with no active run
                active = mlflow.active_run()
                if active is not None and active.info.run_id == self.run_id:
                    mlflow.tracking.fluent._active_run_stack.get().pop()

    def log_metrics(self, metrics: dict[str, float], step: Optional[int] = None) -> None:
        if self.run_id is not None:
            self._safe("log_metrics", mlflow.log_metrics, metrics, step=step)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.run_id is not None:
            self._safe("set_tags", mlflow.set_tags, tags)

    def log_yaml(self, data: dict, name: str) -> None:
        if self.run_id is not None:
            self._safe("log_text", mlflow.log_text, yaml.safe_dump(data, sort_keys=False), name)

    def log_model(self, save_to_folder, example) -> None:
        """Log a model as MLflow pyfunc at artifact path `model`; `save_to_folder(path)` writes it."""
        if self.run_id is not None and self.cfg.log_model:
            self._safe("log_model", self._log_model, save_to_folder, example)

    @staticmethod
    def _log_model(save_to_folder, example) -> None:
        from mlflow.models import infer_signature

        from mfexp.pyfunc import MFModel

        with tempfile.TemporaryDirectory() as tmp:
            folder = save_to_folder(Path(tmp) / "mfexp_model")
            model = MFModel()
            model.load_context(type("Ctx", (), {"artifacts": {"mfexp_model": str(folder)}})())
            signature = infer_signature(example, model.predict(None, example))
            mlflow.pyfunc.log_model(
                name="model", python_model=str(Path(__file__).with_name("pyfunc_entry.py")), artifacts={"mfexp_model": str(folder)},
                signature=signature, input_example=example,
                code_paths=[str(Path(__file__).resolve().parent)],
                pip_requirements=_requirements())


def _requirements() -> list[str]:
    """The logged model's pip requirements: the installed MXNet build (mxnet or mxnet-cu112, the
    same module, never both), numpy, pandas and mlflow at their installed versions."""
    from importlib.metadata import PackageNotFoundError, version

    def pinned(dist: str):
        try:
            return f"{dist}=={version(dist)}"
        except PackageNotFoundError:
            return None

    mxnet = pinned("mxnet-cu112") or pinned("mxnet") or "mxnet==1.9.1"
    return [mxnet, pinned("numpy") or "numpy<1.24", pinned("pandas") or "pandas", pinned("mlflow") or "mlflow"]
