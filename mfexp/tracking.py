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


class Tracker:
    """One MLflow run, or nothing at all when tracking is disabled."""

    def __init__(self, cfg: TrackingConfig):
        self.cfg = cfg
        self.run_id: Optional[str] = None

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
        mlflow.set_experiment(experiment or self.cfg.experiment)
        nested = nested or mlflow.active_run() is not None  # a trial inside the sweep's own process
        active = mlflow.start_run(run_name=run_name, nested=nested, tags=tags)
        self.run_id = active.info.run_id
        try:
            mlflow.log_params(params_of(params))
            yield self
        except (KeyboardInterrupt, *killed_on):
            mlflow.end_run("KILLED")
            raise
        except BaseException as err:
            mlflow.set_tag("mfexp.error", redact(str(err))[:5000])
            mlflow.end_run("FAILED")
            raise
        else:
            mlflow.end_run("FINISHED")

    def log_metrics(self, metrics: dict[str, float], step: Optional[int] = None) -> None:
        if self.cfg.enabled:
            mlflow.log_metrics(metrics, step=step)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.cfg.enabled:
            mlflow.set_tags(tags)

    def log_yaml(self, data: dict, name: str) -> None:
        if self.cfg.enabled:
            mlflow.log_text(yaml.safe_dump(data, sort_keys=False), name)

    def log_model(self, save_to_folder, example) -> None:
        """Log a model as MLflow pyfunc at artifact path `model`; `save_to_folder(path)` writes it."""
        if not (self.cfg.enabled and self.cfg.log_model):
            return
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
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist, fallback in (("mxnet", "mxnet==1.9.1"), ("mxnet-cu112", None), ("numpy", "numpy<1.24"),
                           ("pandas", "pandas"), ("mlflow", "mlflow")):
        try:
            reqs.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            if fallback:
                reqs.append(fallback)
    return reqs
