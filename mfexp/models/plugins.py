"""From `model: {_target_: ..., name: ..., <settings>}` to a model class and its typed settings.

`_target_` is a dotted path to a class that subclasses `Recommender`, in mfexp or anywhere
importable (a plugin of your own). Its `Settings` dataclass types the rest of the node: a key it
lacks or a value of the wrong type is refused here, naming the key, before anything trains.
"""
from __future__ import annotations

import importlib
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
import yaml

from mfexp.config import Config, validate_typed
from mfexp.errors import ConfigError
from mfexp.models.base import ModelData, ModelSettings, Recommender

# Models logged before models were plugins (meta.json format 1) name no _target_.
LEGACY_TARGETS = {"plain": "mfexp.models.dot.DotProduct", "mlp": "mfexp.models.towers.TowerMLP",
                  "dropout": "mfexp.models.towers.TowerMLP", "biased": "mfexp.models.biased.BiasedMF"}


def model_class(target: Any) -> type:
    """The Recommender class `target` names (model._target_)."""
    if not isinstance(target, str) or "." not in target:
        raise ConfigError(f"model._target_ must be a dotted class path such as mfexp.models.fm.FM, got {target!r}. "
                          "Set it in conf/model/<name>.yaml.")
    module_name, _, attr = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or any error raised while importing the plugin
        raise ConfigError(f"model._target_={target}: cannot import {module_name} "
                          f"({type(err).__name__}: {err}). Check the path and that the module is importable.") from err
    cls = getattr(module, attr, None)
    if cls is None:
        raise ConfigError(f"model._target_={target}: module {module_name} has no {attr}.")
    if not (isinstance(cls, type) and issubclass(cls, Recommender)):
        raise ConfigError(f"model._target_={target} is not a model: it must subclass "
                          "mfexp.models.Recommender (see docs/models.md, 'Add your own model').")
    return cls


def typed_node(node: Any) -> DictConfig:
    """The model node merged into its class's Settings schema: unknown keys and wrong types fail."""
    if isinstance(node, ModelSettings):
        return OmegaConf.structured(node)
    if not isinstance(node, (Mapping, DictConfig)):
        raise ConfigError(f"model must be a mapping with _target_, got {node!r}.")
    target = node.get("_target_") or LEGACY_TARGETS.get(str(node.get("name")))
    cls = model_class(target)
    try:
        schema = OmegaConf.structured(cls.Settings)
        values = OmegaConf.create(dict(node) if not isinstance(node, DictConfig) else node)
        with_target = OmegaConf.merge(schema, values, {"_target_": target})
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or getattr(err, "key", None)
        known = ", ".join(f for f in schema.keys() if f != "_target_")
        if err.__class__.__name__ == "ConfigKeyError":
            raise ConfigError(f"model.{key} is not a setting of model._target_={target} (its settings: {known}). "
                              "Fix the key in conf/model/ or on the command line.") from None
        raise ConfigError(f"model.{key}: {str(err).splitlines()[0]} (model._target_={target}). "
                          "Fix the value in conf/model/ or on the command line.") from None
    if not with_target.name:
        raise ConfigError(f"model.name is empty (model._target_={target}): give the model a short name in its YAML.")
    return with_target


def to_settings(node: Any) -> ModelSettings:
    """A model node (dict, DictConfig or Settings) as its class's Settings dataclass."""
    if isinstance(node, ModelSettings) and type(node) is not ModelSettings:
        return node
    return OmegaConf.to_object(typed_node(node))


CONF_MODELS = Path(__file__).resolve().parents[2] / "conf" / "model"


def validate(cfg: Config) -> Config:
    """The whole config checked, its model node typed as its class's Settings (in place and returned);
    a bad key is a ConfigError that names it."""
    cfg.model = to_settings(cfg.model)
    return validate_typed(cfg)


def named(name: str, **values: Any) -> ModelSettings:
    """The settings of conf/model/<name>.yaml with `values` on top (for tests, benchmarks, notebooks)."""
    path = CONF_MODELS / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no model named {name!r}: {path} does not exist.")
    return to_settings({**yaml.safe_load(path.read_text()), **values})


def settings_dict(settings: ModelSettings) -> dict[str, Any]:
    return asdict(settings) if is_dataclass(settings) else dict(settings)


def build_model(settings: ModelSettings, data: ModelData, sparse_grad: bool = False):
    """The network `settings` describes, not yet initialized."""
    cls = model_class(settings._target_)
    try:
        return cls(settings, data, sparse_grad=sparse_grad)
    except ValueError as err:  # a model's own "cannot work with this data" (e.g. no side features)
        raise ConfigError(f"model {settings.name} ({settings._target_}): {err}") from err


def build_for_data(settings: ModelSettings, dataset, sparse_grad: bool = False):
    """The network for a Dataset: its ModelData holds just what the model's needs name."""
    needs = model_class(settings._target_).needs_for(settings)
    return build_model(settings, ModelData.from_dataset(dataset, needs), sparse_grad)


def code_paths(settings: ModelSettings) -> tuple[str, ...]:
    """The top-level package folder of a plugin model defined outside mfexp, for a logged model
    to carry (MLflow `code_paths`), so it loads where that package is not installed."""
    top = settings._target_.split(".")[0]
    if top == "mfexp":
        return ()
    module = importlib.import_module(top)
    if hasattr(module, "__path__"):  # a package, regular or namespace (no __init__.py)
        return (str(Path(next(iter(module.__path__))).resolve()),)
    return (str(Path(module.__file__).resolve()),)
