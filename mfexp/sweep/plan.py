"""From a command line to a sweep's plan: the composed config, validated, and each model's base
config and search space (its class's default < sweep.space.common < sweep.space.<model> < the
command line). `python -m mfexp.sweep` (mfexp/sweep/__main__.py) builds one; so do the benchmarks
and the tests, with `build_plan`.
"""
from __future__ import annotations

import logging
import shlex
from dataclasses import replace
from typing import Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from mfexp import cli
from mfexp.config import Config, SweepAppConfig, sweep_folds, validate_sweep
from mfexp.errors import ConfigError
from mfexp.models import model_class, to_settings, typed_node, validate
from mfexp.sweep.objective import apply_params
from mfexp.sweep.runner import SweepPlan, assign_devices
from mfexp.sweep.search import make_pruner, make_sampler
from mfexp.sweep.space import GRAMMAR_HINT, merge_space_overrides, parse_space
from mfexp.track.tracker import redact

log = logging.getLogger("mfexp.sweep")
PROG = "python -m mfexp.sweep"


def split_overrides(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """(config overrides, search-space overrides): a value like choice(...) edits the space."""
    parser = OverridesParser.create()
    plain, space = [], []
    for arg in args:
        try:
            parsed = parser.parse_overrides([arg])[0]
        except HydraException as err:
            raise ConfigError(f"cannot parse an override ({cli.parse_detail(err)}) in {arg!r}. Write key=value; "
                              f"for the search space, {GRAMMAR_HINT} Quote the whole override for the "
                              "shell.") from err
        (space if parsed.is_sweep_override() else plain).append(arg)
    return plain, space


def compose_config(overrides: Sequence[str]) -> DictConfig:
    cli.register_schema("mfexp_sweep_schema", SweepAppConfig)
    cli.register_schema()
    return cli.compose("sweep", overrides, PROG, schema=SweepAppConfig)


def build_plan(args: Sequence[str]):
    return compose_plan(args)[0]


def compose_plan(args: Sequence[str]):
    """(the plan, the composed config, each model's space as written): everything checked, nothing run."""
    plain, space_overrides = split_overrides(args)
    root = compose_config(plain)
    app: SweepAppConfig = cli.to_object(root)
    sweep = validate_sweep(app.sweep)
    validate(app)
    sweep_folds(sweep, app.data)  # sweep.folds must name folds of the data, besides the one chosen on
    assign_devices(sweep, app.train.device)  # auto: one worker per GPU MXNet sees

    make_pruner(sweep, app.train.epochs)  # the pruner and the sampler must exist and take their args before
    make_sampler(sweep)                   # anything runs
    if app.data.val_fraction <= 0:
        raise ConfigError("a sweep chooses on the validation holdout: data.val_fraction must be > 0 "
                          "(the test part is never used to choose).")
    unknown = [s for s in sweep.space if not str(s).isidentifier()]
    if unknown:
        raise ConfigError(f"sweep.space has sections {sorted(unknown)}: use 'common' or a model name.")
    given = command_line_values(plain)
    bases, spaces, raws, replaced, lacking, refit = {}, {}, {}, {}, {}, []
    for model in sweep.models:
        base = compose_config([*plain, f"model={model}"])
        base.model = typed_node(base.model)  # every setting of the model's class, typed
        settings = to_settings(base.model)
        cls = model_class(settings._target_)
        refit += [model] if cls.refit else []
        default, section = cls.search_space(settings), dict(sweep.space.get(model, {}))
        if cls.sweep_epochs != 1.0 and "train.epochs" not in default:
            default["train.epochs"] = str(max(1, round(base.train.epochs * cls.sweep_epochs)))
        own = {*default, *section}  # the keys this model's own space and section name
        raw = {**default, **dict(sweep.space.get("common", {})), **section}
        for key in [k for k in given if k in raw]:  # the command line wins over the space
            replaced.setdefault(key, []).append(f"{model} ({raw.pop(key)})")
        raw = merge_space_overrides(raw, [_as_plus(o, raw) for o in space_overrides])
        for key in [k for k in raw if k.startswith("model.") and k not in own]:
            # a model setting given to every model (sweep.space.common, the command line) that
            # this model does not have (autorec has no k): left out of this model's space only
            if OmegaConf.select(base, key, default="__missing__") == "__missing__":
                lacking.setdefault(key, []).append(model)
                raw.pop(key)
        where = f"sweep.space.{model}"
        space = parse_space(raw, where=where)
        for key in [*space.distributions, *space.fixed]:
            if OmegaConf.select(base, key, default="__missing__") == "__missing__":
                raise ConfigError(f"{where}: {key} is not a config key (see python -m mfexp.run "
                                  "--cfg job for the keys).")
        base = OmegaConf.merge(OmegaConf.structured(Config),
                               OmegaConf.masked_copy(base, ["data", "model", "train", "tracking"]))
        check_space_values(base, space, raw, where)
        bases[model], spaces[model], raws[model] = base, space, raw
    for key, models in lacking.items():
        if len(models) == len(sweep.models):
            raise ConfigError(f"sweep.space: {key} is not a config key of any model of the sweep "
                              f"({', '.join(sweep.models)}); see python -m mfexp.sweep --cfg job for the keys.")
        log.info("%s is not a setting of %s: that key is left out of %s search space.", key,
                 ", ".join(models), "its" if len(models) == 1 else "their")
    for key, where in replaced.items():
        log.info("%s=%s from the command line replaces the search space's %s in %s: every sampled trial uses %s.",
                 key, given[key], key, ", ".join(where), given[key])

    # recorded in the parent run's tag and description and in report.md: never with a password
    command = redact("python -m mfexp.sweep " + " ".join(shlex.quote(a) for a in args)).strip()
    if sweep.refit == "auto":  # the models whose class says refit (Recommender.refit), by name from here on
        sweep = replace(sweep, refit=refit)
    plan = SweepPlan(sweep=sweep, bases=bases, spaces=spaces, tracking=app.tracking, command=command)
    return plan, root, raws


def command_line_values(plain: Sequence[str]) -> dict[str, str]:
    """{dotted key: value as written} of the plain overrides that set one config value."""
    parser = OverridesParser.create()
    out = {}
    for text in plain:
        override = parser.parse_overrides([text])[0]
        key = override.key_or_group
        if "." in key and not key.startswith(("sweep.", "hydra.")) and not override.is_delete():
            out[key] = text.split("=", 1)[1]
    return out


def check_space_values(base: DictConfig, space, raw: dict, where: str) -> None:
    """Every value a space can give (each choice, each end of a range) must fit the config's types
    and rules: a bad one fails here, naming the key, not in every trial until sweep.max_failures."""
    try:
        apply_params(base, {})
    except ConfigError as err:
        raise ConfigError(f"the base config of {where.rsplit('.', 1)[-1]}: {err}") from None
    for key, values in {**{k: [v] for k, v in space.fixed.items()}, **space.extremes()}.items():
        for value in values:
            try:
                apply_params(base, {key: value})
            except ConfigError as err:
                raise ConfigError(f"{where}.{key} = {raw[key]!r} can give {value!r}, which does not fit: "
                                  f"{_reason(err)}. Fix {key} in the sweep's space (conf/sweep/), or on "
                                  f"the command line ('{key}=...').") from None


def _reason(err: ConfigError) -> str:
    """The rule a value broke, without the message's own advice (which names the wrong place)."""
    text = str(err).split("does not fit the config: ", 1)[-1]
    return text.split(". Fix ", 1)[0].rstrip(".")


def _as_plus(override: str, space: dict) -> str:
    """A command-line space edit replaces the key when the space has it, else adds it."""
    key = override.split("=", 1)[0].lstrip("+~")
    return override if override.startswith(("+", "~")) or key in space else "+" + override
