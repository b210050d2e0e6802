"""Hydra glue shared by the two CLIs (mfexp.run, mfexp.sweep): the only Hydra-aware module
besides them. Registers the schema and turns a composed DictConfig into typed config."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from mfexp.config import Config

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def register_schema(name: str = "mfexp_schema", node: Any = Config) -> None:
    ConfigStore.instance().store(name=name, node=node)


def to_object(dcfg: DictConfig) -> Any:
    """The composed config as its dataclass (Config, or SweepAppConfig for sweeps), with the model
    node as its class's typed settings (unknown keys and wrong types refused, naming the key)."""
    from mfexp.models import to_settings

    obj = OmegaConf.to_object(dcfg)
    obj.model = to_settings(obj.model)
    return obj


def args_or_help(argv, doc: str):
    """The command line's arguments, or None after printing `doc` for -h/--help."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(doc)
        return None
    return args


def quiet_libraries() -> None:
    """Keep MLflow's and Alembic's start-up chatter out of the console."""
    for name in ("alembic", "mlflow", "urllib3", "git"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
    logging.getLogger("mlflow.models").setLevel(logging.ERROR)
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # A tracking server that went away must not stall training for minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    import warnings

    warnings.filterwarnings("ignore", message=".*Integer columns in Python cannot represent missing.*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    quiet_mxnet()


def quiet_mxnet() -> None:
    """Say MXNet's "Optimizer with lazy_update = True detected ..." note once, to /dev/null.

    It is not a Python warning but a C++ LOG(INFO) that libmxnet writes to stderr once per engine
    thread (common::LogOnce, MXNet 1.9.1), in the middle of the first sparse-gradient trial. One
    tiny sparse SGD step with stderr pointed at /dev/null uses up that once for the CPU engine
    thread (one per process unless MXNET_CPU_WORKER_NTHREADS says more); no random numbers drawn."""
    import sys

    import mxnet as mx
    from mxnet import autograd, gluon

    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        emb = gluon.nn.Embedding(2, 1, sparse_grad=True)
        emb.initialize(mx.init.Zero(), ctx=mx.cpu())
        trainer = gluon.Trainer(emb.collect_params(), "sgd", {"learning_rate": 0.1, "momentum": 0.9})
        with autograd.record():
            loss = emb(mx.nd.array([0])).sum()
        loss.backward()
        trainer.step(1)
        mx.nd.waitall()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
