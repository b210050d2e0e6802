"""The sampler and the pruner of a sweep's studies, built from `_target_` nodes.

`sweep.sampler` and `sweep.pruner` name an entry of `sweep.samplers` / `sweep.pruners` (conf/sweep.yaml:
tpe, random, qmc, grid, gp, cmaes; median, forecast, hyperband, successive-halving, none). Each entry
is a class path with its keyword arguments; `sweep.sampler_args` / `sweep.pruner_args` go over them.
Only what the run alone knows is added here, where the class takes it and the entry does not set it:
the sampler's seed (one per worker), TPE's constant liar (on when several workers share a study), the
grid's search space, and the pruner's epoch budget (max_resource, max_epochs). A sampler or pruner of
your own is one more entry: `+sweep.samplers.mine={_target_:pkg.MySampler}` with `sweep.sampler=mine`.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import socket
import warnings
import zlib
from typing import Any, Optional

import optuna

from mfexp.config import SweepConfig
from mfexp.errors import ConfigError

# The classes that need a package Optuna does not install, and how to get it.
NEEDS = {"optuna.samplers.GPSampler": ("torch", "pip install torch --index-url https://download.pytorch.org/whl/cpu "
                                                "(into .venv; the CPU build: PyPI's default build brings CUDA, about 5 GB)"),
         "optuna.samplers.CmaEsSampler": ("cmaes", "pip install cmaes (into .venv)")}


def make_sampler(sweep: SweepConfig, worker: int = 0, grid: Optional[dict] = None) -> optuna.samplers.BaseSampler:
    """The sampler `sweep.sampler` names, seeded for `worker` so that workers never propose the same points."""
    seed = sweep.seed + 1000 * worker
    if sweep.storage and not sweep.storage.startswith("sqlite"):
        # a server-backed storage: processes on other machines join with the same worker index
        seed = (seed + 10_000 * zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode())) % 2**32
    runtime = {"seed": seed, "constant_liar": sweep.n_workers > 1 or bool(sweep.storage), "search_space": grid or {}}
    return _build("sampler", sweep.sampler, sweep.samplers, sweep.sampler_args, runtime)


def make_pruner(sweep: SweepConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    """The pruner `sweep.pruner` names, for trials of at most `max_epochs` epochs."""
    return _build("pruner", sweep.pruner, sweep.pruners, sweep.pruner_args,
                  {"max_resource": max_epochs, "max_epochs": max_epochs})


def _build(kind: str, name: str, table: dict[str, Any], args: Optional[dict], runtime: dict[str, Any]) -> Any:
    node = table.get(name)
    if not isinstance(node, dict) or "_target_" not in node:
        raise ConfigError(f"sweep.{kind} must be one of {', '.join(table)} (sweep.{kind}s in conf/sweep.yaml), got "
                          f"{name!r}. Choose one, or add yours: '+sweep.{kind}s.{name}={{_target_:pkg.Class}}'.")
    target = str(node["_target_"])
    if target in NEEDS and importlib.util.find_spec(NEEDS[target][0]) is None:
        module, how = NEEDS[target]
        raise ConfigError(f"sweep.{kind}={name} needs the '{module}' package, which is not installed: {how}, or "
                          f"choose another {kind} ({', '.join(k for k, v in table.items() if v.get('_target_') not in NEEDS)}).")
    module_name, _, attr = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(f"sweep.{kind}s.{name}._target_={target}: cannot import it ({type(err).__name__}: {err}). "
                          "Check the path.") from None
    accepted = inspect.signature(cls).parameters
    kwargs = {k: v for k, v in node.items() if k != "_target_"}
    kwargs = {**{k: v for k, v in runtime.items() if k in accepted and k not in kwargs}, **kwargs, **dict(args or {})}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return cls(**kwargs)
    except (TypeError, ValueError) as err:
        what = f"sweep.{kind}_args={dict(args)} do not" if args else f"sweep.{kind}s.{name} does not"
        raise ConfigError(f"{what} fit the {name} {kind} ({cls.__name__}): {err}. "
                          f"See the documentation of {target}.") from None
