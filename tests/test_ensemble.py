"""sweep.ensemble: blend weights from the validation holdout only, one test evaluation, a logged
model that loads, serves and recommends like any other."""
from __future__ import annotations

import mlflow
import mxnet as mx
import numpy as np
import pandas as pd
import pytest

from mfexp.models.ensemble import Ensemble, cross_validated_rmse, fit_weights


def test_fit_weights_recovers_a_known_blend_and_drops_negative_members():
    rng = np.random.default_rng(0)
    p = rng.normal(3.5, 1.0, (2000, 3))
    y = 0.2 + 0.7 * p[:, 0] + 0.3 * p[:, 1]  # the third model is useless
    w, b = fit_weights(p, y)
    assert w == pytest.approx([0.7, 0.3, 0.0], abs=1e-6) and b == pytest.approx(0.2, abs=1e-6)
    anti = np.column_stack([p[:, 0], -p[:, 1]])  # a member that only helps with a negative weight
    w, _ = fit_weights(anti, p[:, 0] + 0.5 * p[:, 1])
    assert w[1] == 0.0 and w[0] > 0


def test_cross_validated_rmse_is_honest_about_noise():
    rng = np.random.default_rng(1)
    y = rng.normal(3.5, 1.0, 500)
    noise = rng.normal(0, 1, (500, 20))  # 20 members of pure noise: an in-sample fit flatters them
    w, b = fit_weights(noise, y)
    fitted = np.sqrt(np.mean((b + noise @ w - y) ** 2))
    assert cross_validated_rmse(noise, y, (-10, 10)) > fitted


def _trained(name, data, seed):
    from mfexp.config import TrainConfig
    from mfexp.models import build_for_data
    from mfexp.models.plugins import named
    from mfexp.train import fit

    mx.random.seed(seed)
    net = build_for_data(named(name, k=4), data)
    net.initialize(mx.init.Uniform(0.1))
    net.hybridize(static_alloc=True)
    fit(net, data, TrainConfig(optimizer="adam", lr=0.01, wd=0.0, batch_size=128, epochs=2, progress=False),
        mx.cpu())
    return net


def test_ensemble_predicts_the_weighted_sum_and_its_towers_agree(tiny_data):
    from mfexp.models import ModelData
    from mfexp.models.base import NEEDS
    from mfexp.train import predict

    nets = [_trained("biased", tiny_data, 0), _trained("fm", tiny_data, 1)]
    ens = Ensemble.assemble(nets, [0.25, 0.75], 0.1, ModelData.from_dataset(tiny_data, NEEDS))
    part = tiny_data.test
    want = 0.1 + sum(w * predict(n, part.users, part.items, mx.cpu(), part.timestamps)
                     for w, n in zip([0.25, 0.75], nets))
    assert predict(ens, part.users, part.items, mx.cpu(), part.timestamps) == pytest.approx(want, abs=1e-5)
    tw = ens.towers()
    u = 3
    scores = tw.items @ tw.users[u] + tw.item_bias + tw.user_bias[u]
    items = np.arange(tiny_data.n_items)
    assert scores == pytest.approx(predict(ens, np.full(len(items), u), items, mx.cpu()), abs=1e-4)


@pytest.mark.slow
def test_sweep_ensemble_is_logged_registered_served_and_recommends(ratings_file, tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    from mfexp.scoring import recommend
    from mfexp.track.runs import load_run, resolve_run
    from mfexp.sweep.plan import build_plan
    from mfexp.sweep.orchestrate import run_sweep

    plan = build_plan(["data=file", f"data.path={ratings_file}", "sweep=smoke", f"sweep.root={tmp_path / 'sweeps'}",
                       "sweep.models=[plain,biased]", "train.epochs=3", "train.batch_size=256"])
    outcomes = run_sweep(plan)
    assert [o.model for o in outcomes] == ["plain", "biased", "ensemble"]
    blend = outcomes[-1]
    assert set(blend.best_params) == {"plain", "biased"} and blend.test_rmse is not None
    run = mlflow.get_run(blend.best_run_id)
    assert run.data.tags["mfexp.best"] == "true" and run.data.tags["mfexp.model"] == "ensemble"
    assert run.data.metrics["best_val_rmse_search"] == pytest.approx(blend.best_val_rmse)
    assert MlflowClient().get_latest_versions("mfexp-smoke-ensemble")[0].run_id == blend.best_run_id
    # the logged model serves the blend of its members' own network outputs, clipped to 1..5
    model = mlflow.pyfunc.load_model(f"runs:/{blend.best_run_id}/model")
    df = pd.DataFrame({"user_id": [1, 2, 3], "movie_id": [1, 2, 3]})
    members = [_network_outputs(o.best_run_id, df) for o in outcomes[:2]]
    served = np.asarray(model.predict(df))
    loaded = load_run(resolve_run("smoke", "ensemble"))
    assert loaded.trained.model.name == "ensemble" and len(recommend(loaded, 1, n=5)) == 5
    settings = loaded.trained.net.settings  # the weights it holds; best_params shows them rounded
    assert settings.weights == pytest.approx([blend.best_params["plain"], blend.best_params["biased"]], abs=1e-4)
    blended = settings.bias + sum(wi * m for wi, m in zip(settings.weights, members))
    assert served == pytest.approx(np.clip(blended, 1.0, 5.0), abs=1e-5)


def _network_outputs(run_id, pairs):
    """A best run's network outputs for (user_id, movie_id) pairs, from its logged parameters,
    unclipped (the served model clips them)."""
    from mfexp.sweep.ensemble import _member
    from mfexp.train import predict

    trained = _member(run_id)
    users = np.searchsorted(trained.user_ids, pairs["user_id"].to_numpy())
    items = np.searchsorted(trained.item_ids, pairs["movie_id"].to_numpy())
    return predict(trained.net, users, items, mx.cpu())


@pytest.mark.slow
def test_served_fm_takes_an_optional_timestamp(ratings_file, tmp_path, mlflow_uri):
    from mfexp import cli
    from mfexp.data import load_dataset
    from mfexp.experiment import run
    from mfexp.sweep.plan import compose_config

    cfg = cli.to_object(compose_config(["data=file", f"data.path={ratings_file}", "model=fm", "train=adam",
                                        "train.epochs=2", "train.progress=false"]))
    summary = run(cfg)
    model = mlflow.pyfunc.load_model(f"runs:/{summary['run_id']}/model")
    plain = pd.DataFrame({"user_id": [1, 1], "movie_id": [2, 3]})
    early = model.predict(plain.assign(timestamp=[880_000_000, 880_000_000]))  # day 0 of the file
    late = model.predict(plain.assign(timestamp=[890_000_000, 890_000_000]))
    assert not np.allclose(early, late)  # the day reaches the model
    # no timestamp: the user's last training day, read here from the training part itself
    data = load_dataset(cfg.data)
    user = int(np.searchsorted(data.user_ids, 1))
    last = int(data.train.timestamps[data.train.users == user].max())
    assert last // 86_400 > data.train.timestamps.min() // 86_400  # not day 0: the default can be told apart
    default = model.predict(plain)
    assert default == pytest.approx(model.predict(plain.assign(timestamp=[last, last])), abs=1e-6)
    assert not np.allclose(default, early)


@pytest.mark.slow
def test_refit_trains_the_choice_on_train_plus_holdout_and_blends_on_the_holdout_predictions_of_the_choice(
        ratings_file, tmp_path, mlflow_uri, monkeypatch):
    """sweep.refit=[biased]: biased's best run holds a network trained on train + holdout (its
    params say val_fraction 0) and logs the chosen network's holdout predictions, which are what
    the blend's weights are fit on; plain is not refit and is evaluated as before. Those predictions
    are the ones the best trial kept during the search: the choice is not trained a second time."""
    from mfexp.data import load_dataset
    from mfexp.metrics import rmse
    from mfexp.models.ensemble import fit_weights
    from mfexp.sweep import best as best_module
    from mfexp.sweep.plan import build_plan
    from mfexp.sweep.orchestrate import run_sweep

    def no_replay(*args, **kwargs):
        raise AssertionError("the chosen configuration was trained again for its holdout predictions")
    monkeypatch.setattr(best_module, "replayed_val_predictions", no_replay)

    plan = build_plan(["data=file", f"data.path={ratings_file}", "sweep=smoke", f"sweep.root={tmp_path / 'sweeps'}",
                       "sweep.models=[plain,biased]", "sweep.refit=[biased]", "train.epochs=3",
                       "train.batch_size=256"])
    outcomes = run_sweep(plan)
    plain, biased, blend = outcomes
    runs = {o.model: mlflow.get_run(o.best_run_id) for o in outcomes}
    assert runs["biased"].data.tags["mfexp.refit"] == "true" and runs["plain"].data.tags["mfexp.refit"] == "false"
    assert runs["biased"].data.params["data.val_fraction"] == "0.0"
    assert runs["plain"].data.params["data.val_fraction"] == "0.1"
    assert "-refit" in runs["biased"].info.run_name
    data = load_dataset(plan.bases["biased"].data)
    path = mlflow.artifacts.download_artifacts(f"runs:/{biased.best_run_id}/val_predictions.npy",
                                               dst_path=str(tmp_path / "dl"))
    logged = np.load(path)
    assert logged.shape == (len(data.val),)
    number = runs["biased"].data.tags["optuna.trial_number"]
    np.testing.assert_array_equal(logged, np.load(tmp_path / "sweeps" / "smoke" / "val_predictions" / f"biased-{number}.npy"))
    # the logged predictions are of the chosen network: their RMSE is the best trial's val RMSE
    assert rmse(data.val.ratings, np.clip(logged, data.rating_min, data.rating_max)) == \
        pytest.approx(biased.best_val_rmse, abs=1e-4)
    # the refit network itself has seen the holdout: its holdout error is lower than the choice's
    refit = mlflow.pyfunc.load_model(f"runs:/{biased.best_run_id}/model")
    pairs = pd.DataFrame({"user_id": data.user_ids[data.val.users].astype(np.int64),
                          "movie_id": data.item_ids[data.val.items].astype(np.int64)})
    assert rmse(data.val.ratings, np.asarray(refit.predict(pairs))) < biased.best_val_rmse
    # the blend's weights are those the chosen networks' holdout predictions give (plain's own
    # network never saw the holdout; biased's refit one did, so its logged predictions stand in)
    from mfexp.sweep.ensemble import _member, _predictions

    plain_val = _predictions([_member(plain.best_run_id).net], data.val)[:, 0]
    weights, _ = fit_weights(np.column_stack([plain_val, logged]), data.val.ratings)
    assert [blend.best_params["plain"], blend.best_params["biased"]] == pytest.approx(weights, abs=1e-4)
    refit_val = _predictions([_member(biased.best_run_id).net], data.val)[:, 0]
    assert not np.allclose(refit_val, logged, atol=1e-3)  # a different network: the blend did not use it
    report = (tmp_path / "sweeps" / "smoke" / "report.md").read_text()
    assert "`biased` (sweep.refit): the chosen configuration was trained again" in report and "`plain`," not in report


@pytest.mark.slow
def test_kept_holdout_predictions_that_are_not_the_trial_s_are_not_used(ratings_file, tmp_path, mlflow_uri,
                                                                        monkeypatch):
    """Holdout predictions kept under the best trial's number that do not give its val RMSE (a file left
    by an earlier study of the same sweep name; here overwritten between sweep.phase=search and
    select) are not blended: the choice is trained again, and its predictions give the trial's RMSE."""
    from mfexp.data import load_dataset
    from mfexp.metrics import rmse
    from mfexp.sweep import best as best_module
    from mfexp.sweep.plan import build_plan
    from mfexp.sweep.orchestrate import run_sweep

    line = ["data=file", f"data.path={ratings_file}", "sweep=smoke", f"sweep.root={tmp_path / 'sweeps'}",
            "sweep.models=[plain,biased]", "sweep.refit=[biased]", "train.epochs=3", "train.batch_size=256"]
    run_sweep(build_plan([*line, "sweep.phase=search"]))
    kept = tmp_path / "sweeps" / "smoke" / "val_predictions"
    files = sorted(kept.glob("biased-*.npy"))
    assert files and sorted(kept.glob("plain-*.npy"))  # every complete trial's, both models
    for path in files:
        np.save(path, np.full(len(np.load(path)), 3.0, dtype=np.float32))
    calls = []
    real = best_module.replayed_val_predictions
    monkeypatch.setattr(best_module, "replayed_val_predictions", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    plan = build_plan([*line, "sweep.phase=select"])
    plain, biased, blend = run_sweep(plan)
    assert [c.model.name for c in calls] == ["biased"]
    data = load_dataset(plan.bases["biased"].data)
    logged = np.load(mlflow.artifacts.download_artifacts(f"runs:/{biased.best_run_id}/val_predictions.npy",
                                                         dst_path=str(tmp_path / "dl")))
    assert rmse(data.val.ratings, np.clip(logged, data.rating_min, data.rating_max)) == \
        pytest.approx(biased.best_val_rmse, abs=1e-4)


@pytest.mark.slow
def test_the_test_evaluation_loads_the_network_the_best_trial_kept(ratings_file, tmp_path, mlflow_uri, monkeypatch):
    """A model evaluated as it was searched (no refit, one seed) is not trained again after the search:
    its best trial's network, kept by the search, is loaded and evaluated once, and its test figures
    equal those of the replay it replaces, exactly. A kept file that does not give the trial's val RMSE
    (biased's here, altered between sweep.phase=search and select) is trained again instead. The kept
    networks are removed once the evaluation is recorded."""
    import mxnet as mx

    from mfexp.sweep import best as best_module
    from mfexp.sweep.orchestrate import run_sweep
    from mfexp.sweep.plan import build_plan

    def line(root):
        return ["data=file", f"data.path={ratings_file}", "sweep=smoke", f"sweep.root={root}",
                "sweep.models=[plain,biased]", "train.epochs=3", "train.batch_size=256"]

    run_sweep(build_plan([*line(tmp_path / "kept"), "sweep.phase=search"]))
    networks = tmp_path / "kept" / "smoke" / "networks"
    assert sorted(networks.glob("plain-*.params")) and sorted(networks.glob("biased-*.params"))
    for path in networks.glob("biased-*.params"):  # not the trials' networks any more
        mx.nd.save(str(path), {name: value + 0.5 for name, value in mx.nd.load(str(path)).items()})
    trained = []
    real = best_module.train_and_track
    monkeypatch.setattr(best_module, "train_and_track", lambda cfg, *a, **k: trained.append(cfg.model.name)
                        or real(cfg, *a, **k))
    kept = {o.model: o for o in run_sweep(build_plan([*line(tmp_path / "kept"), "sweep.phase=select"]))}
    assert trained == ["biased"]  # plain loaded its kept network; biased's file was refused
    assert not list(networks.glob("*.params"))

    monkeypatch.setattr(best_module, "kept_network", lambda *a, **k: None)  # the same sweep, every best replayed
    replayed = {o.model: o for o in run_sweep(build_plan(line(tmp_path / "replayed")))}
    for model in ("plain", "biased"):
        assert kept[model].test_rmse == replayed[model].test_rmse
        assert kept[model].ranking == replayed[model].ranking
    description = mlflow.get_run(kept["plain"].best_run_id).data.tags["mlflow.note.content"]
    assert "network was kept by the search at its best epoch" in description


@pytest.mark.slow
def test_average_seeds_logs_the_average_of_that_many_seeds_and_the_blend_flattens_it(ratings_file, tmp_path,
                                                                                    mlflow_uri):
    """sweep.average_seeds=2: each best run's model is an equal-weight average of two networks
    (train.seed and train.seed + 1), its test RMSE is the average's; the blend holds their nets."""
    from mfexp.data import load_dataset
    from mfexp.metrics import rmse
    from mfexp.models.ensemble import Ensemble
    from mfexp.sweep.plan import build_plan
    from mfexp.sweep.ensemble import _member, _predictions
    from mfexp.sweep.orchestrate import run_sweep

    plan = build_plan(["data=file", f"data.path={ratings_file}", "sweep=smoke", f"sweep.root={tmp_path / 'sweeps'}",
                       "sweep.models=[plain,biased]", "sweep.refit=[biased]", "sweep.average_seeds=2",
                       "train.epochs=3", "train.batch_size=256"])
    plain, biased, blend = run_sweep(plan)
    data = load_dataset(plan.bases["biased"].data)
    for out in (plain, biased):
        run = mlflow.get_run(out.best_run_id)
        assert run.data.tags["mfexp.average_seeds"] == "2"
        net = _member(out.best_run_id).net
        assert isinstance(net, Ensemble) and net.settings.name == out.model and net.settings.weights == [0.5, 0.5]
        one, two = (_predictions([m], data.test)[:, 0] for m in net.members())
        assert not np.allclose(one, two, atol=1e-4)  # two seeds, two networks
        assert out.test_rmse == pytest.approx(rmse(data.test.ratings, np.clip((one + two) / 2, 1, 5)), abs=1e-5)
    blended = _member(blend.best_run_id).net
    assert len(blended.members()) == 4  # plain's two networks and biased's two, not nested averages
    w = blend.best_params
    assert blended.settings.weights == pytest.approx([w["plain"] / 2] * 2 + [w["biased"] / 2] * 2, abs=1e-4)
    logged = np.load(mlflow.artifacts.download_artifacts(f"runs:/{biased.best_run_id}/val_predictions.npy",
                                                         dst_path=str(tmp_path / "dl")))
    assert logged.shape == (len(data.val),)
    report = (tmp_path / "sweeps" / "smoke" / "report.md").read_text()
    assert "`plain` (2), `biased` (2) (sweep.average_seeds)" in report


def test_an_evaluation_record_without_its_end_settings_reads_them_from_its_key(monkeypatch, tmp_path):
    """Records written before they carried refit / average_seeds are found under a key that names
    them (once.evaluation_suffix): a resumed sweep's report must not call a 3-seed average one seed."""
    from types import SimpleNamespace

    import optuna

    from mfexp.config import SweepConfig
    from mfexp.sweep import once
    from mfexp.sweep.results import ModelOutcome

    plan = SimpleNamespace(sweep=SweepConfig(models=["fm"], refit=True, average_seeds=3))
    study = optuna.create_study()
    study.set_user_attr(once._key(plan, "fm", 7), {"run_id": "r", "test_rmse": 0.88, "by": "elsewhere"})
    monkeypatch.setattr(once, "_replay_yaml", lambda *a: tmp_path / "best-fm.yaml")
    out = ModelOutcome("fm", "s", best_trial=7)
    assert once.settled(plan, "fm", study, out, tmp_path / "best-fm.yaml")
    assert (out.refit, out.average_seeds, out.test_rmse) == (True, 3, 0.88)
