"""Using the winner: the logged pyfunc model in a fresh process, the model registry's champion,
top-N recommendations, and `mlflow models serve` answering a real HTTP request."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import fresh_mlflow_store
from mlflow.tracking import MlflowClient

from mfexp.track.registry import CHAMPION, champion_uri, register_sweep_best, registered_name
from mfexp.sweep.results import ModelOutcome

VENV_BIN = Path(sys.executable).parent

# Runs in a fresh interpreter: nothing of mfexp is imported first, MLflow's own client loads the model.
LOAD_AND_SCORE = r"""
import json, sys
import numpy as np, pandas as pd
import mlflow

run_id, pairs = sys.argv[1], np.load(sys.argv[2])
model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
pred = np.asarray(model.predict(pd.DataFrame({"user_id": pairs["users"], "movie_id": pairs["items"]})), dtype=np.float64)
unknown = model.predict(pd.DataFrame({"user_id": [10**9, 1, 10**9], "movie_id": [1, 10**9, 10**9]}))
sig = model.metadata.signature
print(json.dumps({"rmse": float(np.sqrt(np.mean((pred - pairs["ratings"]) ** 2))), "predictions": pred.tolist(),
                  "unknown": [float(x) for x in np.asarray(unknown)],
                  "inputs": sig.inputs.input_names() if sig else None,
                  "has_outputs": bool(sig is not None and sig.outputs is not None)}))
"""


def _compose(overrides):
    from hydra import compose, initialize_config_dir

    from mfexp import cli

    cli.register_schema()
    with initialize_config_dir(config_dir=cli.CONF_DIR, version_base="1.3"):
        return cli.to_object(compose(config_name="config", overrides=overrides))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One MLflow store (and working directory, for its ./mlruns artifacts) for the module's run."""
    folder = tmp_path_factory.mktemp("serving")
    uri = fresh_mlflow_store(folder / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(folder)
        mlflow.set_tracking_uri(uri)
        yield {"uri": uri, "folder": folder}
        while mlflow.active_run():
            mlflow.end_run()


@pytest.fixture(scope="module")
def trained(store):
    """A tiny tracked run through mfexp.experiment.run: the biased model with Adam at a high learning
    rate, whose network predicts outside 1..5 for some test pairs, so serving must clip them."""
    from conftest import synthetic_dataset

    from mfexp.experiment import run

    data = synthetic_dataset()
    cfg = _compose(["model=biased", "train.optimizer=adam", "train.lr=0.05", "train.epochs=2",
                    "train.progress=false", "train.batch_size=256"])
    summary = run(cfg, data=data)
    return {"run_id": summary["run_id"], "data": data}


@pytest.fixture
def in_store(store, monkeypatch):
    """Point MLflow back at the module's store (another test's fixture may have moved it)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    mlflow.set_tracking_uri(store["uri"])
    return store


def test_logged_model_loads_in_a_fresh_process_and_scores_the_logged_test_rmse(in_store, trained, tmp_path):
    data, run_id = trained["data"], trained["run_id"]
    pairs = tmp_path / "test_pairs.npz"
    np.savez(pairs, users=data.user_ids[data.test.users], items=data.item_ids[data.test.items],
             ratings=data.test.ratings.astype(np.float64))
    out = subprocess.run([sys.executable, "-c", LOAD_AND_SCORE, run_id, str(pairs)], capture_output=True,
                         text=True, cwd=in_store["folder"], timeout=180,
                         env={**os.environ, "MLFLOW_TRACKING_URI": in_store["uri"]})
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    logged = mlflow.get_run(run_id).data.metrics["final_test_rmse"]
    assert got["rmse"] == pytest.approx(logged, abs=1e-5)
    # served: the network's own outputs clipped to 1..5 (some lie outside, so the clipping shows)
    raw = _network_outputs(run_id, data.test.users, data.test.items, tmp_path)
    assert (raw > 5).any() and (raw < 1).any(), (raw.min(), raw.max())
    assert got["predictions"] == pytest.approx(np.clip(raw, 1.0, 5.0), abs=1e-5)
    # an unknown id gets the best guess the training part allows, not an error: the known item's mean
    # rating, the known user's mean rating, else the global mean (computed here from the data itself)
    train = data.train
    item_1_mean = float(train.ratings[train.items == 0].mean())
    user_1_mean = float(train.ratings[train.users == 0].mean())
    assert got["unknown"] == pytest.approx([item_1_mean, user_1_mean, float(train.ratings.mean())], abs=1e-5)
    assert len({round(x, 3) for x in got["unknown"]}) == 3  # three different guesses: the test can tell them apart
    assert got["inputs"] == ["user_id", "movie_id", "timestamp"] and got["has_outputs"]  # timestamp: optional
    # The trap: nothing of the MXNet network is pickled into the model (models from code).
    local = Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model", dst_path=str(tmp_path)))
    assert not [p for p in local.rglob("*") if p.suffix in (".pkl", ".pickle", ".cloudpickle")]
    assert (local / "artifacts" / "mfexp_model" / "params.params").exists()


def test_champion_is_chosen_on_validation_rmse_never_on_test(in_store, trained, capfd, caplog):
    rid = trained["run_id"]
    outcomes = [ModelOutcome("plain", "pick-plain", best_val_rmse=1.0, test_rmse=0.5, best_run_id=rid),
                ModelOutcome("biased", "pick-biased", best_val_rmse=0.9, test_rmse=2.0, best_run_id=rid),
                ModelOutcome("mlp", "pick-mlp")]  # no complete trial: nothing to register
    assert register_sweep_best("pick", outcomes) == {"plain": 1, "biased": 1, CHAMPION: 1}
    # MLflow's own notes on registering (its logger mlflow.tracking._model_registry.fluent, filtered by
    # name: the one private name mfexp/track/registry.py relies on) give way to mfexp's one summary line
    printed = capfd.readouterr()
    assert "registry: " in printed.out and "based on models:/" not in printed.out + printed.err, printed
    assert not [r for r in caplog.records if "based on models:/" in r.getMessage()]
    client = MlflowClient()
    aliases = lambda m: client.get_registered_model(registered_name("pick", m)).aliases  # noqa: E731
    assert CHAMPION in aliases("biased") and CHAMPION not in aliases("plain")
    champ = client.get_model_version_by_alias(registered_name("pick", CHAMPION), CHAMPION)
    assert champ.tags["mfexp.model"] == "biased" and champ.run_id == rid
    # a resumed sweep that elects another model moves the alias; the same best runs are not
    # registered again (one version per best run), the new champion is
    outcomes[0].best_val_rmse = 0.8
    assert register_sweep_best("pick", outcomes) == {"plain": 1, "biased": 1, CHAMPION: 2}
    assert CHAMPION in aliases("plain") and CHAMPION not in aliases("biased")
    assert client.get_model_version_by_alias(registered_name("pick", CHAMPION), CHAMPION).tags["mfexp.model"] == "plain"


@pytest.mark.parametrize("name", ["plain", "biased", "mlp", "dropout", "svdpp", "fm", "autorec"])
def test_recommend_scores_every_item_exactly_as_the_network_does(name, tiny_data, tmp_path):
    import mxnet as mx

    from mfexp.models import io as model_io
    from mfexp.models import build_for_data
    from mfexp.models.plugins import named
    from mfexp.scoring import score_all, towers

    values = {"hidden": 6} if name in ("mlp", "dropout", "autorec") else {}
    cfg = named(name, **({} if name == "autorec" else {"k": 8}), **values)
    net = build_for_data(cfg, tiny_data)
    net.initialize(mx.init.Uniform(0.5))
    net.hybridize(static_alloc=True)
    n_users, n_items = tiny_data.n_users, tiny_data.n_items
    ids = np.arange(1, n_items + 1, dtype=np.int64)
    trained = model_io.TrainedModel(net=net, model=cfg, user_ids=np.arange(1, n_users + 1, dtype=np.int64),
                                    item_ids=ids, user_mean=np.full(n_users, 3.0, np.float32),
                                    item_mean=np.full(n_items, 3.0, np.float32),
                                    global_mean=3.0, rating_min=-10.0, rating_max=10.0, dataset="x")
    assert (towers(trained) is None) == (name == "autorec")  # autorec: the generic path, through the network
    reloaded = model_io.load(model_io.save(trained, tmp_path / "saved"))  # what it reads (ModelData) goes with it
    for user in (0, n_users - 1):
        want = model_io.predict_ids(trained, np.full(n_items, user + 1), ids)
        assert score_all(trained, user) == pytest.approx(want, abs=1e-4)
        assert score_all(reloaded, user) == pytest.approx(want, abs=1e-4)
        assert np.ptp(want) > 0.01  # a network that says something


# --- a tiny sweep -> registry -> recommend ------------------------------------------------------
def test_sweep_registers_its_best_and_recommend_skips_rated_items(in_smoke_store, capsys):
    from mfexp.models import io as model_io
    from mfexp.config import DataConfig
    from mfexp.data import load_dataset
    from mfexp.recommend import main
    from mfexp.scoring import recommend
    from mfexp.track.runs import load_run, resolve_run

    (outcome,) = in_smoke_store.outcomes  # the session's smoke sweep of biased (conftest.py)
    client = MlflowClient()
    assert CHAMPION in client.get_registered_model("mfexp-smoke-biased").aliases
    assert client.get_model_version_by_alias("mfexp-smoke-champion", CHAMPION).run_id == outcome.best_run_id
    assert resolve_run("smoke") == resolve_run("smoke", "biased") == outcome.best_run_id

    # the user with the most training ratings; "rated" = the whole training part (the best run's
    # train + validation holdout), from the data, independently of mfexp.recommend
    train = load_dataset(DataConfig(name="file", path=str(in_smoke_store.ratings), val_fraction=0.0))
    u = int(np.bincount(train.train.users).argmax())
    user = int(train.user_ids[u])
    rated = set(train.item_ids[train.train.items[train.train.users == u]].tolist())
    assert len(rated) > 10

    loaded = load_run(outcome.best_run_id)
    recs = recommend(loaded, user, n=8)
    items = [r.item_id for r in recs]
    scores = np.array([r.score for r in recs])
    assert len(recs) == 8 and len(set(items)) == 8 and [r.rank for r in recs] == list(range(1, 9))
    assert not rated & set(items)
    assert np.all(np.diff(scores) <= 0)  # best first
    assert scores == pytest.approx(model_io.predict_ids(loaded.trained, np.full(8, user), np.array(items)), abs=1e-5)
    everything = recommend(loaded, user, n=10_000)  # every unrated item, none rated
    assert len(everything) == train.n_items - len(rated) and not rated & {r.item_id for r in everything}
    assert everything[0].score >= max(r.score for r in everything)
    # scores are ratings on the data's scale: an item the network puts above 5 (or below 1) shows as 5 (1)
    pushed = load_run(outcome.best_run_id)
    high, low = items[-1], everything[-1].item_id
    bias = pushed.trained.net.item_bias.weight.data()
    for item, by in ((high, 10.0), (low, -10.0)):
        index = int(np.searchsorted(pushed.trained.item_ids, item))
        bias[index] = bias[index] + by
    shown = {r.item_id: r.score for r in recommend(pushed, user, n=10_000)}
    assert (shown[high], shown[low]) == (5.0, 1.0) and all(1.0 <= v <= 5.0 for v in shown.values())
    assert model_io.predict_ids(pushed.trained, np.full(2, user), np.array([high, low])).tolist() == [5.0, 1.0]

    capsys.readouterr()
    assert main(["sweep.name=smoke", f"user={user}", "n=5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"top 5 for user {user} (biased, sweep smoke")
    assert [int(line.split()[1]) for line in lines[1:]] == items[:5]
    assert main(["sweep.name=smoke", f"similar={items[0]}", "n=3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and str(items[0]) not in [line.split()[1] for line in lines[1:]]

    for argv, message in ((["sweep.name=nope", "user=1"], "no sweep named 'nope'"),
                          (["sweep.name=smoke", "user=999999"], "user 999999 is not in"),
                          (["sweep.name=smoke", "model=mlp", "user=1"], "no finished best run for model mlp"),
                          (["sweep.name=smoke", "users=1"], "users is not a config key (did you mean user?)")):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2 and message in capsys.readouterr().err, argv


# --- serving -------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(url: str, body: dict | None = None, timeout: float = 10.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.read().decode()


def _network_outputs(run_id, users, items, tmp_path):
    """The logged network's own outputs for user and item indices, unclipped, computed from its
    parameters in this process (not through the pyfunc model that serving uses)."""
    import mxnet as mx

    from mfexp.models import io as model_io
    from mfexp.train import predict

    folder = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model/artifacts/mfexp_model",
                                                 dst_path=str(tmp_path / "net"))
    return predict(model_io.load(folder).net, np.asarray(users), np.asarray(items), mx.cpu())


@pytest.mark.slow
def test_served_champion_answers_a_real_http_request(in_store, trained, tmp_path):
    rid = trained["run_id"]
    register_sweep_best("serve", [ModelOutcome("biased", "serve-biased", best_val_rmse=1.0, best_run_id=rid)])
    port = _free_port()
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_TRACKING_URI": in_store["uri"]}
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen([str(VENV_BIN / "mlflow"), "models", "serve", "-m", champion_uri("serve"),
                                   "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
                                  stdout=log, stderr=subprocess.STDOUT, env=env, cwd=in_store["folder"],
                                  start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"mlflow models serve exited: {log_path.read_text()[-3000:]}"
            try:
                if _http(f"{base}/ping", timeout=2)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, f"no /ping answer in 120 s: {log_path.read_text()[-3000:]}"
            time.sleep(1)
        # the pairs the network puts highest and lowest (above 5 and below 1), one inside, an unknown user
        data = trained["data"]
        grid_u, grid_i = np.divmod(np.arange(data.n_users * data.n_items), data.n_items)
        grid = _network_outputs(rid, grid_u, grid_i, tmp_path)
        extremes = [int(np.argmax(grid)), int(np.argmin(grid)), int(np.argmin(np.abs(grid - 3.0)))]
        assert grid[extremes[0]] > 5 and grid[extremes[1]] < 1, (grid.min(), grid.max())
        pairs = [[int(data.user_ids[grid_u[k]]), int(data.item_ids[grid_i[k]])] for k in extremes] + [[99999, 2]]
        status, body = _http(f"{base}/invocations",
                             {"dataframe_split": {"columns": ["user_id", "movie_id"], "data": pairs}})
        assert status == 200
        predictions = json.loads(body)["predictions"]
        # what the network itself predicts for the known pairs, clipped, and item 2's mean for the unknown user
        expected = [*np.clip(grid[extremes], 1.0, 5.0).tolist(),
                    float(data.train.ratings[data.train.items == 1].mean())]
        assert predictions == pytest.approx(expected, abs=1e-5)
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
