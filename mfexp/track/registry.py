"""A sweep's winners in the MLflow model registry.

After a sweep, each model's best run (the one tagged mfexp.best=true) is registered as

    mfexp-<sweep>-<model>        e.g. mfexp-default-biased, one version per best run

and the overall best BY VALIDATION RMSE (ModelOutcome.best_val_rmse, the search objective; the
test part never chooses) gets the alias `champion` there. An MLflow alias belongs to one
registered model, so "the champion of sweep X" would otherwise have to be searched for across
the per-model names. The champion is therefore also registered under a stable name,

    mfexp-<sweep>-champion       its alias `champion` points at the current winner's version

which gives one fixed URI for serving and for `python -m mfexp.recommend`:

    models:/mfexp-<sweep>-champion@champion       (make serve SWEEP=<sweep>)

When a later (resumed) sweep elects another model, `champion` moves: it is set on the new
winner's per-model name and removed from the other per-model names of that sweep.

Each version carries tags mfexp.sweep, mfexp.model, val_rmse, test_rmse (test RMSE is for
reading only). A registry error is reported as a warning: the sweep's runs, report and
summary are already recorded and are not lost over it.
"""
from __future__ import annotations

import contextlib
import io
import logging
from typing import TYPE_CHECKING, Optional

import mlflow

from mlflow.exceptions import MlflowException

from mlflow.tracking import MlflowClient

from mfexp.track.tracker import MODEL_TAG, SWEEP_TAG

if TYPE_CHECKING:  # annotations only: the sweep's outcomes are what the registry is given, it needs none
    from mfexp.sweep.results import ModelOutcome

log = logging.getLogger("mfexp.track.registry")

CHAMPION = "champion"


def registered_name(sweep_name: str, model: str) -> str:
    """mfexp-<sweep>-<model>; model 'champion' gives the sweep's champion name."""
    return f"mfexp-{sweep_name}-{model}"


def champion_uri(sweep_name: str) -> str:
    return f"models:/{registered_name(sweep_name, CHAMPION)}@{CHAMPION}"


def choose_champion(outcomes: list[ModelOutcome]) -> Optional[ModelOutcome]:
    """The outcome with the lowest validation RMSE among those with a best run; never on test."""
    ranked = [o for o in outcomes if o.best_run_id and o.best_val_rmse is not None]
    return min(ranked, key=lambda o: o.best_val_rmse) if ranked else None


def register_sweep_best(sweep_name: str, outcomes: list[ModelOutcome]) -> dict[str, int]:
    """Register each outcome's best run model; alias the validation winner `champion`.

    Returns {model: version} for every model registered, plus {"champion": version} of
    mfexp-<sweep>-champion when a champion was elected. Outcomes without a best run (no
    complete trial, or tracking disabled) are skipped.
    """
    client = MlflowClient()
    versions: dict[str, int] = {}
    for out in outcomes:
        if not out.best_run_id:
            continue
        try:
            versions[out.model] = _register(mlflow, client, sweep_name, out, out.model)
        except MlflowException as err:
            log.warning("could not register the best %s run %s of sweep %s in the MLflow model registry: %s",
                        out.model, out.best_run_id, sweep_name, str(err).splitlines()[0])
    if any(o.n_complete and not o.best_run_id for o in outcomes):
        log.info("a model's best has no evaluated run here yet (still searched by another worker command?): "
                 "the champion is elected by the command that evaluates last")
        return versions
    top = choose_champion([o for o in outcomes if o.model in versions])
    if top is None:
        return versions
    try:
        versions[CHAMPION] = _register(mlflow, client, sweep_name, top, CHAMPION)
        client.set_registered_model_alias(registered_name(sweep_name, CHAMPION), CHAMPION, str(versions[CHAMPION]))
        client.set_registered_model_alias(registered_name(sweep_name, top.model), CHAMPION, str(versions[top.model]))
        for other in {o.model for o in outcomes}:
            if other != top.model:
                _drop_alias(client, registered_name(sweep_name, other))
    except MlflowException as err:
        log.warning("could not set the champion alias of sweep %s in the MLflow model registry: %s",
                    sweep_name, str(err).splitlines()[0])
        return versions
    print(f"registry: {', '.join(f'{registered_name(sweep_name, m)} v{v}' for m, v in versions.items())}; "
          f"champion {top.model} (val_rmse {top.best_val_rmse:.4f}): {champion_uri(sweep_name)}", flush=True)
    return versions


def _register(mlflow, client, sweep_name: str, out: ModelOutcome, as_model: str) -> int:
    """The version of `name` holding this model's best run: the existing one, or a new one. One
    version per best run, however many worker commands of the sweep register it."""
    name = registered_name(sweep_name, as_model)
    existing = [v for v in client.search_model_versions(f"name = '{name}' and run_id = '{out.best_run_id}'")
                if v.tags.get(MODEL_TAG) == out.model]
    if existing:
        return min(int(v.version) for v in existing)
    tags = {SWEEP_TAG: sweep_name, MODEL_TAG: out.model, "val_rmse": f"{out.best_val_rmse}",
            "test_rmse": f"{out.test_rmse}"}
    registry_log = logging.getLogger("mlflow.tracking._model_registry.fluent")
    registry_log.addFilter(_quiet_logged_model_note)
    try:  # MLflow prints "Successfully registered..." to stderr; one summary line says it instead
        with contextlib.redirect_stderr(io.StringIO()):
            version = mlflow.register_model(f"runs:/{out.best_run_id}/model", name, tags=tags)
    finally:
        registry_log.removeFilter(_quiet_logged_model_note)
    if as_model == CHAMPION:
        client.update_registered_model(name, description=f"The champion (lowest validation RMSE) of sweep "
                                                          f"{sweep_name}: alias @{CHAMPION}.")
    else:
        client.update_registered_model(name, description=f"The best {out.model} of sweep {sweep_name}, "
                                                          "at its best epoch (selected on the validation holdout).")
    return int(version.version)


def _quiet_logged_model_note(record: logging.LogRecord) -> bool:
    """MLflow 3 keeps a run's model as a LoggedModel and says so when a runs:/ URI names it: not news."""
    return "registering model based on models:/" not in record.getMessage()


def _drop_alias(client, name: str) -> None:
    try:
        if CHAMPION in client.get_registered_model(name).aliases:
            client.delete_registered_model_alias(name, CHAMPION)
    except MlflowException:
        pass  # no such registered model: nothing to drop
