"""`python -m mfexp.sweep [overrides]`: search each model's hyperparameters with Optuna, record
everything in MLflow, evaluate each model's best once on the test part, write a report.

    python -m mfexp.sweep                                   # the default sweep (make sweep)
    python -m mfexp.sweep sweep=smoke                       # another named sweep, conf/sweep/
    python -m mfexp.sweep sweep.n_trials=30 sweep.models=[biased]
    python -m mfexp.sweep 'model.k=choice(32,64)'           # narrow (or add) a key in every space
    python -m mfexp.sweep '+train.momentum=interval(0.5,0.99)'

Plain overrides compose the config as for mfexp.run; overrides whose value is a sweep
expression (choice, range, interval, tag) edit the search space instead.
"""
from __future__ import annotations

import logging
import shlex
import sys
import time
from typing import Sequence

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mfexp import cli
from mfexp.config import Config, SweepAppConfig, validate, validate_sweep
from mfexp.errors import ConfigError, friendly_errors
from mfexp.models import model_class, to_settings, typed_node

log = logging.getLogger("mfexp.sweep")


def split_overrides(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """(config overrides, search-space overrides): a value like choice(...) edits the space."""
    parser = OverridesParser.create()
    plain, space = [], []
    for arg in args:
        try:
            parsed = parser.parse_overrides([arg])[0]
        except HydraException as err:
            from mfexp.sweep.space import GRAMMAR_HINT

            raise ConfigError(f"cannot parse the override {arg!r}: {str(err).splitlines()[0]}. "
                              f"Write key=value; for the search space: {GRAMMAR_HINT} Quote the whole "
                              "override for the shell.") from err
        (space if parsed.is_sweep_override() else plain).append(arg)
    return plain, space


def compose_config(overrides: Sequence[str]) -> DictConfig:
    cli.register_schema("mfexp_sweep_schema", SweepAppConfig)
    cli.register_schema()
    try:
        with initialize_config_dir(config_dir=cli.CONF_DIR, version_base="1.3"):
            return compose(config_name="sweep", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"{err}".strip().splitlines()[0] + " (see python -m mfexp.sweep --help, and conf/)") from err


def build_plan(args: Sequence[str]):
    from mfexp.sweep.runner import SweepPlan, assign_devices
    from mfexp.sweep.space import merge_space_overrides, parse_space

    plain, space_overrides = split_overrides(args)
    root = compose_config(plain)
    app: SweepAppConfig = cli.to_object(root)
    sweep = validate_sweep(app.sweep)
    validate(app)
    assign_devices(sweep, app.train.device)  # auto: one worker per GPU MXNet sees
    if app.data.val_fraction <= 0:
        raise ConfigError("a sweep chooses on the validation holdout: data.val_fraction must be > 0 "
                          "(the test part is never used to choose).")
    unknown = [s for s in sweep.space if not str(s).isidentifier()]
    if unknown:
        raise ConfigError(f"sweep.space has sections {sorted(unknown)}: use 'common' or a model name.")
    bases, spaces = {}, {}
    for model in sweep.models:
        base = compose_config([*plain, f"model={model}"])
        base.model = typed_node(base.model)  # every setting of the model's class, typed
        settings = to_settings(base.model)
        raw = {**model_class(settings._target_).search_space(settings),
               **dict(sweep.space.get("common", {})), **dict(sweep.space.get(model, {}))}
        raw = merge_space_overrides(raw, [_as_plus(o, raw) for o in space_overrides])
        space = parse_space(raw, where=f"sweep.space.{model}")
        for key in [*space.distributions, *space.fixed]:
            if OmegaConf.select(base, key, default="__missing__") == "__missing__":
                raise ConfigError(f"sweep.space.{model}: {key} is not a config key (see python -m mfexp.run "
                                  "--cfg job for the keys).")
        base = OmegaConf.merge(OmegaConf.structured(Config),
                               OmegaConf.masked_copy(base, ["data", "model", "train", "tracking"]))
        bases[model], spaces[model] = base, space
    command = "python -m mfexp.sweep " + " ".join(shlex.quote(a) for a in args)
    return SweepPlan(sweep=sweep, bases=bases, spaces=spaces, tracking=app.tracking, command=command.strip())


def _as_plus(override: str, space: dict) -> str:
    """A command-line space edit replaces the key when the space has it, else adds it."""
    key = override.split("=", 1)[0].lstrip("+~")
    return override if override.startswith(("+", "~")) or key in space else "+" + override


@friendly_errors
def main(argv: Sequence[str] | None = None) -> int:
    from mfexp.sweep.orchestrate import run_sweep

    args = cli.args_or_help(argv, __doc__)
    if args is None:
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("mfexp.train").setLevel(logging.WARNING)  # one line per trial, not per epoch
    cli.quiet_libraries()
    plan = build_plan(args)
    started = time.time()
    try:
        run_sweep(plan)
    except KeyboardInterrupt:
        print(f"\nsweep {plan.sweep.name} interrupted after {time.time() - started:.0f}s: the running trials "
              "were marked FAIL (interrupted) and their MLflow runs KILLED. Run the same command again "
              "to resume.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
