"""Models are plugins: a model defined outside the mfexp package (tests/plugins/cosine.py), named
only in a YAML found through hydra.searchpath, trains, sweeps, is logged, loads as a pyfunc model
and recommends, with no edit to mfexp."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

CONF = Path(__file__).parent / "conf"
SEARCHPATH = f"hydra.searchpath=[file://{CONF}]"


def test_plugin_model_composes_into_its_own_typed_settings(ratings_file):
    from mfexp.sweep.plan import compose_config
    from mfexp import cli
    from tests.plugins.cosine import ScaledDotSettings

    cfg = cli.to_object(compose_config([SEARCHPATH, "model=scaled_dot", "model.scale=1.5"]))
    assert type(cfg.model) is ScaledDotSettings and cfg.model.scale == 1.5


@pytest.mark.slow
def test_plugin_model_trains_sweeps_logs_serves_and_recommends(ratings_file, tmp_path, mlflow_uri):
    from mfexp.scoring import recommend
    from mfexp.track.runs import load_run
    from mfexp.sweep.plan import build_plan
    from mfexp.sweep.orchestrate import run_sweep

    # cwd tmp_path, as the store's: MLflow puts artifacts under ./mlruns of the cwd (the checkout
    # is on PYTHONPATH, conftest.py, so tests.plugins imports from anywhere)
    out = subprocess.run([sys.executable, "-m", "mfexp.run", SEARCHPATH, "model=scaled_dot", "data=file",
                          f"data.path={ratings_file}", "train.epochs=2", "train.progress=false"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "done: model=scaled_dot" in out.stdout

    plan = build_plan([SEARCHPATH, "data=file", f"data.path={ratings_file}", "sweep=smoke",
                       f"sweep.root={tmp_path / 'sweeps'}", "sweep.models=[scaled_dot]", "sweep.n_trials=2",
                       "train.epochs=3"])
    assert "model.scale" in plan.spaces["scaled_dot"].distributions  # the plugin's own space
    (outcome,) = run_sweep(plan)
    assert outcome.n_complete + outcome.n_pruned == 2 and outcome.best_run_id
    run = mlflow.get_run(outcome.best_run_id)
    assert run.data.params["model._target_"] == "tests.plugins.cosine.ScaledDot"

    model = mlflow.pyfunc.load_model(f"runs:/{outcome.best_run_id}/model")
    loaded = load_run(outcome.best_run_id)
    df = pd.DataFrame({"user_id": [1, 2, 3], "movie_id": [5, 6, 7]})
    tw = loaded.trained.net.towers()
    want = [tw.users[u - 1] @ tw.items[i - 1] + tw.user_bias[u - 1] for u, i in zip(df.user_id, df.movie_id)]
    assert np.asarray(model.predict(df)) == pytest.approx(np.clip(want, 1, 5), abs=1e-5)
    recs = recommend(loaded, 1, n=4)
    assert len(recs) == 4 and all(np.isfinite(r.score) for r in recs)
